#include "attention_grid.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <utility>

#include "attncheck/backend_handle.h"
#include "attncheck/compare.h"
#include "attncheck/reference.h"
#include "attncheck/tensor.h"

namespace attncheck::cuda::testing {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A host tensor stored in a backend's element type and layout.
struct Packed {
  std::vector<unsigned char> bytes;
  std::vector<std::int64_t> shape, strides;
  DLDataType dtype{};
};

int element_bytes(DLDataType t) { return t.bits / 8; }

void store(unsigned char* at, DLDataType t, double x) {
  if (t.code == kDLUInt) {
    *at = static_cast<unsigned char>(x != 0.0);
  } else if (t.code == kDLInt) {
    const auto v = static_cast<std::int64_t>(x);
    std::memcpy(at, &v, sizeof v);
  } else if (t.bits == 32) {
    const auto v = static_cast<float>(x);
    std::memcpy(at, &v, sizeof v);
  } else {
    const std::uint16_t v = t.code == kDLBfloat ? to_bf16_bits(x) : to_f16_bits(x);
    std::memcpy(at, &v, sizeof v);
  }
}

double load(const unsigned char* at, DLDataType t) {
  if (t.bits == 32) {
    float v;
    std::memcpy(&v, at, sizeof v);
    return v;
  }
  std::uint16_t v;
  std::memcpy(&v, at, sizeof v);
  return t.code == kDLBfloat ? from_bf16_bits(v) : from_f16_bits(v);
}

// [B, H, L, D] logical; sequence-major stores it as [B, L, H, D] (strides in elements).
std::vector<std::int64_t> layout_strides(const Shape4& s, bool sequence_major) {
  if (!sequence_major) {
    const Shape4 c = compact_strides(s);
    return {c[0], c[1], c[2], c[3]};
  }
  return {s[2] * s[1] * s[3], s[3], s[1] * s[3], 1};
}

Packed pack(const HostTensor& t, DLDataType dtype, bool sequence_major) {
  Packed p;
  p.dtype = dtype;
  p.shape = {t.shape[0], t.shape[1], t.shape[2], t.shape[3]};
  p.strides = layout_strides(t.shape, sequence_major);
  p.bytes.assign(static_cast<size_t>(element_count(t.shape) * element_bytes(dtype)), 0);
  for (std::int64_t a = 0; a < t.shape[0]; ++a)
    for (std::int64_t b = 0; b < t.shape[1]; ++b)
      for (std::int64_t c = 0; c < t.shape[2]; ++c)
        for (std::int64_t d = 0; d < t.shape[3]; ++d) {
          const std::int64_t at = a * p.strides[0] + b * p.strides[1] + c * p.strides[2] + d * p.strides[3];
          store(&p.bytes[static_cast<size_t>(at * element_bytes(dtype))], dtype, t(a, b, c, d));
        }
  return p;
}

using Buffer = std::unique_ptr<void, std::function<void(void*)>>;

Buffer upload(const TensorMemory& memory, const std::vector<unsigned char>& bytes) {
  Buffer buffer(memory.allocate(std::max<size_t>(bytes.size(), 1)), memory.release);
  memory.upload(buffer.get(), bytes.data(), bytes.size());
  return buffer;
}

DLTensor dl_tensor(void* data, DLDeviceType device, DLDataType dtype, std::vector<std::int64_t>& shape,
                   std::vector<std::int64_t>& strides) {
  DLTensor t{};
  t.data = data;
  t.device = {device, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = dtype;
  t.shape = shape.data();
  t.strides = strides.data();
  t.byte_offset = 0;
  return t;
}

HostTensor random_tensor(const Shape4& shape, DType dtype, double amplitude, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, amplitude);
  HostTensor t(shape);
  for (double& x : t.values) x = round_to(dtype, normal(rng));
  return t;
}

}  // namespace

TensorMemory host_memory() {
  TensorMemory m;
  m.device = kDLCPU;
  m.allocate = [](std::size_t bytes) { return std::malloc(bytes); };
  m.release = [](void* p) { std::free(p); };
  m.upload = [](void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); };
  m.download = [](void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); };
  return m;
}

std::vector<AttentionCase> attention_grid(const std::vector<DType>& dtypes) {
  std::vector<AttentionCase> base;
  const auto shape = &Problem::of_shape;
  auto add = [&](std::string name, Problem p, const std::function<void(AttentionCase&)>& tweak = {}) {
    AttentionCase c;
    c.name = std::move(name);
    c.problem = p;
    if (tweak) tweak(c);
    base.push_back(std::move(c));
  };
  auto causal = [](Problem p, Alignment a, std::int64_t offset = 0) {
    p.causal = true;
    p.alignment = a;
    p.diagonal_offset = offset;
    return p;
  };
  auto masked = [](Problem p, MaskKind kind, std::int64_t bm, std::int64_t hm, std::int64_t lqm, std::int64_t lkm) {
    p.mask = kind;
    p.mask_batch = bm;
    p.mask_heads = hm;
    p.mask_q_len = lqm;
    p.mask_k_len = lkm;
    return p;
  };
  auto windowed = [](Problem p, std::int64_t left, std::int64_t right, Alignment a = Alignment::TopLeft) {
    p.window_left = left;
    p.window_right = right;
    p.alignment = a;
    return p;
  };

  const Problem mha = shape(2, 4, 4, 17, 33, 16, 16);
  add("Mha", mha);
  add("Mqa", shape(2, 4, 1, 17, 33, 16, 16));
  add("GqaRatio3", shape(1, 6, 2, 17, 33, 16, 16));
  add("GqaRatio4", shape(2, 8, 2, 9, 20, 8, 8));
  add("CausalTopLeft", causal(mha, Alignment::TopLeft));
  add("CausalBottomRight", causal(mha, Alignment::BottomRight));
  add("CausalBottomRightEmptyRows", causal(shape(1, 2, 2, 33, 17, 16, 16), Alignment::BottomRight));
  add("CausalOffset", causal(shape(1, 2, 1, 9, 33, 16, 16), Alignment::Offset, 5));
  add("CausalOffsetWholeCache", causal(shape(1, 2, 2, 9, 20, 8, 8), Alignment::Offset, 20));
  add("CausalKeyLengths", [&] {
    Problem p = causal(shape(3, 2, 2, 7, 33, 16, 16), Alignment::KeyLengths);
    p.has_key_lengths = true;
    return p;
  }(), [](AttentionCase& c) { c.key_lengths = {33, 12, 5}; c.nan_padding = true; });
  add("WindowBoth", windowed(mha, 3, 2));
  add("WindowLeftCausalBottomRight", [&] {
    Problem p = windowed(mha, 4, 0, Alignment::BottomRight);
    p.causal = true;
    return p;
  }());
  add("WindowRightOnly", windowed(mha, -1, 1));
  add("WindowZeroWidth", windowed(shape(1, 2, 2, 17, 17, 8, 8), 0, 0));
  add("WindowPastKeys", windowed(shape(1, 2, 2, 5, 20, 8, 8), 0, 3, Alignment::Offset), [](AttentionCase& c) {
    c.problem.diagonal_offset = 20;  // every row's window [i + 20, i + 23] lies past the last key: all rows empty
  });
  add("Softcap", [&] {
    Problem p = mha;
    p.softcap = 2.5;
    return p;
  }(), [](AttentionCase& c) { c.amplitude = 2.0; });
  add("SoftcapCausalAdditive", [&] {
    Problem p = masked(causal(mha, Alignment::BottomRight), MaskKind::Additive, 2, 4, 17, 33);
    p.softcap = 4.0;
    return p;
  }());
  add("BoolMaskFull", masked(mha, MaskKind::Boolean, 2, 4, 17, 33));
  add("BoolMaskBroadcastQK", masked(mha, MaskKind::Boolean, 1, 1, 17, 33));
  add("BoolMaskBroadcastBatchKeys", masked(mha, MaskKind::Boolean, 2, 1, 1, 33));
  add("BoolMaskShortKeys", masked(mha, MaskKind::Boolean, 1, 4, 17, 20));
  add("BoolMaskEmptyRow", masked(mha, MaskKind::Boolean, 2, 4, 17, 33), [](AttentionCase& c) {
    c.empty_first_row = true;
  });
  add("AdditiveMaskFull", masked(mha, MaskKind::Additive, 2, 4, 17, 33));
  add("AdditiveMaskBroadcastShort", masked(shape(2, 6, 3, 17, 33, 16, 16), MaskKind::Additive, 1, 6, 1, 25));
  add("KeyLengths", [&] {
    Problem p = shape(3, 2, 1, 9, 33, 16, 16);
    p.has_key_lengths = true;
    return p;
  }(), [](AttentionCase& c) { c.key_lengths = {0, 17, 33}; c.nan_padding = true; });
  add("KeyLengthsCausalBoolMask", [&] {
    Problem p = masked(causal(shape(2, 4, 2, 9, 33, 16, 16), Alignment::BottomRight), MaskKind::Boolean, 2, 1, 9, 30);
    p.has_key_lengths = true;
    return p;
  }(), [](AttentionCase& c) { c.key_lengths = {31, 16}; c.nan_padding = true; });
  add("SequenceMajor", mha, [](AttentionCase& c) { c.sequence_major = true; });
  add("SequenceMajorGqaCausal", causal(shape(2, 6, 2, 17, 33, 16, 16), Alignment::BottomRight),
      [](AttentionCase& c) { c.sequence_major = true; });
  add("DkNotDv", shape(2, 2, 1, 17, 33, 24, 8));
  add("DvWide", shape(1, 2, 2, 17, 33, 8, 40));
  add("DecodeOneQuery", causal(shape(2, 4, 2, 1, 40, 16, 16), Alignment::BottomRight));
  add("OneKey", shape(1, 2, 2, 5, 1, 8, 8));
  add("LargeLogits", shape(1, 2, 2, 17, 33, 16, 16), [](AttentionCase& c) { c.amplitude = 6.0; });
  for (const std::int64_t keys : {15, 16, 17, 31, 32, 33, 63, 64, 65}) {
    add("TileKeys" + std::to_string(keys), shape(1, 2, 1, keys, keys, 8, 8));
    add("TileKeysCausal" + std::to_string(keys), causal(shape(1, 1, 1, keys, keys, 8, 8), Alignment::TopLeft));
  }

  std::vector<AttentionCase> grid;
  for (const DType dtype : dtypes)
    for (const AttentionCase& c : base) {
      AttentionCase d = c;
      d.dtype = dtype;
      std::string suffix(dtype_name(dtype));
      suffix[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0])));
      d.name += suffix;
      grid.push_back(std::move(d));
    }
  return grid;
}

std::optional<std::string> check_case(attncheck_backend* backend, const AttentionCase& c, const TensorMemory& memory) {
  Problem p = c.problem;
  // The kernels apply scale and softcap in fp32: give them values fp32 holds exactly, so the
  // reference sees the same numbers (numerics.md §1: input rounding is not kernel error).
  p.scale = round_to(DType::F32, p.effective_scale());
  p.softcap = round_to(DType::F32, p.softcap);
  p.validate();
  const attncheck_problem abi = to_abi(p);
  const DLDataType dtype = to_dlpack(c.dtype);

  char reason[512] = {};
  const attncheck_status supported = backend->supports(backend, &abi, dtype, memory.device, reason, sizeof reason);
  if (supported == kAttncheckNotSupported) return std::string(reason);
  if (supported != kAttncheckOk) {
    ADD_FAILURE() << "supports() returned " << supported << ": " << reason;
    return std::nullopt;
  }
  attncheck_numerics_profile profile{};
  if (backend->get_profile(backend, dtype, &profile) != kAttncheckOk) {
    ADD_FAILURE() << "get_profile failed: " << backend->last_error(backend);
    return std::nullopt;
  }

  // Inputs, rounded to the dtype before anything else sees them.
  std::mt19937_64 rng(std::hash<std::string>{}(c.name));
  HostTensor q = random_tensor({p.batch, p.q_heads, p.q_len, p.qk_dim}, c.dtype, c.amplitude, rng);
  HostTensor k = random_tensor({p.batch, p.kv_heads, p.k_len, p.qk_dim}, c.dtype, c.amplitude, rng);
  HostTensor v = random_tensor({p.batch, p.kv_heads, p.k_len, p.v_dim}, c.dtype, 1.0, rng);
  HostTensor mask;
  if (p.mask != MaskKind::None) {
    mask = HostTensor({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len});
    std::bernoulli_distribution attend(0.75), forbid(0.15);
    std::normal_distribution<double> bias(0.0, 1.0);
    for (double& x : mask.values)
      x = p.mask == MaskKind::Boolean ? (attend(rng) ? 1.0 : 0.0) : forbid(rng) ? -kInf : round_to(c.dtype, bias(rng));
    if (c.empty_first_row)
      for (std::int64_t b = 0; b < p.mask_batch; ++b)
        for (std::int64_t h = 0; h < p.mask_heads; ++h)
          for (std::int64_t j = 0; j < p.mask_k_len; ++j) mask(b, h, 0, j) = 0.0;
  }
  if (c.nan_padding)
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t h = 0; h < p.kv_heads; ++h)
        for (std::int64_t j = c.key_lengths[static_cast<size_t>(b)]; j < p.k_len; ++j) {
          for (std::int64_t d = 0; d < p.qk_dim; ++d) k(b, h, j, d) = std::numeric_limits<double>::quiet_NaN();
          for (std::int64_t d = 0; d < p.v_dim; ++d) v(b, h, j, d) = std::numeric_limits<double>::quiet_NaN();
        }

  // Backend tensors.
  Packed pq = pack(q, dtype, c.sequence_major), pk = pack(k, dtype, c.sequence_major),
         pv = pack(v, dtype, c.sequence_major);
  Packed pout = pack(HostTensor({p.batch, p.q_heads, p.q_len, p.v_dim}), dtype, c.sequence_major);
  std::fill(pout.bytes.begin(), pout.bytes.end(), 0xff);  // NaN everywhere: unwritten elements show
  std::vector<unsigned char> lse_bytes(static_cast<size_t>(p.batch * p.q_heads * p.q_len) * sizeof(float), 0xff);
  std::vector<std::int64_t> lse_shape{p.batch, p.q_heads, p.q_len}, lse_strides{p.q_heads * p.q_len, p.q_len, 1};
  Buffer bq = upload(memory, pq.bytes), bk = upload(memory, pk.bytes), bv = upload(memory, pv.bytes),
         bout = upload(memory, pout.bytes), blse = upload(memory, lse_bytes);
  DLTensor tq = dl_tensor(bq.get(), memory.device, dtype, pq.shape, pq.strides);
  DLTensor tk = dl_tensor(bk.get(), memory.device, dtype, pk.shape, pk.strides);
  DLTensor tv = dl_tensor(bv.get(), memory.device, dtype, pv.shape, pv.strides);
  DLTensor tout = dl_tensor(bout.get(), memory.device, dtype, pout.shape, pout.strides);
  DLTensor tlse = dl_tensor(blse.get(), memory.device, {kDLFloat, 32, 1}, lse_shape, lse_strides);
  attncheck_attention_tensors tensors{&tq, &tk, &tv, nullptr, nullptr, &tout, &tlse};

  Packed pmask;
  Buffer bmask;
  DLTensor tmask{};
  if (p.mask != MaskKind::None) {
    pmask = pack(mask, p.mask == MaskKind::Boolean ? DLDataType{kDLUInt, 8, 1} : dtype, false);
    bmask = upload(memory, pmask.bytes);
    tmask = dl_tensor(bmask.get(), memory.device, pmask.dtype, pmask.shape, pmask.strides);
    tensors.mask = &tmask;
  }
  std::vector<std::int64_t> len_shape{p.batch}, len_strides{1};
  Buffer blengths;
  DLTensor tlengths{};
  if (p.has_key_lengths) {
    std::vector<unsigned char> bytes(c.key_lengths.size() * sizeof(std::int64_t));
    std::memcpy(bytes.data(), c.key_lengths.data(), bytes.size());
    blengths = upload(memory, bytes);
    tlengths = dl_tensor(blengths.get(), memory.device, {kDLInt, 64, 1}, len_shape, len_strides);
    tensors.key_lengths = &tlengths;
  }

  const attncheck_status status = backend->forward(backend, &abi, &tensors);
  if (status != kAttncheckOk) {
    ADD_FAILURE() << "forward returned " << status << ": " << backend->last_error(backend);
    return std::nullopt;
  }
  memory.download(pout.bytes.data(), bout.get(), pout.bytes.size());
  memory.download(lse_bytes.data(), blse.get(), lse_bytes.size());
  HostTensor out({p.batch, p.q_heads, p.q_len, p.v_dim}), lse({1, p.batch, p.q_heads, p.q_len});
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          const std::int64_t at =
              b * pout.strides[0] + h * pout.strides[1] + i * pout.strides[2] + j * pout.strides[3];
          out(b, h, i, j) = load(&pout.bytes[static_cast<size_t>(at * element_bytes(dtype))], dtype);
        }
        lse(0, b, h, i) =
            load(&lse_bytes[static_cast<size_t>(((b * p.q_heads + h) * p.q_len + i) * 4)], {kDLFloat, 32, 1});
      }

  AttentionInputs inputs{std::as_const(q).view(), std::as_const(k).view(), std::as_const(v).view(),
                         mask.values.empty() ? View4<const double>{} : std::as_const(mask).view(), c.key_lengths};
  ReferenceOptions options;
  options.row_statistics = true;
  options.threads = 1;
  const AttentionResult ref = reference_attention(p, inputs, options);
  // compare_attention is the one judge: τ from the backend's declared profile (numerics.md §2).
  const Verdict verdict = compare_attention(p, from_abi(profile), inputs, ref, out, &lse);
  if (!verdict.passed) ADD_FAILURE() << c << ": " << verdict.failure << "\n" << verdict.summary();
  return std::nullopt;
}

}  // namespace attncheck::cuda::testing
