/// \file torch_adapters.cpp
/// \brief Adapters for PyTorch's CPU attention (torch 2.15.0, libtorch_cpu), one per entry point:
///   torch-sdpa       at::scaled_dot_product_attention, the public op (its CPU dispatch picks the
///                    flash CPU kernel or the math path; get_problem_profile says which);
///   torch-flash-cpu  at::_scaled_dot_product_flash_attention_for_cpu, the flash CPU kernel, which
///                    also returns the log-sum-exp;
///   torch-math       at::_scaled_dot_product_attention_math, the composite math path.
/// The suite's tensors are wrapped without a copy (at::from_blob with their strides); what torch
/// has no option for (causal alignments other than top-left, windows, key lengths, a mask shorter
/// than Lk) becomes a mask in the format the entry point takes. The backward pass (ABI 2.2) runs
/// the same forward on Q, K, V that require grad and asks torch's autograd for their gradients
/// given dO. README.md here says what each adapter declines, the profiles it declares and where in
/// torch's source each number comes from.
#include <ATen/ATen.h>
#include <ATen/ops/_scaled_dot_product_attention_math.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attncheck/backend_impl.h"

namespace attncheck::torch_adapters {
namespace {

using impl::same_dtype;

enum class Entry { Sdpa, FlashCpu, Math };

/// The torch scalar type of a suite dtype; nullopt for one no adapter takes.
std::optional<at::ScalarType> scalar_type_of(DLDataType d) {
  if (same_dtype(d, impl::kF32)) return at::kFloat;
  if (same_dtype(d, impl::kF16)) return at::kHalf;
  if (same_dtype(d, impl::kBF16)) return at::kBFloat16;
  return std::nullopt;
}

/// The suite dtype of one of the three torch types scalar_type_of gives.
DLDataType dtype_of(at::ScalarType type) {
  return type == at::kHalf ? impl::kF16 : type == at::kBFloat16 ? impl::kBF16 : impl::kF32;
}

/// A view of a DLTensor's memory with every stride made non-negative, and the dimensions that
/// were stored backwards (torch refuses negative strides: from_blob's stride check). Such a
/// dimension is addressed from its last element forwards, so the view holds it reversed.
struct ForwardView {
  at::Tensor view;
  std::vector<std::int64_t> reversed;
};

ForwardView forward_view(const DLTensor& t, at::ScalarType type) {
  std::vector<std::int64_t> sizes(t.shape, t.shape + t.ndim);
  std::vector<std::int64_t> strides(static_cast<size_t>(t.ndim));
  std::int64_t compact = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    strides[d] = t.strides != nullptr ? t.strides[d] : compact;
    compact *= t.shape[d];
  }
  const std::int64_t element = static_cast<std::int64_t>(c10::elementSize(type));
  char* base = static_cast<char*>(t.data) + t.byte_offset;
  ForwardView f;
  for (int d = 0; d < t.ndim; ++d) {
    if (strides[d] >= 0) continue;
    if (sizes[d] > 0) base += (sizes[d] - 1) * strides[d] * element;
    strides[d] = -strides[d];
    f.reversed.push_back(d);
  }
  f.view = at::from_blob(base, sizes, strides, at::TensorOptions().dtype(type).device(at::kCPU));
  return f;
}

/// A tensor over a DLTensor's memory, no copy, with its strides; a dimension stored backwards is
/// flipped back: a copy, the only one this makes of an input.
at::Tensor wrap(const DLTensor& t, at::ScalarType type) {
  ForwardView f = forward_view(t, type);
  return f.reversed.empty() ? f.view : f.view.flip(f.reversed);
}

/// Writes `value` into the suite's tensor `t`, in its memory (wrap()'s tensor of a
/// backwards-stored dimension is a copy, so the write goes through the forward view, `value`
/// flipped to match).
void write_into(const DLTensor& t, at::ScalarType type, const at::Tensor& value) {
  ForwardView f = forward_view(t, type);
  f.view.copy_(f.reversed.empty() ? value : value.flip(f.reversed));
}

/// The mask handed to torch (if any) and whether torch's own is_causal does the causal part.
struct Masking {
  std::optional<at::Tensor> mask;
  bool is_causal = false;
};

/// Whether the problem's causal diagonal is the top-left one torch's is_causal means (query i
/// sees keys j <= i: attention.cpp, math path, `at::ones({L, S}).tril()`).
bool causal_is_top_left(const attncheck_problem& p) {
  switch (p.alignment) {
    case kAttncheckAlignTopLeft: return true;
    case kAttncheckAlignBottomRight: return p.k_len == p.q_len;
    case kAttncheckAlignOffset: return p.diagonal_offset == 0;
    default: return false;  // key lengths: per batch, through the mask
  }
}

/// Builds what torch is given for the problem's masking. `additive_only`: the entry point reads
/// only a floating mask (the flash CPU kernel: attention.cpp, "Attention mask is the same data
/// type as query"). `causal_with_mask`: it accepts is_causal beside a mask (the flash CPU kernel
/// does; the public op and the math path refuse it: "Explicit attn_mask should not be set when
/// is_causal=True"). `bias_leaf`, when not NULL, receives the problem's additive mask as a tensor
/// of its own shape that requires grad, from which the handed-on mask is built, so that autograd
/// gives the mask's gradient summed over the axes it broadcasts along (expand's backward).
///
/// `sinks` (one logit per query head, ABI 2.3), when not empty: torch has no sink input, so the
/// sink is one more key, appended by the caller with K = V = 0, whose additive bias is the sink
/// logit: its score is 0·scale + sinks[h] and its value 0, backend.h's sink exactly. The mask is
/// then additive with one more column, [mb, Hq, Lq, Lk + 1], and causal goes into it (torch's
/// top-left is_causal on Lk + 1 keys would hide the appended key from every row i < Lk).
Masking build_masking(const attncheck_problem& p, const DLTensor* mask, const DLTensor* key_lengths_tensor,
                      const DLTensor* alibi_slopes, at::ScalarType type, bool additive_only, bool causal_with_mask,
                      at::Tensor* bias_leaf = nullptr, const std::vector<float>& sinks = {}) {
  const bool windowed = p.window_left >= 0 || p.window_right >= 0;
  const bool top_left = causal_is_top_left(p);
  const bool has_mask = p.mask_kind != kAttncheckMaskNone;
  const bool short_mask = has_mask && p.mask_shape[3] < p.k_len;
  const std::vector<float> slopes = impl::checked_alibi_slopes(p, alibi_slopes, kDLCPU);
  const bool alibi = !slopes.empty();
  const bool sink_key = !sinks.empty();
  const bool structural = p.has_key_lengths || windowed || (p.causal && !top_left) || alibi || sink_key;
  Masking m;
  // Native is_causal where torch can express the diagonal and nothing else must be combined with it.
  const bool native_causal = p.causal && top_left && !sink_key && (causal_with_mask || (!has_mask && !structural));
  m.is_causal = native_causal;
  const bool causal_in_mask = p.causal && !native_causal;
  if (!has_mask && !structural && !causal_in_mask) return m;

  // allowed[b, h, i, j]: the keys the problem's structure leaves, then the problem's own mask.
  const std::int64_t mb = (p.has_key_lengths || (has_mask && p.mask_shape[0] == p.batch) ||
                           impl::alibi_of(p) == kAttncheckAlibiPerBatchHead)
                              ? p.batch
                              : 1;
  const std::int64_t mh = alibi || sink_key ? p.q_heads : has_mask ? p.mask_shape[1] : 1;
  const auto bool_options = at::TensorOptions().dtype(at::kBool);
  at::Tensor allowed = at::ones({mb, mh, p.q_len, p.k_len}, bool_options);
  const std::vector<std::int64_t> key_lengths = impl::checked_key_lengths(p, key_lengths_tensor);
  const at::Tensor rows = at::arange(p.q_len, at::TensorOptions().dtype(at::kLong)).unsqueeze(1);  // i, [Lq, 1]
  const at::Tensor keys = at::arange(p.k_len, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);  // j, [1, Lk]
  for (std::int64_t b = 0; b < mb; ++b) {
    const std::int64_t length = p.has_key_lengths ? key_lengths[b] : p.k_len;
    const at::Tensor diagonal = rows + impl::diagonal_offset(p, length);  // p = i + offset(b)
    at::Tensor keep = at::ones({p.q_len, p.k_len}, bool_options);
    if (p.has_key_lengths) keep &= keys < length;
    if (causal_in_mask) keep &= keys <= diagonal;
    if (p.window_left >= 0) keep &= keys >= diagonal - p.window_left;
    if (p.window_right >= 0) keep &= keys <= diagonal + p.window_right;
    allowed[b] &= keep;  // broadcast over the mask's heads
  }

  std::optional<at::Tensor> bias;  // the problem's additive mask, padded to Lk, in the input dtype
  if (has_mask) {
    const std::initializer_list<std::int64_t> shape{p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]};
    const std::initializer_list<std::string_view> dims{"batch", "heads", "query length", "key length"};
    const std::int64_t lkm = p.mask_shape[3];
    if (p.mask_kind == kAttncheckMaskBoolean) {
      impl::check_cpu_tensor(mask, "mask", shape, dims, {impl::kU8});
      const at::Tensor given = wrap(*mask, at::kByte).ne(0);
      allowed.narrow(3, 0, lkm) &= given.expand({mb, mh, p.q_len, lkm});
      if (short_mask) allowed.narrow(3, lkm, p.k_len - lkm).fill_(false);  // keys the mask does not reach
    } else {
      impl::check_cpu_tensor(mask, "mask", shape, dims, {dtype_of(type)});
      at::Tensor given = wrap(*mask, type);
      if (bias_leaf != nullptr) {
        given = given.detach().requires_grad_(true);  // a leaf over the suite's memory; autograd only reads it
        *bias_leaf = given;
      }
      at::Tensor full = at::zeros({mb, mh, p.q_len, p.k_len}, at::TensorOptions().dtype(type));
      full.narrow(3, 0, lkm).copy_(given.expand({mb, mh, p.q_len, lkm}));
      if (short_mask) allowed.narrow(3, lkm, p.k_len - lkm).fill_(false);  // keys the mask does not reach
      bias = std::move(full);
    }
  } else if (mask != nullptr) {
    impl::invalid("mask: given, but problem.mask_kind is none");
  }

  // Torch's documented mask formats (torch.nn.functional.scaled_dot_product_attention): a bool
  // mask, true = take part, or a float mask added to the scores. A bool problem mask is handed on
  // as bool where the entry point takes one; everything else is a 0 / -inf bias in the input dtype.
  if (!bias && !additive_only && !sink_key && p.mask_kind == kAttncheckMaskBoolean) {
    m.mask = allowed.contiguous();
    return m;
  }
  at::Tensor additive = bias ? *bias : at::zeros({mb, mh, p.q_len, p.k_len}, at::TensorOptions().dtype(type));
  if (alibi) {
    // ALiBi as torch users write it, into the additive mask: −slope·|j − p(b, i)| (backend.h), in
    // double and added to the problem's bias before the one rounding to the input dtype (float32
    // only: check_supported), so the bias torch adds is the exact one rounded once.
    const auto doubles = at::TensorOptions().dtype(at::kDouble);
    at::Tensor distances = at::empty({mb, 1, p.q_len, p.k_len}, doubles);
    for (std::int64_t b = 0; b < mb; ++b) {
      const std::int64_t length = p.has_key_lengths ? key_lengths[b] : p.k_len;
      distances[b][0] = (keys - (rows + impl::diagonal_offset(p, length))).abs().to(at::kDouble);
    }
    at::Tensor slope = at::empty({mb, p.q_heads, 1, 1}, doubles);
    for (std::int64_t b = 0; b < mb; ++b)
      for (std::int64_t h = 0; h < p.q_heads; ++h) slope[b][h] = static_cast<double>(impl::alibi_slope_at(p, slopes, b, h));
    additive = (additive.to(at::kDouble) - slope * distances).to(type);
  }
  additive.masked_fill_(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  if (sink_key) {
    // The sink column: sinks[h] in every row of head h (f32 inputs only, check_supported, so the
    // logit is handed over exactly); -inf, no sink, masks the appended key.
    at::Tensor column = at::empty({mb, p.q_heads, p.q_len, 1}, at::TensorOptions().dtype(type));
    for (std::int64_t h = 0; h < p.q_heads; ++h) column.select(1, h).fill_(static_cast<double>(sinks[static_cast<size_t>(h)]));
    additive = at::cat({additive, column}, 3);
  }
  m.mask = additive.contiguous();
  return m;
}

/// Numbers of the flash CPU kernel (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp, torch
/// 2.15.0 source; not in the wheel): keys are processed in kvSplitSize = 512 blocks
/// (flash_attention_kernel_impl: cpu_flash_attention<..., qSplit, 512> for every q length), with
/// the online-softmax rescale between blocks; Q.K^T and P.V run through cpublas::gemm into an
/// accum_t = opmath_type (float) buffer; for Half/BFloat16 the exp'd weights are stored in the
/// input dtype (qk_reduced_data) before P.V, and the row sum is accumulated in float from the
/// unrounded weights (_exp_reduce_sum_fusion_kernel). Fully masked rows: the kernel writes O = 0
/// and lse = 0 (measured with a -inf bias row; README.md).
constexpr std::int32_t kFlashKvSplit = 512;

attncheck_numerics_profile flash_profile(DLDataType input) {
  attncheck_numerics_profile pr{};
  const bool reduced = !same_dtype(input, impl::kF32);
  pr.input_dtype = input;
  pr.score_dtype = impl::kF32;                         // qk_data is accum_t
  pr.probability_dtype = reduced ? input : impl::kF32;  // qk_reduced_data for Half/BFloat16
  pr.accumulator_dtype = impl::kF32;                   // dst_data is accum_t
  pr.output_dtype = input;                             // out is written in the query's dtype
  pr.accumulation_rounding = kAttncheckRoundNearest;
  pr.products_per_rounding = 1;  // gemm with FMA: each product rounded into its sum
  pr.softmax_block = kFlashKvSplit;
  pr.deterministic = 1;          // one thread per (batch, head, q block); fixed order inside
  pr.empty_row = kAttncheckEmptyRowZeros;
  pr.flushes_subnormals = 0;
  pr.accepts_strides = 1;
  pr.writes_lse = 1;
  // exp in _exp_reduce_sum_fusion_kernel: the vectorised body calls exp_u20 for float and
  // fexp_u20 for Half/BFloat16; the tail of a row shorter than a vector uses std::exp
  // (FlashAttentionKernel.cpp). Both vector functions are in the wheel, in
  // ATen/cpu/vec/vec512/vec512_float.h: exp_u20, "a faster version of exp with ULP=20", declared
  // as 20 ulp = 20 * 2^-23 relative; fexp_u20, a degree-3 polynomial for 2^frac whose result is
  // built from truncated exponent bits (Malossi et al.). fexp_u20's formula, evaluated lane by
  // lane in float for every float in [-87, 0], errs by at most 1.125e-4 relative (at x = -24.95;
  // exp(0) comes out 0.99994659, as the op's lse shows: README.md), declared as 1.2e-4.
  pr.exp_relative_error = reduced ? 1.2e-4 : 20 * 0x1p-23;
  pr.tanh_relative_error = 0;  // softcap is declined
  pr.row_sum_dtype = impl::kF32;
  pr.kv_splits = 0;
  pr.empty_row_lse = kAttncheckEmptyRowLseZero;
  // Masked keys enter the gemms with weight exp(-inf) = 0: NaN stored at a masked key reaches O
  // (measured: NaN in a masked K or V row makes the row NaN).
  pr.masked_keys_weighted_by_zero = 1;
  return pr;
}

/// The math path (aten/src/ATen/native/transformers/attention.cpp, _scaled_dot_product_attention_math,
/// torch 2.15.0 source): Half/BFloat16 q, k, v are converted to float first ("Keep query, key,
/// value in high precision for accuracy"); q and k are each multiplied by sqrt(scale) (two extra
/// float roundings of the operands, inside the score bound's fp32 slack); scores = matmul in float;
/// the mask is added; at::_safe_softmax (float, three-pass, vectorised Sleef_expf16_u10: 1 ulp)
/// gives 0 for a row with no finite score; P.V = matmul in float; the result is converted back to
/// the input dtype.
attncheck_numerics_profile math_profile(DLDataType input) {
  attncheck_numerics_profile pr{};
  pr.input_dtype = input;
  pr.score_dtype = impl::kF32;
  pr.probability_dtype = impl::kF32;
  pr.accumulator_dtype = impl::kF32;
  pr.output_dtype = input;
  pr.accumulation_rounding = kAttncheckRoundNearest;
  pr.products_per_rounding = 1;
  pr.softmax_block = 0;  // softmax over the whole row
  pr.deterministic = 1;
  pr.empty_row = kAttncheckEmptyRowZeros;  // _safe_softmax
  pr.flushes_subnormals = 0;
  pr.accepts_strides = 1;
  pr.writes_lse = 0;  // neither the public op nor the math entry returns the log-sum-exp
  pr.exp_relative_error = 0x1p-23;  // Sleef_expf16_u10 (vec512_float.h, Vectorized<float>::exp)
  pr.tanh_relative_error = 0;
  pr.empty_row_lse = kAttncheckEmptyRowLseUnspecified;
  pr.masked_keys_weighted_by_zero = 1;  // softmax weight 0 times a NaN value is NaN (measured)
  return pr;
}

/// Whether the public op's CPU dispatch takes the flash kernel for this problem
/// (sdp_utils_cpp.cpp, use_flash_attention_cpp, in the wheel as ATen/native/transformers/sdp_utils_cpp.h
/// checks): equal head sizes (check_head_dim_size_cpp) and a last-dimension stride of 1
/// (check_last_dim_stride_equals_1_dense), which forward guarantees; otherwise the math path.
/// Measured with at::_fused_sdp_choice: flash (1) for Dk = Dv, math (0) for Dk != Dv or a strided
/// last dimension.
bool sdpa_takes_flash(const attncheck_problem& p) { return p.qk_dim == p.v_dim; }

/// The public op: the flash kernel's or the math path's arithmetic, without the log-sum-exp (the op
/// returns the output only).
attncheck_numerics_profile sdpa_profile(DLDataType input, bool flash) {
  attncheck_numerics_profile pr = flash ? flash_profile(input) : math_profile(input);
  pr.writes_lse = 0;
  pr.empty_row_lse = kAttncheckEmptyRowLseUnspecified;
  return pr;
}

// --- The backward pass ------------------------------------------------------------------------------
//
// Torch computes the gradients itself, from its own forward: the adapter runs the forward it runs
// in forward() on Q, K, V that require grad and calls torch::autograd::grad with dO. The O and lse
// the suite hands to backward are therefore not read (backend.h allows a backward pass to use its
// own), and no entry point takes a dlse: the flash kernel's lse is not a differentiable output
// (its autograd node's only input gradient is dO: _scaled_dot_product_flash_attention_for_cpu_backward
// takes grad_out alone, and the lse of a forward on tensors that require grad has requires_grad
// false, measured), and the other two entries return no lse.

/// The flash CPU kernel's backward (FlashAttentionKernel.cpp, cpu_flash_attention_backward, and
/// attention.cpp, _scaled_dot_product_flash_attention_cpu_backward, in the torch source; neither
/// is in the wheel). One task per (batch, query head) runs over query blocks of qSplitSize rows and
/// key blocks of kvSplitSize = 512: P = exp(scale q·k + mask − lse) from the forward's lse in
/// accum_t (float), for Half/BFloat16 stored in the input dtype (attn_reduced_data) before
/// dV += Pᵀ dO; dP = dO Vᵀ in float (grad_attn_data); dS = P (dP − D) with D = rowsum(dO ∘ O) in
/// float, for Half/BFloat16 stored in the input dtype (grad_attn_reduced_data) before dQ += σ dS K
/// and dK += σ dSᵀ Q. The three gradients are allocated in the input dtype (at::zeros(...,
/// query.options())) and every block's product is added into them by cpublas::gemm with beta = 1,
/// so for Half/BFloat16 each tile sum is rounded to the input dtype: dQ adds ceil(Lk / 512) of
/// them, dK and dV ceil(Lq / qSplitSize), qSplitSize being 256 from Lq = 768, 64 from Lq = 192,
/// 32 below (flash_attention_backward_kernel_impl). A GQA group's query heads are summed into the
/// same input-dtype dK and dV (the source at hand reads kv head = query head; how 2.15 maps a group
/// is not in the wheel, so the sum is declared in the input dtype, which covers either way).
/// Deterministic: the tasks write disjoint rows, no atomics, fixed loop order (measured: bitwise
/// equal gradients over repeats, thread counts 1 and 2 and shifted input addresses, GQA included;
/// README.md).
attncheck_backward_profile flash_backward_profile(const attncheck_problem& p, DLDataType input) {
  attncheck_backward_profile pr{};
  const bool reduced = !same_dtype(input, impl::kF32);
  pr.gradient_dtype = input;
  pr.probability_dtype = reduced ? input : impl::kF32;
  pr.dp_dtype = impl::kF32;
  pr.ds_dtype = reduced ? input : impl::kF32;
  pr.accumulator_dtype = input;  // grad_q, grad_k, grad_v are input-dtype tensors gemm adds into
  pr.group_sum_dtype = input;
  pr.query_block = p.q_len >= 768 ? 256 : p.q_len >= 192 ? 64 : 32;
  pr.key_block = kFlashKvSplit;
  pr.recomputes_from_lse = 1;
  pr.dq_atomic = 0;
  pr.deterministic = 1;
  pr.accepts_dlse = 0;
  pr.writes_dbias = 0;  // "not differentiable with respect to argument 'attn_mask'" (measured)
  return pr;
}

/// The math path's backward is autograd through its composite forward (attention.cpp,
/// _scaled_dot_product_attention_math): Half/BFloat16 operands are converted to float first, so P
/// (the saved softmax output), dP = dO Vᵀ, dS (softmax's backward) and the three matmul gradients
/// are float32, each one matmul over the whole row (no tiles the declaration could name), and the
/// gradients are converted back to the input dtype by the conversion's backward. GQA repeats K
/// and V (repeat_interleave) and its backward sums a group's heads; whether that sum runs before or
/// after the conversion to the input dtype is not in the wheel, so it is declared in the input
/// dtype, which covers either order. P is the forward's softmax, not recomputed from the lse. The
/// additive mask is added to the scores, so its gradient is dS, which autograd sums over the
/// axes the mask broadcasts along. Deterministic at a given intra-op thread count: measured
/// bitwise equal over repeats and shifted input addresses; between 1 and 2 threads the matmuls'
/// bits differ (by 3e-8 here), so a thread count is part of the conditions (README.md).
attncheck_backward_profile math_backward_profile(DLDataType input) {
  attncheck_backward_profile pr{};
  pr.gradient_dtype = input;
  pr.probability_dtype = impl::kF32;
  pr.dp_dtype = impl::kF32;
  pr.ds_dtype = impl::kF32;
  pr.accumulator_dtype = impl::kF32;
  pr.group_sum_dtype = input;
  pr.query_block = 0;
  pr.key_block = 0;
  pr.recomputes_from_lse = 0;
  pr.dq_atomic = 0;
  pr.deterministic = 1;
  pr.accepts_dlse = 0;
  pr.writes_dbias = 1;
  return pr;
}

/// What one forward gives: O and, from the flash entry, the lse.
struct ForwardOutputs {
  at::Tensor out;
  std::optional<at::Tensor> lse;
};

class TorchAdapter final : public impl::BackendImpl {
 public:
  explicit TorchAdapter(Entry entry) : entry_(entry) {}

  attncheck_numerics_profile profile(DLDataType input) const override {
    check_dtype(input);
    return entry_ == Entry::FlashCpu ? flash_profile(input) : entry_ == Entry::Math ? math_profile(input) : sdpa_profile(input, true);
  }
  bool has_problem_profiles() const override { return entry_ == Entry::Sdpa; }
  attncheck_numerics_profile problem_profile(const attncheck_problem& problem, DLDataType input) const override {
    check_dtype(input);
    return sdpa_profile(input, sdpa_takes_flash(problem));
  }

  void check_supported(const attncheck_problem& p, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(p);
    check_dtype(input);
    if (device != kDLCPU) impl::unsupported("the torch adapters call libtorch_cpu and read host memory only");
    if (p.softcap > 0)
      impl::unsupported("torch's scaled_dot_product_attention has no softcap option, and a cap cannot be expressed as a mask");
    if (entry_ == Entry::FlashCpu && p.qk_dim != p.v_dim)
      impl::unsupported("the flash CPU kernel needs Dk = Dv (attention.cpp: \"Q/K/V should have the same head size\")");
    // No ALiBi option: the bias goes into the mask, which torch takes in the input dtype only
    // (float or bool); in f16 or bf16 the bias would be rounded by the adapter, not by torch.
    if (impl::alibi_of(p) != kAttncheckAlibiNone && !impl::same_dtype(input, impl::kF32))
      impl::unsupported("torch has no ALiBi option and takes a float mask in the input dtype only: the adapter would round "
                        "the ALiBi bias to " + impl::dtype_string(input));
    if (impl::has_sinks(p) && !impl::same_dtype(input, impl::kF32))
      impl::unsupported("torch has no sink input: the sink is an extra key whose bias, in a float mask of the input dtype, "
                        "the adapter would round to " + impl::dtype_string(input));
  }

  /// ALiBi through the additive mask, sinks as one extra zero key biased by the sink logit
  /// (build_masking). The backward takes ALiBi only: the extra key's gradients are not the ABI's.
  std::uint32_t options() const override { return impl::kOptionAlibi | impl::kOptionSinks; }
  std::uint32_t backward_options() const override { return impl::kOptionAlibi; }

  void forward(const attncheck_problem& p, const attncheck_attention_tensors& t) override {
    const at::ScalarType type = checked_inputs(p, t.q, t.k, t.v);
    const DLDataType dt = t.q->dtype;
    impl::check_cpu_tensor(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "query heads", "query length", "value dim"}, {dt});
    if (t.lse != nullptr)
      impl::check_cpu_tensor(t.lse, "lse", {p.batch, p.q_heads, p.q_len}, {"batch", "query heads", "query length"}, {impl::kF32});
    try {
      const std::vector<float> sinks = impl::checked_sinks(p, impl::sinks_of(t), kDLCPU);
      at::Tensor k = wrap(*t.k, type), v = wrap(*t.v, type);
      if (!sinks.empty()) {
        // The sink's key: K = V = 0 appended to every kv head (build_masking gives its bias).
        k = at::cat({k, at::zeros({p.batch, p.kv_heads, 1, p.qk_dim}, k.options())}, 2);
        v = at::cat({v, at::zeros({p.batch, p.kv_heads, 1, p.v_dim}, v.options())}, 2);
      }
      const ForwardOutputs f = run(p, wrap(*t.q, type), k, v, t.mask, t.key_lengths, impl::alibi_slopes_of(t), type, nullptr, sinks);
      write_into(*t.out, type, f.out);
      if (t.lse != nullptr && f.lse) write_into(*t.lse, at::kFloat, *f.lse);
    } catch (const c10::Error& e) {
      // Torch's own refusal of an argument: say it in its words, not as a crash.
      impl::invalid(std::string("torch: ") + e.what_without_backtrace());
    }
  }

  bool has_backward() const override { return true; }
  attncheck_backward_profile backward_profile(const attncheck_problem& p, DLDataType input) const override {
    check_supported(p, input, kDLCPU);
    // torch-sdpa's backward follows the path its forward took. Its mask never requires grad: a
    // mask that does makes the op's CPU dispatch leave the flash kernel for the math path
    // (at::_fused_sdp_choice: 0 for a mask that requires grad, 1 otherwise, measured), and
    // torch-math is the adapter for that path's mask gradient.
    const bool flash = entry_ == Entry::FlashCpu || (entry_ == Entry::Sdpa && sdpa_takes_flash(p));
    attncheck_backward_profile pr = flash ? flash_backward_profile(p, input) : math_backward_profile(input);
    if (entry_ == Entry::Sdpa) pr.writes_dbias = 0;
    return pr;
  }

  void backward(const attncheck_problem& p, const attncheck_backward_tensors& t) override {
    const at::ScalarType type = checked_inputs(p, t.q, t.k, t.v);
    const DLDataType dt = t.q->dtype;
    const std::initializer_list<std::string_view> q_dims{"batch", "query heads", "query length", "head dim"};
    const std::initializer_list<std::string_view> kv_dims{"batch", "kv heads", "key length", "head dim"};
    const std::initializer_list<std::string_view> o_dims{"batch", "query heads", "query length", "value dim"};
    impl::check_cpu_tensor(t.dout, "dout", {p.batch, p.q_heads, p.q_len, p.v_dim}, o_dims, {dt});
    impl::check_cpu_tensor(t.dq, "dq", {p.batch, p.q_heads, p.q_len, p.qk_dim}, q_dims, {dt});
    impl::check_cpu_tensor(t.dk, "dk", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, kv_dims, {dt});
    impl::check_cpu_tensor(t.dv, "dv", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {dt});
    if (t.dlse != nullptr)
      impl::invalid("dlse: given, but no torch entry point has a differentiable lse (the backward profile says accepts_dlse = 0)");
    const bool want_bias = t.dbias != nullptr;
    if (want_bias) {
      if (p.mask_kind != kAttncheckMaskAdditive) impl::invalid("dbias: given, but the problem has no additive mask");
      if (!backward_profile(p, dt).writes_dbias)
        impl::invalid("dbias: given, but this entry point gives no mask gradient (the backward profile says writes_dbias = 0)");
      impl::check_cpu_tensor(t.dbias, "dbias", {p.mask_shape[0], p.mask_shape[1], p.mask_shape[2], p.mask_shape[3]},
                             {"batch", "heads", "query length", "key length"}, {dt});
    }
    try {
      // Leaves over the suite's memory (detach: a backwards-stored dimension's wrap is a flipped
      // copy, not a leaf); autograd reads them and never writes them.
      at::Tensor q = wrap(*t.q, type).detach().requires_grad_(true);
      at::Tensor k = wrap(*t.k, type).detach().requires_grad_(true);
      at::Tensor v = wrap(*t.v, type).detach().requires_grad_(true);
      at::Tensor bias;
      const ForwardOutputs f = run(p, q, k, v, t.mask, t.key_lengths, impl::alibi_slopes_of(t), type, want_bias ? &bias : nullptr);
      std::vector<at::Tensor> leaves{q, k, v};
      if (want_bias) leaves.push_back(bias);
      // allow_unused: with every key of every row masked the mask's leaf takes no part in O.
      const std::vector<at::Tensor> grads =
          torch::autograd::grad({f.out}, leaves, {wrap(*t.dout, type)}, /*retain_graph=*/false, /*create_graph=*/false,
                                /*allow_unused=*/true);
      const char* names[] = {"dq", "dk", "dv", "dbias"};
      DLTensor* targets[] = {t.dq, t.dk, t.dv, t.dbias};
      for (size_t i = 0; i < leaves.size(); ++i) {
        const at::Tensor& g = grads[i];
        if (g.defined() && g.scalar_type() != type)
          impl::invalid(std::string(names[i]) + ": torch's gradient is " + std::string(c10::toString(g.scalar_type())) +
                        ", expected the input dtype " + std::string(c10::toString(type)));
        write_into(*targets[i], type, g.defined() ? g : at::zeros_like(leaves[i]));
      }
    } catch (const c10::Error& e) {
      impl::invalid(std::string("torch: ") + e.what_without_backtrace());
    }
  }

 private:
  static void check_dtype(DLDataType input) {
    if (!scalar_type_of(input))
      impl::unsupported("the torch adapters take float32, float16 and bfloat16, not " + impl::dtype_string(input));
  }

  /// The checks forward and backward share: the problem, the input dtype and Q, K, V. Returns the
  /// torch type of the inputs.
  at::ScalarType checked_inputs(const attncheck_problem& p, const DLTensor* q, const DLTensor* k, const DLTensor* v) const {
    impl::check_problem(p);
    if (q == nullptr) impl::invalid("q: is NULL, but the problem requires it");
    const std::optional<at::ScalarType> type = scalar_type_of(q->dtype);
    if (!type) impl::unsupported("the torch adapters take float32, float16 and bfloat16, not " + impl::dtype_string(q->dtype));
    check_supported(p, q->dtype, kDLCPU);
    const DLDataType dt = q->dtype;
    impl::check_cpu_tensor(q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "query heads", "query length", "head dim"}, {dt});
    impl::check_cpu_tensor(k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "kv heads", "key length", "head dim"}, {dt});
    impl::check_cpu_tensor(v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "kv heads", "key length", "value dim"}, {dt});
    return *type;
  }

  /// The entry point's forward on q, k, v (which may require grad). `bias_leaf`: see build_masking.
  ForwardOutputs run(const attncheck_problem& p, at::Tensor q, at::Tensor k, at::Tensor v, const DLTensor* mask,
                     const DLTensor* key_lengths, const DLTensor* alibi_slopes, at::ScalarType type,
                     at::Tensor* bias_leaf = nullptr, const std::vector<float>& sinks = {}) const {
    const bool gqa = p.q_heads != p.kv_heads;
    ForwardOutputs f;
    switch (entry_) {
      case Entry::Sdpa: {
        // A strided last dimension would send the op to the math path (check_last_dim_stride_equals_1_dense),
        // which get_problem_profile cannot see: such operands are copied compact, so the path is
        // the problem's alone.
        for (at::Tensor* x : {&q, &k, &v})
          if (x->stride(3) != 1) *x = x->contiguous();
        const Masking m = build_masking(p, mask, key_lengths, alibi_slopes, type, /*additive_only=*/false, /*causal_with_mask=*/false, bias_leaf, sinks);
        f.out = at::scaled_dot_product_attention(q, k, v, m.mask, 0.0, m.is_causal, p.scale, gqa);
        break;
      }
      case Entry::FlashCpu: {
        // GQA: the kernel reads kv head h / (Hq / Hkv) itself (num_head / num_head_kv in
        // FlashAttentionKernel.cpp; measured correct by the suite's GQA properties).
        const Masking m = build_masking(p, mask, key_lengths, alibi_slopes, type, /*additive_only=*/true, /*causal_with_mask=*/true, bias_leaf, sinks);
        auto [o, l] = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, m.is_causal, m.mask, p.scale);
        f.out = std::move(o);
        f.lse = std::move(l);  // [B, H, Lq], natural log, float (accum_t), transposed view of [B, Lq, H]
        break;
      }
      case Entry::Math: {
        // An additive mask only: the public op converts a boolean mask to 0 / -inf before it
        // dispatches here (convert_boolean_attn_mask in attention.cpp), so that is this private
        // entry's contract. Handed a boolean mask it adds it to the scores as 1 / 0 (measured):
        // a misuse of the entry by its caller, not a finding about the library.
        const Masking m = build_masking(p, mask, key_lengths, alibi_slopes, type, /*additive_only=*/true, /*causal_with_mask=*/false, bias_leaf, sinks);
        f.out = std::get<0>(at::_scaled_dot_product_attention_math(q, k, v, m.mask, 0.0, m.is_causal, std::nullopt,
                                                                     p.scale, gqa));
        break;
      }
    }
    return f;
  }

  Entry entry_;
};

}  // namespace
}  // namespace attncheck::torch_adapters

using attncheck::torch_adapters::Entry;
using attncheck::torch_adapters::TorchAdapter;

extern "C" attncheck_backend* attncheck_torch_sdpa_entry(void) {
  return attncheck::impl::make_backend_table<TorchAdapter>(
      "torch-sdpa", "PyTorch 2.15 at::scaled_dot_product_attention on the CPU (flash kernel, math path for Dk != Dv)",
      Entry::Sdpa);
}

extern "C" attncheck_backend* attncheck_torch_flash_cpu_entry(void) {
  return attncheck::impl::make_backend_table<TorchAdapter>(
      "torch-flash-cpu", "PyTorch 2.15 at::_scaled_dot_product_flash_attention_for_cpu (returns the LSE)", Entry::FlashCpu);
}

extern "C" attncheck_backend* attncheck_torch_math_entry(void) {
  return attncheck::impl::make_backend_table<TorchAdapter>(
      "torch-math", "PyTorch 2.15 at::_scaled_dot_product_attention_math (the composite math path)", Entry::Math);
}
