/// \file emulated_kernel.cpp
/// \brief The emulated kernels (emulated_kernel.h). One scalar engine runs every kernel: a Path
/// says, for one problem, where the kernel rounds and how it blocks the keys, and the profile is
/// written from the same Path, so what a kernel declares and what it computes cannot drift apart.
///
/// Per row and per KV split (keys [split_begin, split_end)), over blocks of `block` keys:
///   s_j   = fl32(fl32(Σ_d q̃_d k̃_jd) · scale), soft-capped (fp32 tanh), plus the bias b̃_j
///   m'    = max(m, max_j s_j);  α = exp(m − m');  p_j = exp(s_j − m')           (fp32)
///   l     = l·α + Σ_j p_j                                 (fp32, the row-sum accumulator)
///   acc_d = R_A(acc_d·α) then R_A(acc_d + R_P(p_j)·ṽ_jd) key by key, or, with partial sums,
///           acc_d = R_A(acc_d + t_d) where t_d sums the block's products in the same way
/// and the splits merge in fp32: m = max m_s, l = Σ l_s e^(m_s − m), acc = Σ acc_s e^(m_s − m);
/// O = R_O(acc / l), LSE = m + log l. q̃, k̃, ṽ, b̃ are the operands after the kernel's own
/// rounding stages, R_P / R_A / R_O round to the probability / accumulator / output dtype.
/// Masked keys never enter any sum. A row with no allowed key writes O = 0 and LSE = −inf.
#include "emulated_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "attncheck/backend_impl.h"
#include "attncheck/dtype.h"

namespace attncheck::emulated {
namespace {

using impl::check_cpu_tensor;
using impl::TensorArg;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr std::int64_t kTileKeys = 64;
// emu-ggml's thresholds (ggml-cpu's flash-attention dispatch): the tiled path from 64 query rows,
// split-KV for single-query decodes over at least 512 keys.
constexpr std::int64_t kGgmlTiledMinQueries = 64;
constexpr std::int64_t kGgmlSplitMinKeys = 512;

/// Where one problem's arithmetic rounds, for one kernel and input dtype.
struct Path {
  DType input = DType::F32;
  std::optional<DType> operand_rounding;  ///< Q, K, V (each) rounded to this inside the kernel
  std::optional<DType> mask_rounding;     ///< the dtype an additive bias is read in (ggml: F16)
  DType probability = DType::F32;         ///< P as it enters P·V
  DType accumulator = DType::F32;         ///< the P·V accumulator as computed
  DType declared_accumulator = DType::F32;  ///< as declared (differs only under AccumulatorStall)
  DType output = DType::F32;
  std::int64_t block = kTileKeys;         ///< keys per online-softmax step (1: one key at a time)
  bool partial_sums = false;              ///< each block summed apart, then added to the total
  int splits = 1;                         ///< contiguous KV parts merged at the end
};

DLDataType dl(DType d) {
  switch (d) {
    case DType::F16: return impl::kF16;
    case DType::BF16: return impl::kBF16;
    case DType::F64: return impl::kF64;
    case DType::E4M3: return impl::kE4M3;
    case DType::E5M2: return impl::kE5M2;
    case DType::F32: break;
  }
  return impl::kF32;
}

std::optional<DType> from_dl(DLDataType d) {
  if (impl::same_dtype(d, impl::kF32)) return DType::F32;
  if (impl::same_dtype(d, impl::kF16)) return DType::F16;
  if (impl::same_dtype(d, impl::kBF16)) return DType::BF16;
  if (impl::same_dtype(d, impl::kE4M3)) return DType::E4M3;
  if (impl::same_dtype(d, impl::kE5M2)) return DType::E5M2;
  return std::nullopt;
}

/// x rounded to `d` (an fp32 value is exact in double, so this is one rounding).
float round_float(DType d, float x) {
  if (d == DType::F32) return x;
  return static_cast<float>(round_to(d, static_cast<double>(x)));
}

float read(const TensorArg& t, DType d, std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) {
  switch (d) {
    case DType::F16: return static_cast<float>(from_f16_bits(*t.at<std::uint16_t>(i0, i1, i2, i3)));
    case DType::BF16: return static_cast<float>(from_bf16_bits(*t.at<std::uint16_t>(i0, i1, i2, i3)));
    default: return *t.at<float>(i0, i1, i2, i3);
  }
}

void write(const TensorArg& t, DType d, float x, std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) {
  switch (d) {
    case DType::F16: *t.mut<std::uint16_t>(i0, i1, i2, i3) = to_f16_bits(x); break;
    case DType::BF16: *t.mut<std::uint16_t>(i0, i1, i2, i3) = to_bf16_bits(x); break;
    default: *t.mut<float>(i0, i1, i2, i3) = x; break;
  }
}

std::vector<DType> accepted_inputs(Kernel kernel) {
  // fp16-only emulations take f32 (rounded inside, as ggml does) and f16; bf16 inputs would be
  // rounded to fp16 too, a conversion those kernels do not make.
  if (kernel == Kernel::Fp16Acc || kernel == Kernel::Ggml) return {DType::F32, DType::F16};
  // The fp8-P kernels also take fp8 inputs with descales (FlashAttention 3's forward: e4m3 Q, K,
  // V dequantized, P in e4m3): dequantized once into float32 (code · descale, one rounding
  // each), then the float32 path, output in float32.
  if (kernel == Kernel::E4m3P || kernel == Kernel::E5m2P)
    return {DType::F32, DType::F16, DType::BF16, DType::E4M3, DType::E5M2};
  return {DType::F32, DType::F16, DType::BF16};
}

/// The path `kernel` takes for `problem` (nullptr: the path for a problem the table does not
/// know, which get_profile describes — the shape-independent stages of emu-ggml's short path).
Path path_for(Kernel kernel, Defect defect, DType input, const attncheck_problem* problem) {
  Path path;
  path.input = input;
  path.output = is_fp8(input) ? DType::F32 : input;
  switch (kernel) {
    case Kernel::Fp32:
      path.partial_sums = true;  // a tile's P·V is one matrix product added to the accumulator
      break;
    case Kernel::Fp16Acc:
      path.operand_rounding = DType::F16;
      path.probability = DType::F16;
      path.accumulator = DType::F16;
      break;
    case Kernel::Bf16P:
      path.probability = DType::BF16;
      break;
    // FlashAttention 3's fp8 forward keeps P in e4m3 for the second GEMM: rounded once from the
    // fp32 exponential, the row sum taken over the unrounded values (as emu-bf16-p).
    case Kernel::E4m3P:
      path.probability = DType::E4M3;
      break;
    case Kernel::E5m2P:
      path.probability = DType::E5M2;
      break;
    case Kernel::Ggml: {
      path.operand_rounding = DType::F16;
      path.mask_rounding = DType::F16;  // ggml's mask tensor is F16
      path.output = DType::F32;         // ggml_flash_attn_ext writes F32
      const bool tiled = problem != nullptr && problem->q_len >= kGgmlTiledMinQueries;
      if (tiled) break;  // 64-key tiles, P and both accumulators in fp32
      path.block = 1;    // one key at a time, V accumulated in fp16 (ggml_vec_mad_f16)
      path.probability = DType::F16;
      path.accumulator = DType::F16;
      if (problem != nullptr && problem->q_len == 1 && problem->k_len >= kGgmlSplitMinKeys) path.splits = 2;
      break;
    }
  }
  path.declared_accumulator = path.accumulator;
  if (defect == Defect::AccumulatorStall) {
    path.accumulator = DType::F16;
    path.declared_accumulator = DType::F32;
  }
  return path;
}

attncheck_numerics_profile profile_of(const Path& path) {
  attncheck_numerics_profile pr{};
  pr.input_dtype = dl(path.input);
  pr.score_dtype = impl::kF32;
  pr.probability_dtype = dl(path.probability);
  pr.accumulator_dtype = dl(path.declared_accumulator);
  pr.output_dtype = dl(path.output);
  pr.accumulation_rounding = kAttncheckRoundNearest;
  pr.products_per_rounding = 1;  // every product is rounded into its sum
  pr.softmax_block = static_cast<std::int32_t>(path.block);
  pr.deterministic = 1;
  pr.empty_row = kAttncheckEmptyRowZeros;
  pr.flushes_subnormals = 0;
  pr.accepts_strides = 1;
  pr.writes_lse = 1;
  // glibc's expf and tanhf: within 1 and 2 ulp of fp32.
  pr.exp_relative_error = 0x1p-23;
  pr.tanh_relative_error = 0x1p-22;
  if (path.operand_rounding) {
    pr.query_rounding = dl(*path.operand_rounding);
    pr.key_rounding = dl(*path.operand_rounding);
    pr.value_rounding = dl(*path.operand_rounding);
  }
  if (path.mask_rounding) pr.mask_dtype = dl(*path.mask_rounding);
  // The row sum always accumulates in fp32; it is declared apart when P·V accumulates coarser.
  if (path.declared_accumulator != DType::F32) pr.row_sum_dtype = impl::kF32;
  pr.keys_per_partial_sum = path.partial_sums ? static_cast<std::int32_t>(path.block) : 0;
  pr.kv_splits = path.splits;
  pr.empty_row_lse = kAttncheckEmptyRowLseNegInf;
  pr.masked_keys_weighted_by_zero = 0;
  return pr;
}

/// Everything one call reads and writes, checked.
struct Call {
  attncheck_problem p{};
  DType input = DType::F32;
  DType mask_dtype = DType::F32;  ///< an additive mask arrives in the declared mask dtype (backend.h, ABI 2.1)
  TensorArg q, k, v, mask, out, lse;
  std::vector<std::int64_t> key_lengths;
};

Call check_call(const attncheck_problem& p, const attncheck_attention_tensors& t, const Path& path) {
  impl::check_problem(p);
  Call c;
  c.p = p;
  c.input = path.input;
  c.mask_dtype = path.mask_rounding.value_or(path.input);
  const DLDataType in = dl(path.input);
  c.q = check_cpu_tensor(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {in});
  c.k = check_cpu_tensor(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {in});
  c.v = check_cpu_tensor(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {in});
  c.out = check_cpu_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "query heads", "query length", "value dim"},
                           {dl(path.output)});
  if (t.lse != nullptr)
    c.lse = check_cpu_tensor(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, {"batch", "query heads", "query length"}, {impl::kF32});
  if (p.mask_kind != kAttncheckMaskNone) {
    const std::initializer_list<std::string_view> dims{"batch", "heads", "query length", "key length"};
    const std::initializer_list<std::int64_t> shape{p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]};
    c.mask = p.mask_kind == kAttncheckMaskBoolean ? check_cpu_tensor(t.mask, "mask", shape, dims, {impl::kU8})
                                                  : check_cpu_tensor(t.mask, "mask", shape, dims, {dl(c.mask_dtype)});
  } else if (t.mask != nullptr) {
    impl::invalid("mask: given, but problem.mask_kind is none");
  }
  c.key_lengths = impl::checked_key_lengths(p, t.key_lengths);
  return c;
}

/// Whether row i of (b, h) may attend to key j (problem.h's clauses); `bias` receives the
/// additive mask value (handed over in the mask dtype), 0 without one.
bool key_allowed(const Call& c, Defect defect, std::int64_t b, std::int64_t h, std::int64_t i,
                 std::int64_t j, float* bias) {
  const attncheck_problem& p = c.p;
  *bias = 0.0f;
  if (p.has_key_lengths && j >= c.key_lengths[b]) return false;
  if (p.mask_kind != kAttncheckMaskNone) {
    if (j >= p.mask_shape[3]) return false;
    const std::int64_t mb = p.mask_shape[0] == 1 ? 0 : b;
    const std::int64_t mh = p.mask_shape[1] == 1 ? 0 : h;
    const std::int64_t mi = p.mask_shape[2] == 1 ? 0 : i;
    if (p.mask_kind == kAttncheckMaskBoolean) {
      if (*c.mask.at<std::uint8_t>(mb, mh, mi, j) == 0) return false;
    } else {
      *bias = read(c.mask, c.mask_dtype, mb, mh, mi, j);
      if (*bias == kNegInf) return false;
    }
  }
  const std::int64_t diagonal = i + impl::diagonal_offset(p, p.has_key_lengths ? c.key_lengths[b] : p.k_len);
  if (p.causal && (defect == Defect::CausalOffByOne ? j >= diagonal : j > diagonal)) return false;
  if (p.window_left >= 0 && j < diagonal - p.window_left) return false;
  if (p.window_right >= 0 && j > diagonal + p.window_right) return false;
  return true;
}

/// The running state of one KV split of one row.
struct Partial {
  float m = kNegInf;
  float l = 0.0f;
  std::vector<float> acc;
};

class Engine {
 public:
  Engine(const Call& c, const Path& path, Defect defect) : c_(c), path_(path), defect_(defect) {}

  void run() {
    const attncheck_problem& p = c_.p;
    const std::int64_t group = p.q_heads / p.kv_heads;
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t g = 0; g < p.kv_heads; ++g) {
        load_kv(b, g);
        for (std::int64_t h = g * group; h < (g + 1) * group; ++h)
          for (std::int64_t i = 0; i < p.q_len; ++i) row(b, h, i);
      }
  }

 private:
  float operand(float x) const { return path_.operand_rounding ? round_float(*path_.operand_rounding, x) : x; }

  void load_kv(std::int64_t b, std::int64_t g) {
    const attncheck_problem& p = c_.p;
    k_.resize(static_cast<size_t>(p.k_len * p.qk_dim));
    v_.resize(static_cast<size_t>(p.k_len * p.v_dim));
    for (std::int64_t j = 0; j < p.k_len; ++j) {
      for (std::int64_t d = 0; d < p.qk_dim; ++d) k_[static_cast<size_t>(j * p.qk_dim + d)] = operand(read(c_.k, c_.input, b, g, j, d));
      for (std::int64_t d = 0; d < p.v_dim; ++d) v_[static_cast<size_t>(j * p.v_dim + d)] = operand(read(c_.v, c_.input, b, g, j, d));
    }
  }

  void row(std::int64_t b, std::int64_t h, std::int64_t i) {
    const attncheck_problem& p = c_.p;
    q_.resize(static_cast<size_t>(p.qk_dim));
    for (std::int64_t d = 0; d < p.qk_dim; ++d) q_[static_cast<size_t>(d)] = operand(read(c_.q, c_.input, b, h, i, d));
    allowed_.assign(static_cast<size_t>(p.k_len), 0);
    bias_.assign(static_cast<size_t>(p.k_len), 0.0f);
    std::int64_t last_allowed = -1;
    for (std::int64_t j = 0; j < p.k_len; ++j) {
      allowed_[static_cast<size_t>(j)] = key_allowed(c_, defect_, b, h, i, j, &bias_[static_cast<size_t>(j)]);
      if (allowed_[static_cast<size_t>(j)]) last_allowed = j;
    }
    if (defect_ == Defect::DroppedKey && last_allowed >= 0) allowed_[static_cast<size_t>(last_allowed)] = 0;

    std::vector<Partial> parts(static_cast<size_t>(path_.splits));
    const std::int64_t split_len = (p.k_len + path_.splits - 1) / path_.splits;
    for (int s = 0; s < path_.splits; ++s) {
      Partial& part = parts[static_cast<size_t>(s)];
      part.acc.assign(static_cast<size_t>(p.v_dim), 0.0f);
      const std::int64_t begin = s * split_len, end = std::min(p.k_len, begin + split_len);
      for (std::int64_t j0 = begin; j0 < end; j0 += path_.block) block(part, j0, std::min(end, j0 + path_.block));
    }

    // Merge the splits in fp32 (a single split is its own result: no rescale by e^0).
    Partial merged = std::move(parts[0]);
    for (size_t s = 1; s < parts.size(); ++s) {
      const Partial& other = parts[s];
      if (other.m == kNegInf) continue;
      if (merged.m == kNegInf) {
        merged = other;
        continue;
      }
      const float m = std::fmax(merged.m, other.m);
      const float wa = std::exp(merged.m - m), wb = std::exp(other.m - m);
      merged.l = merged.l * wa + other.l * wb;
      for (size_t d = 0; d < merged.acc.size(); ++d) merged.acc[d] = merged.acc[d] * wa + other.acc[d] * wb;
      merged.m = m;
    }
    if (merged.m == kNegInf) {  // no allowed key: the declared empty-row convention
      for (std::int64_t d = 0; d < p.v_dim; ++d) write(c_.out, path_.output, 0.0f, b, h, i, d);
      if (c_.lse.present()) *c_.lse.mut<float>(b, h, i) = kNegInf;
      return;
    }
    for (std::int64_t d = 0; d < p.v_dim; ++d)
      write(c_.out, path_.output, merged.acc[static_cast<size_t>(d)] / merged.l, b, h, i, d);
    if (c_.lse.present()) *c_.lse.mut<float>(b, h, i) = merged.m + std::log(merged.l);
  }

  float score(std::int64_t j) const {
    const attncheck_problem& p = c_.p;
    float dot = 0.0f;
    const float* k = &k_[static_cast<size_t>(j * p.qk_dim)];
    for (std::int64_t d = 0; d < p.qk_dim; ++d) dot += q_[static_cast<size_t>(d)] * k[d];
    float scale = static_cast<float>(p.scale);
    if (defect_ == Defect::Scale) scale *= 1.0f + 0x1p-10f;
    float s = dot * scale;
    const float cap = static_cast<float>(p.softcap);
    if (cap > 0.0f) s = cap * std::tanh(s / cap);
    return s + bias_[static_cast<size_t>(j)];
  }

  float acc_round(float x) const { return round_float(path_.accumulator, x); }

  /// One online-softmax step over keys [j0, j1).
  void block(Partial& part, std::int64_t j0, std::int64_t j1) {
    const attncheck_problem& p = c_.p;
    scores_.clear();
    keys_.clear();
    float block_max = kNegInf;
    for (std::int64_t j = j0; j < j1; ++j) {
      if (!allowed_[static_cast<size_t>(j)]) continue;
      const float s = score(j);
      keys_.push_back(j);
      scores_.push_back(s);
      block_max = std::fmax(block_max, s);
    }
    if (keys_.empty()) return;  // a fully masked block changes nothing: no (−inf) − (−inf)
    const float m_new = std::fmax(part.m, block_max);
    if (part.m != kNegInf && m_new != part.m) {
      const float alpha = std::exp(part.m - m_new);
      part.l *= alpha;
      for (float& a : part.acc) a = acc_round(a * alpha);
    }
    part.m = m_new;
    const size_t dv = static_cast<size_t>(p.v_dim);
    if (path_.partial_sums) {
      block_acc_.assign(dv, 0.0f);
      float block_l = 0.0f;
      for (size_t n = 0; n < keys_.size(); ++n) {
        const float e = std::exp(scores_[n] - m_new);
        block_l += e;
        const float pj = round_float(path_.probability, e);
        const float* v = &v_[static_cast<size_t>(keys_[n] * p.v_dim)];
        for (size_t d = 0; d < dv; ++d) block_acc_[d] = acc_round(block_acc_[d] + pj * v[d]);
      }
      part.l += block_l;
      for (size_t d = 0; d < dv; ++d) part.acc[d] = acc_round(part.acc[d] + block_acc_[d]);
      return;
    }
    for (size_t n = 0; n < keys_.size(); ++n) {
      const float e = std::exp(scores_[n] - m_new);
      part.l += e;
      const float pj = round_float(path_.probability, e);
      const float* v = &v_[static_cast<size_t>(keys_[n] * p.v_dim)];
      for (size_t d = 0; d < dv; ++d) part.acc[d] = acc_round(part.acc[d] + pj * v[d]);
    }
  }

  const Call& c_;
  const Path& path_;
  Defect defect_;
  std::vector<float> q_, k_, v_, bias_, scores_, block_acc_;
  std::vector<char> allowed_;
  std::vector<std::int64_t> keys_;
};

class Emulated final : public impl::BackendImpl {
 public:
  Emulated(Kernel kernel, Defect defect) : kernel_(kernel), defect_(defect) {}

  attncheck_numerics_profile profile(DLDataType input) const override {
    return profile_of(path_for(kernel_, defect_, input_dtype(input), nullptr));
  }

  bool has_problem_profiles() const override { return kernel_ == Kernel::Ggml; }
  attncheck_numerics_profile problem_profile(const attncheck_problem& problem, DLDataType input) const override {
    return profile_of(path_for(kernel_, defect_, input_dtype(input), &problem));
  }

  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(problem);
    (void)input_dtype(input);
    if (device != kDLCPU)
      impl::unsupported(std::string(kernel_name(kernel_)) + " reads host memory only (device type " + std::to_string(device) + ")");
  }

  std::uint32_t options() const override {
    return kernel_ == Kernel::E4m3P || kernel_ == Kernel::E5m2P ? std::uint32_t{impl::kOptionFp8} : 0u;
  }

  void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) override {
    if (tensors.q == nullptr) impl::invalid("q: is NULL, but the problem requires it");
    if (impl::is_fp8(tensors.q->dtype)) {
      (void)input_dtype(tensors.q->dtype);  // declined where the kernel takes no fp8
      const impl::DequantizedF32 dequantized(problem, tensors, kDLCPU);
      return forward(impl::without_descales(problem), impl::without_descales(tensors, dequantized));
    }
    if (impl::descale_of(problem) != kAttncheckDescaleNone) impl::invalid("problem.descale is set, but q is not fp8 (e4m3fn or e5m2)");
    const Path path = path_for(kernel_, defect_, input_dtype(tensors.q->dtype), &problem);
    const Call call = check_call(problem, tensors, path);
    Engine(call, path, defect_).run();
  }

 private:
  DType input_dtype(DLDataType input) const {
    const std::optional<DType> d = from_dl(input);
    const std::vector<DType> accepted = accepted_inputs(kernel_);
    if (!d || std::find(accepted.begin(), accepted.end(), *d) == accepted.end()) {
      std::string names;
      for (DType a : accepted) {
        if (!names.empty()) names += ", ";
        names += impl::dtype_string(dl(a));
      }
      impl::unsupported(std::string(kernel_name(kernel_)) + " takes " + names + " inputs, not " + impl::dtype_string(input));
    }
    return *d;
  }

  Kernel kernel_;
  Defect defect_;
};

const char* description(Kernel kernel) {
  switch (kernel) {
    case Kernel::Fp32: return "emulated: fp32 online softmax over 64-key tiles, fp32 partial sums per tile";
    case Kernel::Fp16Acc: return "emulated: Q/K/V and P rounded to fp16, P.V accumulated in fp16, row sum in fp32";
    case Kernel::Bf16P: return "emulated: P rounded to bf16 before P.V, fp32 accumulation, 64-key tiles";
    case Kernel::Ggml: return "emulated: ggml_flash_attn_ext F16 path (one key at a time / 64-key tiles / split-KV decode)";
    case Kernel::E4m3P: return "emulated: P rounded to e4m3 before P.V (FlashAttention 3's fp8 P), fp32 accumulation, 64-key tiles";
    case Kernel::E5m2P: return "emulated: P rounded to e5m2 before P.V, fp32 accumulation, 64-key tiles";
  }
  return "";
}

}  // namespace

std::string_view kernel_name(Kernel kernel) {
  switch (kernel) {
    case Kernel::Fp32: return "emu-fp32";
    case Kernel::Fp16Acc: return "emu-fp16-acc";
    case Kernel::Bf16P: return "emu-bf16-p";
    case Kernel::Ggml: return "emu-ggml";
    case Kernel::E4m3P: return "emu-e4m3-p";
    case Kernel::E5m2P: return "emu-e5m2-p";
  }
  return "";
}

std::string_view defect_name(Defect defect) {
  switch (defect) {
    case Defect::None: return "none";
    case Defect::Scale: return "scale";
    case Defect::DroppedKey: return "dropped-key";
    case Defect::CausalOffByOne: return "causal-off-by-one";
    case Defect::AccumulatorStall: return "accumulator-stall";
  }
  return "";
}

std::optional<Kernel> parse_kernel(std::string_view name) {
  for (Kernel k : {Kernel::Fp32, Kernel::Fp16Acc, Kernel::Bf16P, Kernel::Ggml, Kernel::E4m3P, Kernel::E5m2P})
    if (kernel_name(k) == name) return k;
  return std::nullopt;
}

std::optional<Defect> parse_defect(std::string_view name) {
  for (Defect d : {Defect::None, Defect::Scale, Defect::DroppedKey, Defect::CausalOffByOne, Defect::AccumulatorStall})
    if (defect_name(d) == name) return d;
  return std::nullopt;
}

attncheck_backend* make_emulated(Kernel kernel, Defect defect) {
  std::string name(kernel_name(kernel));
  std::string text = description(kernel);
  if (defect != Defect::None) {
    name += '+';
    name += defect_name(defect);
    text += "; planted defect: ";
    text += defect_name(defect);
  }
  return impl::make_backend_table<Emulated>(name.c_str(), text.c_str(), kernel, defect);
}

}  // namespace attncheck::emulated

extern "C" attncheck_backend* attncheck_emu_fp32_entry(void) {
  return attncheck::emulated::make_emulated(attncheck::emulated::Kernel::Fp32, attncheck::emulated::Defect::None);
}
extern "C" attncheck_backend* attncheck_emu_fp16_acc_entry(void) {
  return attncheck::emulated::make_emulated(attncheck::emulated::Kernel::Fp16Acc, attncheck::emulated::Defect::None);
}
extern "C" attncheck_backend* attncheck_emu_bf16_p_entry(void) {
  return attncheck::emulated::make_emulated(attncheck::emulated::Kernel::Bf16P, attncheck::emulated::Defect::None);
}
extern "C" attncheck_backend* attncheck_emu_e4m3_p_entry(void) {
  return attncheck::emulated::make_emulated(attncheck::emulated::Kernel::E4m3P, attncheck::emulated::Defect::None);
}
extern "C" attncheck_backend* attncheck_emu_e5m2_p_entry(void) {
  return attncheck::emulated::make_emulated(attncheck::emulated::Kernel::E5m2P, attncheck::emulated::Defect::None);
}
extern "C" attncheck_backend* attncheck_emu_ggml_entry(void) {
  return attncheck::emulated::make_emulated(attncheck::emulated::Kernel::Ggml, attncheck::emulated::Defect::None);
}
