/// \file ggml_flash_attn.cpp
/// \brief Adapters for ggml's ggml_flash_attn_ext on the CPU backend (ggml 0.15.3), one backend
/// per K/V tensor type and precision request:
///
///   ggml-fa-f32kv           K, V F32
///   ggml-fa-f16kv           K, V F16, GGML_PREC_DEFAULT
///   ggml-fa-f16kv-prec-f32  K, V F16, ggml_flash_attn_ext_set_prec(GGML_PREC_F32)
///   ggml-fa-bf16kv          K, V BF16
///
/// Each call copies the suite's tensors into a ggml context of its own (so any strides are
/// accepted: the strided-layout properties test this copy), builds every masking option of the
/// problem into ggml's one F16 additive mask, computes the one-node graph on kThreads threads and
/// copies ggml's permuted F32 result back. ALiBi goes through ggml's own `max_bias` (ggml derives
/// the slopes and multiplies the mask by them, so the mask then holds −|j − p|), sinks through
/// ggml_flash_attn_ext_add_sinks. Sources cited as ops.cpp are
/// ggml/src/ggml-cpu/ops.cpp of the ggml tree scripts/third-party.sh fetches (README.md here).
#include <ggml-cpu.h>
#include <ggml.h>

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attncheck/backend_impl.h"

namespace attncheck::ggml_fa {
namespace {

using impl::check_cpu_tensor;
using impl::TensorArg;

/// Threads of every graph computation. Fixed, not the machine's core count: the split-KV decode
/// path cuts the keys into one chunk per thread (ops.cpp:8997), so the declared kv_splits and the
/// result itself would otherwise depend on the machine.
constexpr int kThreads = 2;
/// Dispatch thresholds of ggml_compute_forward_flash_attn_ext_f16 (ops.cpp:8994, 9051-9062):
/// split-KV for one query row of one batch over at least 512 keys; 64-row tiles (GGML_FA_TILE_Q,
/// ggml-cpu/common.h:9) once there are 64 query rows; GGML_FA_TILE_KV = 64 keys per tile.
constexpr std::int64_t kSplitMinKeys = 512;
constexpr std::int64_t kTileQueries = 64;
constexpr std::int32_t kTileKeys = 64;
/// The largest ALiBi distance |j − p| ggml's F16 mask holds exactly: every integer up to 2^11.
constexpr std::int64_t kExactF16Distance = 2048;

/// The K/V tensor type of one backend.
enum class KvType { F32, F16, BF16 };

/// The code path ggml_compute_forward_flash_attn_ext_f16 takes for a shape.
enum class Path {
  OneKeyAtATime,  ///< ggml_compute_forward_flash_attn_ext_f16_one_chunk over all keys (ops.cpp:8347)
  SplitKv,        ///< the same, on kThreads contiguous key chunks merged by reduce_partials (ops.cpp:8875)
  Tiled           ///< ggml_compute_forward_flash_attn_ext_tiled (ops.cpp:8585)
};

ggml_type ggml_type_of(KvType t) {
  switch (t) {
    case KvType::F16: return GGML_TYPE_F16;
    case KvType::BF16: return GGML_TYPE_BF16;
    case KvType::F32: break;
  }
  return GGML_TYPE_F32;
}

DLDataType dl_type_of(KvType t) {
  switch (t) {
    case KvType::F16: return impl::kF16;
    case KvType::BF16: return impl::kBF16;
    case KvType::F32: break;
  }
  return impl::kF32;
}

/// F32 elements per SIMD register of the ggml-cpu build (GGML_F32_EPR in simd-mappings.h: 16
/// for AVX-512, 8 for AVX, 4 for SSE3 and NEON); 0 when ggml-cpu was built without SIMD, where the
/// tiled path has no head-dimension condition (ops.cpp:9055-9063).
std::int64_t f32_per_register() {
  if (ggml_cpu_has_avx512()) return 16;
  if (ggml_cpu_has_avx()) return 8;
  if (ggml_cpu_has_sse3() || ggml_cpu_has_neon()) return 4;
  return 0;
}

/// Elements per GGML_F16_STEP when ggml-cpu's F16 vectors compute in fp16 lanes, 0 when they
/// widen to F32 lanes (GGML_F32Cx16 etc., simd-mappings.h:520-536). fp16 lanes: x86 builds with
/// __AVX512FP16__ (GGML_F16_STEP 128, simd-mappings.h:482-485), and ARM with fp16 vector
/// arithmetic (ggml_cpu_has_fp16_va; not measured here, declared for every length). ggml-cpu has
/// no query for AVX512-FP16; its GGML_NATIVE build (scripts/third-party.sh) compiles for the CPU
/// that builds it, which is the CPU that runs it, so the running CPU answers.
std::int64_t fp16_vector_step() {
  if (ggml_cpu_has_fp16_va()) return 1;
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("avx512fp16")) return 128;
#endif
  return 0;
}

Path path_for(KvType kv, const attncheck_problem& p) {
  const bool f32_or_f16 = kv == KvType::F32 || kv == KvType::F16;  // kv_is_f32_or_f16, ops.cpp:8993
  // ggml's q is [Dk, Lq, Hq, B]: neq1 = Lq, neq3 = B.
  if (f32_or_f16 && p.q_len == 1 && p.batch == 1 && p.k_len >= kSplitMinKeys) return Path::SplitKv;
  const std::int64_t epr = f32_per_register();
  if (f32_or_f16 && p.q_len >= kTileQueries && (epr == 0 || p.v_dim % epr == 0)) return Path::Tiled;
  return Path::OneKeyAtATime;
}

/// The backend: one K/V type and precision request.
class GgmlFlashAttn final : public impl::BackendImpl {
 public:
  GgmlFlashAttn(KvType kv, bool request_f32) : kv_(kv), request_f32_(request_f32) {}

  attncheck_numerics_profile profile(DLDataType input) const override { return profile_for(nullptr, input); }
  bool has_problem_profiles() const override { return true; }
  attncheck_numerics_profile problem_profile(const attncheck_problem& problem, DLDataType input) const override {
    return profile_for(&problem, input);
  }

  void check_supported(const attncheck_problem& p, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(p);
    check_input(input);
    if (device != kDLCPU) impl::unsupported("ggml's CPU backend reads host memory only");
    // ggml indexes query rows with int (ops.cpp:8431, `for (int ir = ir0; ...)`), the head
    // dimension of its dot products with int too.
    if (p.batch * p.q_heads * p.q_len > INT_MAX || p.qk_dim > INT_MAX || p.v_dim > INT_MAX || p.k_len > INT_MAX)
      impl::unsupported("ggml_flash_attn_ext counts query rows and head dimensions in int; this problem exceeds INT_MAX");
    // ggml's ALiBi (ops.cpp:8418-8438, 8472): one slope per query head, derived from max_bias,
    // times the mask entry. So the slopes cannot vary by batch row, and the mask must hold the
    // distances, not a bias of the problem's own.
    if (impl::alibi_of(p) == kAttncheckAlibiPerBatchHead)
      impl::unsupported("ggml derives one ALiBi slope per head from max_bias; slopes per batch row have no ggml counterpart");
    if (impl::alibi_of(p) != kAttncheckAlibiNone && p.mask_kind == kAttncheckMaskAdditive)
      impl::unsupported("ggml multiplies its one mask by the ALiBi slope, so an additive mask cannot be given with ALiBi");
  }

  std::uint32_t options() const override { return impl::kOptionAlibi | impl::kOptionSinks; }

  void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) override;

 private:
  /// The inputs this backend takes: float32 always (Q stays F32 as ggml wants it; K, V are
  /// rounded to the K/V type); the K/V type's own dtype (exact). A third dtype would be rounded
  /// to the K/V type with a loss of range or precision ggml's users do not choose: declined.
  void check_input(DLDataType input) const {
    const DLDataType own = dl_type_of(kv_);
    const bool ok = impl::same_dtype(input, impl::kF32) || impl::same_dtype(input, own) ||
                    (kv_ == KvType::F32 && (impl::same_dtype(input, impl::kF16) || impl::same_dtype(input, impl::kBF16)));
    if (!ok)
      impl::unsupported("this backend stores K and V as " + impl::dtype_string(own) + " and takes float32 or " +
                        impl::dtype_string(own) + " inputs, not " + impl::dtype_string(input) +
                        " (rounding them to " + impl::dtype_string(own) + " would be the adapter's loss, not ggml's)");
  }

  attncheck_numerics_profile profile_for(const attncheck_problem* problem, DLDataType input) const;

  KvType kv_;
  bool request_f32_;
};

attncheck_numerics_profile GgmlFlashAttn::profile_for(const attncheck_problem* problem, DLDataType input) const {
  check_input(input);
  // Without a problem (get_profile), the path of short rows: one key at a time.
  const Path path = problem != nullptr ? path_for(kv_, *problem) : Path::OneKeyAtATime;
  const DLDataType kv_dtype = dl_type_of(kv_);
  const bool kv_rounds = !impl::same_dtype(kv_dtype, input) && kv_ != KvType::F32;

  attncheck_numerics_profile pr{};
  pr.input_dtype = input;
  pr.score_dtype = impl::kF32;   // s is a float in every path (ops.cpp:8478, 8771)
  pr.output_dtype = impl::kF32;  // the op's result is GGML_TYPE_F32 (ggml.c ggml_flash_attn_ext)
  pr.accumulation_rounding = kAttncheckRoundNearest;
  pr.products_per_rounding = 1;  // each P·V product is fused into its running sum (FMA) or rounded into it
  pr.deterministic = 1;          // fixed thread count; each row's arithmetic and the split boundaries are fixed by the shape
  pr.empty_row = kAttncheckEmptyRowZeros;  // S = 0 gives S_inv = 0 over a zero accumulator (ops.cpp:8571, 8857; the split merge skips S = 0 chunks and leaves a zero sum unnormalized, 8922, 8936)
  pr.flushes_subnormals = 0;
  pr.accepts_strides = 1;        // the adapter copies every input into compact ggml tensors
  pr.writes_lse = 0;             // ggml_flash_attn_ext returns O only
  pr.empty_row_lse = kAttncheckEmptyRowLseUnspecified;
  pr.mask_dtype = impl::kF16;    // the mask must be GGML_TYPE_F16 (ggml.c ggml_flash_attn_ext asserts it)
  pr.tanh_relative_error = 0x1p-22;  // glibc tanhf, within 2 ulp: `logit_softcap*tanhf(s)` (ops.cpp:8485), ggml_vec_tanh_f32 (vec.h:909)
  pr.exp_relative_error = 0x1p-23;   // glibc expf, within 1 ulp (ops.cpp:8501, 8507)
  // K and V as the backend's K/V type: converted by the adapter with ggml's own round-to-nearest
  // (ggml_fp32_to_fp16_row, ggml_fp32_to_bf16_row_ref); exact when the input already is that type.
  if (kv_rounds) {
    pr.key_rounding = kv_dtype;
    pr.value_rounding = kv_dtype;
  }

  if (path == Path::Tiled) {
    // ops.cpp:8585-8870: Q copied as F32 (8718), K and V tiles widened to F32 (8755-8768, 8822),
    // scores by simd_gemm in F32, P = ggml_vec_soft_max_f32 in F32 (8815), VKQ32 += P·V by
    // simd_gemm FMAs straight into the F32 accumulator (8833): one running sum per row, rescaled
    // at each new tile maximum. The row sum adds each tile's sum to S (float).
    pr.probability_dtype = impl::kF32;
    pr.accumulator_dtype = impl::kF32;
    pr.softmax_block = kTileKeys;
    pr.keys_per_partial_sum = 0;
    // ggml_v_expf: "the maximum error is 1.45358 plus 0.5 ulps" (vec.h:1169), below 2 ulp.
    pr.exp_relative_error = 0x1p-22;
    // A tile is skipped only when every mask entry of its rows is -inf (8733-8750); otherwise its
    // masked keys enter the GEMMs with score -inf, P = 0: 0 times their V, NaN if V is not finite.
    pr.masked_keys_weighted_by_zero = 1;
    return pr;
  }

  // One key at a time (ops.cpp:8347-8583), also each chunk of the split-KV path: a key whose mask
  // entry is -inf is skipped before K or V is read (8473), so masked keys contribute nothing.
  pr.softmax_block = 1;
  pr.keys_per_partial_sum = 0;
  pr.masked_keys_weighted_by_zero = 0;
  pr.kv_splits = path == Path::SplitKv ? kThreads : 0;  // chunk_size = ceil(Lk / nth) (8997), merged in F32 (8875-8940)
  // Q is converted to K's vec_dot_type before the dot products (q_to_vec_dot, 8465): F16 for F16
  // K, BF16 for BF16 K (ggml-cpu.c type_traits_cpu), F32 K keeps it.
  if (kv_ == KvType::F16) pr.query_rounding = impl::kF16;
  if (kv_ == KvType::BF16) pr.query_rounding = impl::kBF16;
  pr.probability_dtype = impl::kF32;
  pr.accumulator_dtype = impl::kF32;
  if (kv_ == KvType::F16) {
    // V is F16: VKQ accumulates in an F16 vector, every ggml_vec_mad_f16 add and every
    // ggml_vec_scale_f16 rescale rounded to fp16 (ops.cpp:8504, 8511; vec.h:439-580); the row
    // sum S stays a float. So with GGML_PREC_F32 as well: ggml_compute_forward_flash_attn_ext
    // sends both precisions to the same code and says of both "uses F32 accumulators"
    // (ops.cpp:9083-9090), which the F16 path does not do. Declared as the code computes; the
    // request being ignored is a finding (README.md, "Findings"), not a tolerance to declare away.
    pr.accumulator_dtype = impl::kF16;
    pr.row_sum_dtype = impl::kF32;
    const std::int64_t step = fp16_vector_step();
    if (step > 0) {
      // ggml's F16 vectors hold fp16 lanes on this build: the first ⌊n/step⌋·step elements of
      // ggml_vec_dot_f16 are fp16 FMAs reduced in fp16 (vec.cpp:344-362), so Q·K accumulates in
      // fp16 once Dk ≥ step; ggml_vec_mad_f16 sets the weight vs into an fp16 vector
      // (GGML_F16x32_SET1, simd-mappings.h:488), so P is rounded to fp16 once Dv ≥ step.
      if (problem == nullptr || problem->qk_dim >= step) pr.score_dtype = impl::kF16;
      if (problem == nullptr || problem->v_dim >= step) pr.probability_dtype = impl::kF16;
    }
  }
  // F32 and BF16 V: VKQ32 in F32 (BF16 V widened by v_to_float first, 8527).
  return pr;
}

/// Everything one call reads and writes, checked.
struct Call {
  TensorArg q, k, v, mask, out;
  std::vector<std::int64_t> key_lengths;  // empty unless has_key_lengths
  std::vector<float> alibi_slopes;        // [Hq]; empty without ALiBi
  std::vector<float> sinks;               // [Hq]; empty without sinks
};

Call check_call(const attncheck_problem& p, const attncheck_attention_tensors& t, DLDataType input) {
  Call c;
  c.q = check_cpu_tensor(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {input});
  c.k = check_cpu_tensor(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {input});
  c.v = check_cpu_tensor(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {input});
  c.out = check_cpu_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "query heads", "query length", "value dim"},
                           {impl::kF32});
  if (p.mask_kind != kAttncheckMaskNone) {
    const std::initializer_list<std::string_view> dims{"batch", "heads", "query length", "key length"};
    const std::initializer_list<std::int64_t> shape{p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]};
    // An additive mask arrives in the declared mask dtype, F16 (backend.h, mask_dtype).
    c.mask = p.mask_kind == kAttncheckMaskBoolean ? check_cpu_tensor(t.mask, "mask", shape, dims, {impl::kU8})
                                                  : check_cpu_tensor(t.mask, "mask", shape, dims, {impl::kF16});
  } else if (t.mask != nullptr) {
    impl::invalid("mask: given, but problem.mask_kind is none");
  }
  c.key_lengths = impl::checked_key_lengths(p, t.key_lengths);
  c.alibi_slopes = impl::checked_alibi_slopes(p, impl::alibi_slopes_of(t), kDLCPU);
  c.sinks = impl::checked_sinks(p, impl::sinks_of(t), kDLCPU);
  return c;
}

/// A float with the 9 significant digits that tell any two floats apart.
std::string exact(float x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", static_cast<double>(x));
  return text;
}

/// ggml's slope of query head h for max_bias, computed as ops.cpp:8415-8438 computes it (float
/// powf; n_head_log2 the largest power of two not above Hq).
float ggml_alibi_slope(float max_bias, std::int64_t q_heads, std::int64_t h) {
  const auto n_head = static_cast<std::uint32_t>(q_heads);
  const std::uint32_t n_head_log2 = 1u << static_cast<std::uint32_t>(std::floor(std::log2(n_head)));
  const float m0 = std::pow(2.0f, -(max_bias) / static_cast<float>(n_head_log2));
  const float m1 = std::pow(2.0f, -(max_bias / 2.0f) / static_cast<float>(n_head_log2));
  const auto head = static_cast<std::uint32_t>(h);
  return head < n_head_log2 ? std::pow(m0, static_cast<float>(head + 1))
                            : std::pow(m1, static_cast<float>(2 * (head - n_head_log2) + 1));
}

/// The max_bias whose ggml slopes are exactly the problem's, or a decline: ggml takes the one
/// number and derives every head's slope from it, so only slopes of that closed form (Press et
/// al.'s, for max_bias 8) can be handed over. max_bias follows from head 0 (slope 2^(−max_bias/n));
/// every head is then compared bit for bit with what ggml will compute.
float max_bias_for(const attncheck_problem& p, const std::vector<float>& slopes) {
  const auto n_head_log2 = static_cast<double>(1u << static_cast<std::uint32_t>(std::floor(std::log2(p.q_heads))));
  const float max_bias = static_cast<float>(-std::log2(static_cast<double>(slopes[0])) * n_head_log2);
  if (!(max_bias > 0.0f))
    impl::unsupported("ALiBi slope " + exact(slopes[0]) + " of head 0 is not below 1: no positive max_bias gives it");
  for (std::int64_t h = 0; h < p.q_heads; ++h) {
    const float ggml = ggml_alibi_slope(max_bias, p.q_heads, h);
    if (ggml != slopes[static_cast<size_t>(h)])
      impl::unsupported("the ALiBi slopes are not ggml's max_bias family: head " + std::to_string(h) + " has " +
                        exact(slopes[static_cast<size_t>(h)]) + ", max_bias " + exact(max_bias) + " gives " + exact(ggml));
  }
  return max_bias;
}

/// An element of a suite tensor of dtype `d` as a float (f16 and bf16 widen exactly).
float read_float(const TensorArg& t, DLDataType d, std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) {
  if (impl::same_dtype(d, impl::kF16)) {
    ggml_fp16_t h;
    std::memcpy(&h, t.at<std::uint16_t>(i0, i1, i2, i3), sizeof h);
    return ggml_fp16_to_fp32(h);
  }
  if (impl::same_dtype(d, impl::kBF16)) {
    ggml_bf16_t h;
    std::memcpy(&h.bits, t.at<std::uint16_t>(i0, i1, i2, i3), sizeof h.bits);
    return ggml_bf16_to_fp32(h);
  }
  return *t.at<float>(i0, i1, i2, i3);
}

/// Copies the logical [B, H, L, D] tensor `src` into ggml's compact [D, L, H, B] tensor `dst`,
/// whose element order is the suite's compact row-major one, converting to dst's type: F32
/// (exact from every input dtype), or F16/BF16 (a copy when src already is that dtype, ggml's
/// round to nearest from float32 otherwise).
void copy_in(const TensorArg& src, DLDataType src_dtype, ggml_tensor* dst) {
  const std::int64_t B = src.shape[0], H = src.shape[1], L = src.shape[2], D = src.shape[3];
  std::vector<float> row(static_cast<size_t>(D));
  char* base = static_cast<char*>(dst->data);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t l = 0; l < L; ++l) {
        char* out = base + b * dst->nb[3] + h * dst->nb[2] + l * dst->nb[1];
        const bool same_16bit = (dst->type == GGML_TYPE_F16 && impl::same_dtype(src_dtype, impl::kF16)) ||
                                (dst->type == GGML_TYPE_BF16 && impl::same_dtype(src_dtype, impl::kBF16));
        if (same_16bit) {
          for (std::int64_t d = 0; d < D; ++d)
            std::memcpy(out + d * 2, src.at<std::uint16_t>(b, h, l, d), 2);
          continue;
        }
        for (std::int64_t d = 0; d < D; ++d) row[static_cast<size_t>(d)] = read_float(src, src_dtype, b, h, l, d);
        switch (dst->type) {
          case GGML_TYPE_F16: ggml_fp32_to_fp16_row(row.data(), reinterpret_cast<ggml_fp16_t*>(out), D); break;
          // The _ref conversion: plain round to nearest even. ggml_fp32_to_bf16_row flushes
          // subnormals on AVX512BF16 machines (ggml.c:497), a loss that would be the adapter's.
          case GGML_TYPE_BF16: ggml_fp32_to_bf16_row_ref(row.data(), reinterpret_cast<ggml_bf16_t*>(out), D); break;
          default: std::memcpy(out, row.data(), static_cast<size_t>(D) * sizeof(float)); break;
        }
      }
}

/// Whether the problem needs a mask tensor at all: ggml has no causal, window or key-length
/// option of its own, so each of them is written into the one additive mask.
bool needs_mask(const attncheck_problem& p) {
  return p.mask_kind != kAttncheckMaskNone || p.causal || p.window_left >= 0 || p.window_right >= 0 || p.has_key_lengths ||
         impl::alibi_of(p) != kAttncheckAlibiNone;
}

/// Fills ggml's F16 mask [Lk, Lq, Hm, Bm] (ne0 = key fastest; broadcast over heads by
/// iq2 % ne2 and over batches by iq3 % ne3, ops.cpp:8454): 0 or the additive bias for an allowed
/// key, -inf for a masked one, clause by clause from backend.h's attncheck_problem. With ALiBi an
/// allowed key holds −|j − p| instead, which ggml multiplies by the head's slope (ops.cpp:8472,
/// 8737), as llama.cpp fills its mask for ALiBi models; distances above 2048 would round in F16
/// and are declined.
void fill_mask(const attncheck_problem& p, const Call& c, ggml_tensor* mask) {
  const std::int64_t Lk = p.k_len, Lq = p.q_len, Hm = mask->ne[2], Bm = mask->ne[3];
  const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f);
  const ggml_fp16_t neg_inf = ggml_fp32_to_fp16(-std::numeric_limits<float>::infinity());
  const bool alibi = impl::alibi_of(p) != kAttncheckAlibiNone;
  for (std::int64_t b = 0; b < Bm; ++b) {
    const std::int64_t key_length = p.has_key_lengths ? c.key_lengths[static_cast<size_t>(b)] : Lk;
    const std::int64_t offset = impl::diagonal_offset(p, key_length);
    for (std::int64_t h = 0; h < Hm; ++h)
      for (std::int64_t i = 0; i < Lq; ++i) {
        auto* row = reinterpret_cast<ggml_fp16_t*>(static_cast<char*>(mask->data) + b * mask->nb[3] + h * mask->nb[2] +
                                                   i * mask->nb[1]);
        const std::int64_t diagonal = i + offset;
        const std::int64_t mb = p.mask_shape[0] == 1 ? 0 : b;
        const std::int64_t mh = p.mask_shape[1] == 1 ? 0 : h;
        const std::int64_t mi = p.mask_shape[2] == 1 ? 0 : i;
        for (std::int64_t j = 0; j < Lk; ++j) {
          bool allowed = j < key_length;
          allowed = allowed && !(p.causal && j > diagonal);
          allowed = allowed && !(p.window_left >= 0 && j < diagonal - p.window_left);
          allowed = allowed && !(p.window_right >= 0 && j > diagonal + p.window_right);
          ggml_fp16_t value = zero;
          if (allowed && alibi) {
            const std::int64_t distance = std::abs(j - diagonal);
            if (distance > kExactF16Distance)
              impl::unsupported("ALiBi distance " + std::to_string(distance) + " (key " + std::to_string(j) +
                                ", diagonal " + std::to_string(diagonal) + ") is not exact in ggml's F16 mask");
            value = ggml_fp32_to_fp16(-static_cast<float>(distance));
          }
          if (allowed && p.mask_kind != kAttncheckMaskNone) {
            if (j >= p.mask_shape[3]) {
              allowed = false;  // a short mask masks the keys it does not reach
            } else if (p.mask_kind == kAttncheckMaskBoolean) {
              allowed = *c.mask.at<std::uint8_t>(mb, mh, mi, j) != 0;
            } else {
              std::memcpy(&value, c.mask.at<std::uint16_t>(mb, mh, mi, j), sizeof value);  // already F16
            }
          }
          row[j] = allowed ? value : neg_inf;
        }
      }
  }
}

/// A ggml context over memory this adapter owns (ggml_init would abort if it could not allocate).
class Context {
 public:
  explicit Context(size_t bytes) : memory_(bytes) {
    ggml_init_params params{};
    params.mem_size = memory_.size();
    params.mem_buffer = memory_.data();
    params.no_alloc = false;
    ctx_ = ggml_init(params);
    if (ctx_ == nullptr) throw impl::AbiError(kAttncheckInternalError, "ggml_init failed");
  }
  ~Context() { ggml_free(ctx_); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ggml_context* get() const { return ctx_; }

 private:
  std::vector<std::uint8_t> memory_;
  ggml_context* ctx_ = nullptr;
};

void GgmlFlashAttn::forward(const attncheck_problem& p, const attncheck_attention_tensors& t) {
  impl::check_problem(p);
  const DLDataType input = t.q != nullptr ? t.q->dtype : impl::kF32;
  check_supported(p, input, t.q != nullptr ? t.q->device.device_type : kDLCPU);
  const Call c = check_call(p, t, input);
  if (t.lse != nullptr) impl::unsupported("ggml_flash_attn_ext does not return the log-sum-exp");

  const ggml_type kv_type = ggml_type_of(kv_);
  const std::int64_t B = p.batch, Hq = p.q_heads, Hkv = p.kv_heads, Lq = p.q_len, Lk = p.k_len;
  const std::int64_t Dk = p.qk_dim, Dv = p.v_dim;
  const bool masked = needs_mask(p);
  // The mask varies by head only when the problem's own mask does, by batch when the mask or
  // the key lengths (and with them the key-lengths alignment) do.
  const std::int64_t mask_heads = p.mask_kind != kAttncheckMaskNone ? p.mask_shape[1] : 1;
  const std::int64_t mask_batches = (p.mask_kind != kAttncheckMaskNone && p.mask_shape[0] != 1) || p.has_key_lengths ? B : 1;

  const size_t kv_size = ggml_type_size(kv_type);
  const size_t data_bytes = static_cast<size_t>(B * Hq * Lq * Dk) * sizeof(float) +
                            static_cast<size_t>(B * Hkv * Lk * (Dk + Dv)) * kv_size +
                            (masked ? static_cast<size_t>(Lk * Lq * mask_heads * mask_batches) * sizeof(ggml_fp16_t) : 0) +
                            static_cast<size_t>(B * Hq * Lq * Dv) * sizeof(float) + static_cast<size_t>(Hq) * sizeof(float);
  Context ctx(data_bytes + 6 * (ggml_tensor_overhead() + GGML_MEM_ALIGN) + ggml_graph_overhead() + GGML_MEM_ALIGN);

  // ggml_flash_attn_ext's layouts (ggml.h): q [Dk, Lq, Hq, B], k [Dk, Lk, Hkv, B],
  // v [Dv, Lk, Hkv, B] (not transposed), mask [Lk, Lq, Hm, Bm].
  ggml_tensor* q = ggml_new_tensor_4d(ctx.get(), GGML_TYPE_F32, Dk, Lq, Hq, B);
  ggml_tensor* k = ggml_new_tensor_4d(ctx.get(), kv_type, Dk, Lk, Hkv, B);
  ggml_tensor* v = ggml_new_tensor_4d(ctx.get(), kv_type, Dv, Lk, Hkv, B);
  ggml_tensor* mask = masked ? ggml_new_tensor_4d(ctx.get(), GGML_TYPE_F16, Lk, Lq, mask_heads, mask_batches) : nullptr;
  copy_in(c.q, input, q);
  copy_in(c.k, input, k);
  copy_in(c.v, input, v);
  // max_bias 0 is ggml's "no ALiBi" (every slope 1, ops.cpp:8438).
  const float max_bias = c.alibi_slopes.empty() ? 0.0f : max_bias_for(p, c.alibi_slopes);
  if (mask != nullptr) fill_mask(p, c, mask);

  // scale and softcap as floats, as ggml keeps its op parameters.
  ggml_tensor* out = ggml_flash_attn_ext(ctx.get(), q, k, v, mask, static_cast<float>(p.scale), max_bias,
                                         static_cast<float>(p.softcap));
  if (request_f32_) ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32);
  if (!c.sinks.empty()) {
    // F32 [Hq], one logit per query head (ggml.c ggml_flash_attn_ext_add_sinks asserts both).
    ggml_tensor* sinks = ggml_new_tensor_1d(ctx.get(), GGML_TYPE_F32, Hq);
    std::memcpy(sinks->data, c.sinks.data(), c.sinks.size() * sizeof(float));
    ggml_flash_attn_ext_add_sinks(out, sinks);
  }
  ggml_cgraph* graph = ggml_new_graph(ctx.get());
  ggml_build_forward_expand(graph, out);

  ggml_cplan plan = ggml_graph_plan(graph, kThreads, nullptr);
  std::vector<std::uint8_t> work(plan.work_size);
  plan.work_data = work.empty() ? nullptr : work.data();
  const ggml_status status = ggml_graph_compute(graph, &plan);
  if (status != GGML_STATUS_SUCCESS)
    throw impl::AbiError(kAttncheckInternalError, std::string("ggml_graph_compute: ") + ggml_status_to_string(status));

  // The result is permuted: [Dv, Hq, Lq, B] (ggml.h), F32 and compact.
  const char* result = static_cast<const char*>(out->data);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < Hq; ++h)
      for (std::int64_t i = 0; i < Lq; ++i) {
        const auto* row = reinterpret_cast<const float*>(result + b * out->nb[3] + i * out->nb[2] + h * out->nb[1]);
        for (std::int64_t d = 0; d < Dv; ++d) *c.out.mut<float>(b, h, i, d) = row[d];
      }
}

}  // namespace
}  // namespace attncheck::ggml_fa

extern "C" attncheck_backend* attncheck_ggml_fa_f32kv_entry(void) {
  return attncheck::impl::make_backend_table<attncheck::ggml_fa::GgmlFlashAttn>(
      "ggml-fa-f32kv", "ggml_flash_attn_ext (ggml 0.15.3 CPU), F32 K/V", attncheck::ggml_fa::KvType::F32, false);
}

extern "C" attncheck_backend* attncheck_ggml_fa_f16kv_entry(void) {
  return attncheck::impl::make_backend_table<attncheck::ggml_fa::GgmlFlashAttn>(
      "ggml-fa-f16kv", "ggml_flash_attn_ext (ggml 0.15.3 CPU), F16 K/V, default precision",
      attncheck::ggml_fa::KvType::F16, false);
}

extern "C" attncheck_backend* attncheck_ggml_fa_f16kv_prec_f32_entry(void) {
  return attncheck::impl::make_backend_table<attncheck::ggml_fa::GgmlFlashAttn>(
      "ggml-fa-f16kv-prec-f32", "ggml_flash_attn_ext (ggml 0.15.3 CPU), F16 K/V, GGML_PREC_F32",
      attncheck::ggml_fa::KvType::F16, true);
}

extern "C" attncheck_backend* attncheck_ggml_fa_bf16kv_entry(void) {
  return attncheck::impl::make_backend_table<attncheck::ggml_fa::GgmlFlashAttn>(
      "ggml-fa-bf16kv", "ggml_flash_attn_ext (ggml 0.15.3 CPU), BF16 K/V", attncheck::ggml_fa::KvType::BF16, false);
}
