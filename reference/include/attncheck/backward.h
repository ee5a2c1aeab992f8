/// \file backward.h
/// \brief The gradients of scaled dot-product attention in double precision.
///
/// For a scalar loss f that depends on the forward's O and LSE, given dO = ∂f/∂O and
/// dLSE = ∂f/∂LSE, reference_attention_backward returns ∂f/∂Q, ∂f/∂K, ∂f/∂V and, for an additive
/// mask, ∂f/∂bias, for every Problem option reference_attention supports (reference/README.md,
/// "The backward pass", derives them). Like the forward it is blocked over query rows (extra
/// memory O((row_block + Dk + Dv) × Lk) per thread, never a whole Lq × Lk matrix), threaded over
/// (batch, kv head), and gives the same bits for any thread count, row block and instruction set.
///
/// Conventions, matching the forward's:
///  - an excluded key (boolean false, additive −inf, causal, window, key length, past a short
///    mask), and any key whose weight is exactly 0, has dS = 0 exactly: nothing flows to it, and
///    NaN or Inf stored in its K or V row never reaches a gradient;
///  - a row with no allowed key (LSE = −inf) contributes nothing: its dQ row is +0 and its dO and
///    dLSE are ignored; a row whose LSE is NaN (it attends a NaN) has NaN gradients, and so have
///    the keys it attends;
///  - several query heads read one kv head (GQA, MQA): dK and dV sum over the group's heads.
#pragma once

#include <optional>

#include "attncheck/reference.h"

namespace attncheck {

/// What the backward pass needs besides the forward's inputs; each view may have any strides.
struct BackwardInputs {
  View4<const double> out;    ///< O [B, Hq, Lq, Dv], as the forward computed it
  View4<const double> lse;    ///< LSE [1, B, Hq, Lq], as the forward computed it (−inf: empty row)
  View4<const double> d_out;  ///< dO = ∂f/∂O [B, Hq, Lq, Dv]
  View4<const double> d_lse;  ///< dLSE = ∂f/∂LSE [1, B, Hq, Lq] (split-KV and ring attention); empty: 0
};

/// The forward's O and LSE with the loss's gradients. The views point into `forward`, which must
/// outlive them.
BackwardInputs backward_inputs(const AttentionResult& forward, View4<const double> d_out,
                               View4<const double> d_lse = {});

struct BackwardOptions {
  /// Fill AttentionGradients::d_bias (an additive mask only). Where the mask broadcasts over the
  /// batch, or over heads of different kv heads, each (batch, kv head) sums into a partial of the
  /// part it reaches ([1, Hm = 1 ? 1 : Hq/Hkv, Lqm, Lkm]), added up in a fixed order at the end.
  bool bias_gradient = false;
  int threads = 0;             ///< 0: std::thread::hardware_concurrency()
  std::int64_t row_block = 128;  ///< query rows per block: bounds the scratch at O(row_block × Lk) per thread
  ReferenceIsa isa = ReferenceIsa::Automatic;  ///< ProblemError if this CPU cannot run it
};

struct AttentionGradients {
  HostTensor d_q;  ///< ∂f/∂Q [B, Hq, Lq, Dk]
  HostTensor d_k;  ///< ∂f/∂K [B, Hkv, Lk, Dk], summed over the query heads of each kv head
  HostTensor d_v;  ///< ∂f/∂V [B, Hkv, Lk, Dv], summed over the query heads of each kv head
  /// ∂f/∂bias in the mask's own shape [Bm, Hm, Lqm, Lkm], summed over the axes it broadcasts
  /// along; 0 where the bias is −inf. Only when BackwardOptions::bias_gradient is set.
  std::optional<HostTensor> d_bias;
};

/// Checks the forward's inputs (validate_inputs), then the shapes of O, LSE, dO and dLSE, and
/// throws ProblemError naming the tensor and dimension on the first mismatch.
void validate_backward_inputs(const Problem& problem, const AttentionInputs& inputs, const BackwardInputs& backward);

/// ∂f/∂Q, ∂f/∂K, ∂f/∂V (and ∂f/∂bias) of scaled dot-product attention. Validates first; asking
/// for the bias gradient without an additive mask is a ProblemError.
AttentionGradients reference_attention_backward(const Problem& problem, const AttentionInputs& inputs,
                                                const BackwardInputs& backward, const BackwardOptions& options = {});

}  // namespace attncheck
