#include "harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fmt/format.h>
#include <limits>
#include <random>
#include <stdexcept>

#include "attncheck/compare.h"

namespace attncheck::test {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

DLDataType u8_dtype() { return {kDLUInt, 8, 1}; }
DLDataType i64_dtype() { return {kDLInt, 64, 1}; }

int bytes_of(DLDataType d) { return d.bits / 8; }

/// Allocates a tensor of logical `shape`, laid out as `layout` says (layouts other than Compact
/// only for rank 4), filled with zero bytes.
StoredTensor allocate(const std::vector<std::int64_t>& shape, DLDataType dtype, Layout layout) {
  StoredTensor s;
  s.shape = shape;
  const int rank = static_cast<int>(shape.size());
  s.strides.assign(shape.size(), 0);
  std::int64_t span = 1;
  std::uint64_t offset = 0;
  if (layout == Layout::SequenceMajor && rank == 4) {
    // Memory is [B, L, H, D]: D fastest, then H, then L, then B.
    s.strides[3] = 1;
    s.strides[1] = shape[3];
    s.strides[2] = shape[1] * shape[3];
    s.strides[0] = shape[2] * shape[1] * shape[3];
    span = shape[0] * s.strides[0];
    offset = 64;  // the data start behind a byte_offset, which the backend must honour
  } else if (layout == Layout::PaddedRows && rank == 4) {
    s.strides[3] = 1;
    s.strides[2] = shape[3] + 5;
    s.strides[1] = shape[2] * s.strides[2];
    s.strides[0] = shape[1] * s.strides[1];
    span = shape[0] * s.strides[0];
  } else {
    for (int d = rank - 1; d >= 0; --d) {
      s.strides[d] = span;
      span *= shape[d];
    }
  }
  s.bytes.assign(static_cast<std::size_t>(span * bytes_of(dtype)) + offset, std::byte{0});
  s.tensor.data = s.bytes.data();
  s.tensor.byte_offset = offset;
  s.tensor.device = {kDLCPU, 0};
  s.tensor.ndim = rank;
  s.tensor.dtype = dtype;
  s.tensor.shape = s.shape.data();
  // NULL strides for the compact layout: the ABI's "compact row-major" path is exercised too.
  s.tensor.strides = layout == Layout::Compact || rank != 4 ? nullptr : s.strides.data();
  return s;
}

std::byte* element(StoredTensor& s, std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) {
  const std::int64_t idx[4] = {i0, i1, i2, i3};
  std::int64_t off = 0;
  for (std::size_t d = 0; d < s.shape.size(); ++d) off += idx[d] * s.strides[d];
  return s.bytes.data() + s.tensor.byte_offset + off * bytes_of(s.tensor.dtype);
}

void put(StoredTensor& s, double value, std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0, std::int64_t i3 = 0) {
  std::byte* p = element(s, i0, i1, i2, i3);
  const DLDataType d = s.tensor.dtype;
  if (d.code == kDLFloat && d.bits == 32) {
    const float f = static_cast<float>(value);
    std::memcpy(p, &f, 4);
  } else if (d.code == kDLFloat && d.bits == 16) {
    const std::uint16_t bits = to_f16_bits(value);
    std::memcpy(p, &bits, 2);
  } else if (d.code == kDLBfloat && d.bits == 16) {
    const std::uint16_t bits = to_bf16_bits(value);
    std::memcpy(p, &bits, 2);
  } else if (d.code == kDLFloat && d.bits == 64) {
    std::memcpy(p, &value, 8);
  } else if (d.code == kDLUInt && d.bits == 8) {
    const std::uint8_t b = value != 0 ? 1 : 0;
    std::memcpy(p, &b, 1);
  } else if (d.code == kDLInt && d.bits == 64) {
    const std::int64_t i = static_cast<std::int64_t>(value);
    std::memcpy(p, &i, 8);
  } else {
    throw std::logic_error("harness: unhandled dtype");
  }
}

/// Stores a compact logical HostTensor (leading dims of size 1 dropped to `shape`'s rank).
void fill(StoredTensor& s, const HostTensor& h) {
  const Shape4 sh = h.shape;
  for (std::int64_t a = 0; a < sh[0]; ++a)
    for (std::int64_t b = 0; b < sh[1]; ++b)
      for (std::int64_t c = 0; c < sh[2]; ++c)
        for (std::int64_t d = 0; d < sh[3]; ++d) put(s, h(a, b, c, d), a, b, c, d);
}

HostTensor random_tensor(const Shape4& shape, DType dtype, std::mt19937_64& rng, double stddev = 1.0) {
  HostTensor t(shape);
  std::normal_distribution<double> normal(0.0, stddev);
  for (double& x : t.values) x = round_to(dtype, normal(rng));
  return t;
}

}  // namespace

double StoredTensor::get(std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) const {
  const std::byte* p = const_cast<StoredTensor*>(this)->bytes.data();
  const std::int64_t idx[4] = {i0, i1, i2, i3};
  std::int64_t off = 0;
  for (std::size_t d = 0; d < shape.size(); ++d) off += idx[d] * strides[d];
  p += tensor.byte_offset + off * bytes_of(tensor.dtype);
  const DLDataType d = tensor.dtype;
  if (d.code == kDLFloat && d.bits == 32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  std::uint16_t bits;
  std::memcpy(&bits, p, 2);
  if (d.code == kDLFloat && d.bits == 16) return from_f16_bits(bits);
  if (d.code == kDLBfloat && d.bits == 16) return from_bf16_bits(bits);
  throw std::logic_error("harness: get() on an unhandled dtype");
}

std::vector<double> random_values(std::size_t count, DType dtype, std::uint64_t seed, double stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, stddev);
  std::vector<double> values(count);
  for (double& x : values) x = round_to(dtype, normal(rng));
  return values;
}

StoredTensor store(const std::vector<double>& values, const std::vector<std::int64_t>& shape, DType dtype) {
  StoredTensor s = allocate(shape, to_dlpack(dtype), Layout::Compact);
  std::int64_t total = 1;
  for (std::int64_t n : shape) total *= n;
  if (static_cast<std::int64_t>(values.size()) != total) throw std::logic_error("harness: store() size mismatch");
  for (std::int64_t n = 0; n < total; ++n) {
    std::int64_t idx[4] = {0, 0, 0, 0}, rest = n;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      idx[d] = rest % shape[d];
      rest /= shape[d];
    }
    put(s, values[static_cast<std::size_t>(n)], idx[0], idx[1], idx[2], idx[3]);
  }
  return s;
}

Prepared prepare(const Case& c, DType dtype, DType output) {
  Prepared r;
  r.problem = c.problem;
  Problem& p = r.problem;
  // Every backend here applies scale and softcap in fp32: give the reference those exact values
  // (numerics.md §1: the reference sees the operands the kernel received).
  p.scale = round_to(DType::F32, p.effective_scale());
  p.softcap = round_to(DType::F32, p.softcap);
  r.dtype = dtype;
  std::mt19937_64 rng(c.seed);
  r.q = random_tensor({p.batch, p.q_heads, p.q_len, p.qk_dim}, dtype, rng);
  r.k = random_tensor({p.batch, p.kv_heads, p.k_len, p.qk_dim}, dtype, rng);
  r.v = random_tensor({p.batch, p.kv_heads, p.k_len, p.v_dim}, dtype, rng);
  if (p.mask != MaskKind::None) {
    const Shape4 ms{p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len};
    r.mask = HostTensor(ms);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::normal_distribution<double> normal(0.0, 2.0);
    for (std::int64_t a = 0; a < ms[0]; ++a)
      for (std::int64_t h = 0; h < ms[1]; ++h)
        for (std::int64_t i = 0; i < ms[2]; ++i)
          for (std::int64_t j = 0; j < ms[3]; ++j) {
            const bool drop = uniform(rng) < 0.25 ||
                              (c.empty_mask_row_every > 0 && i % c.empty_mask_row_every == c.empty_mask_row_every - 1) ||
                              (j >= c.masked_keys_begin && j < c.masked_keys_end);
            if (p.mask == MaskKind::Boolean)
              r.mask(a, h, i, j) = drop ? 0.0 : 1.0;
            else
              r.mask(a, h, i, j) = drop ? -kInf : round_to(dtype, normal(rng));
          }
  }
  if (p.has_key_lengths) {
    if (static_cast<std::int64_t>(c.key_lengths.size()) != p.batch)
      throw std::logic_error("case " + c.name + ": key_lengths needs one entry per batch");
    r.key_lengths = c.key_lengths;
  }

  const DLDataType dl = to_dlpack(dtype);
  r.sq = allocate({p.batch, p.q_heads, p.q_len, p.qk_dim}, dl, c.layout);
  r.sk = allocate({p.batch, p.kv_heads, p.k_len, p.qk_dim}, dl, c.layout);
  r.sv = allocate({p.batch, p.kv_heads, p.k_len, p.v_dim}, dl, c.layout);
  fill(r.sq, r.q);
  fill(r.sk, r.k);
  fill(r.sv, r.v);
  if (p.mask != MaskKind::None) {
    // Boolean masks are uint8; an additive mask has the input dtype (backend.h).
    r.smask = allocate({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len},
                       p.mask == MaskKind::Boolean ? u8_dtype() : dl, Layout::Compact);
    fill(r.smask, r.mask);
  }
  if (p.has_key_lengths) {
    r.skl = allocate({p.batch}, i64_dtype(), Layout::Compact);
    for (std::int64_t b = 0; b < p.batch; ++b) put(r.skl, static_cast<double>(r.key_lengths[b]), b);
  }
  r.sout = allocate({p.batch, p.q_heads, p.q_len, p.v_dim}, to_dlpack(output), c.layout);
  r.slse = allocate({p.batch, p.q_heads, p.q_len}, to_dlpack(DType::F32), Layout::Compact);
  // Sentinels: an element the backend forgets to write reads back as NaN.
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        put(r.slse, kNaN, b, h, i);
        for (std::int64_t d = 0; d < p.v_dim; ++d) put(r.sout, kNaN, b, h, i, d);
      }
  return r;
}

AttentionInputs Prepared::reference_inputs() const {
  AttentionInputs in;
  in.q = q.view();
  in.k = k.view();
  in.v = v.view();
  if (problem.mask != MaskKind::None) in.mask = mask.view();
  if (problem.has_key_lengths) in.key_lengths = key_lengths;
  return in;
}

attncheck_attention_tensors Prepared::abi_tensors() {
  attncheck_attention_tensors t{};
  t.q = &sq.tensor;
  t.k = &sk.tensor;
  t.v = &sv.tensor;
  t.mask = problem.mask != MaskKind::None ? &smask.tensor : nullptr;
  t.key_lengths = problem.has_key_lengths ? &skl.tensor : nullptr;
  t.out = &sout.tensor;
  t.lse = &slse.tensor;
  return t;
}

HostTensor Prepared::out() const {
  HostTensor o({problem.batch, problem.q_heads, problem.q_len, problem.v_dim});
  for (std::int64_t b = 0; b < problem.batch; ++b)
    for (std::int64_t h = 0; h < problem.q_heads; ++h)
      for (std::int64_t i = 0; i < problem.q_len; ++i)
        for (std::int64_t d = 0; d < problem.v_dim; ++d) o(b, h, i, d) = sout.get(b, h, i, d);
  return o;
}

HostTensor Prepared::lse() const {
  HostTensor l({1, problem.batch, problem.q_heads, problem.q_len});
  for (std::int64_t b = 0; b < problem.batch; ++b)
    for (std::int64_t h = 0; h < problem.q_heads; ++h)
      for (std::int64_t i = 0; i < problem.q_len; ++i) l(0, b, h, i) = slse.get(b, h, i);
  return l;
}

Judgement judge(const Problem& problem, const NumericsProfile& profile, const AttentionInputs& inputs,
                const AttentionResult& reference, const HostTensor& out, const HostTensor* lse) {
  const Verdict v = compare_attention(problem, profile, inputs, reference, out, lse);
  return {v.passed, v.passed ? v.summary() : v.failure + " | " + v.summary()};
}

}  // namespace attncheck::test
