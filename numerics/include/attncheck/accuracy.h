/// \file accuracy.h
/// \brief The accuracy verdict's yardstick (numerics/README.md §4.5): a good kernel of the
/// class, emulated on the case's inputs, and how a kernel's error compares with it.
///
/// Conformance asks whether a kernel does what its profile declares; the declaration may be
/// honest and still allow large errors at long rows (fp16 accumulation over 8192 keys). The
/// accuracy verdict asks instead whether the kernel is about as accurate as a kernel that scores,
/// normalizes and accumulates in fp32 on the same inputs, both measured against the exact
/// (double) reference.
#pragma once

#include <cstdint>

#include "attncheck/dtype.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"

namespace attncheck {

/// The baseline kernel's output O_base [B, Hq, Lq, Dv] on `inputs` (values already rounded to
/// the input dtype): per row, fp32 scores s_k = fl(σ·fl(Σ_l q_l k_kl)) with the dot product
/// accumulated by fma in key-dimension order, the softcap c·tanh(s/c) in fp32, the bias added in
/// fp32; three-pass softmax with m = max s_k, p_k = exp(s_k − m) in fp32 (std::exp of a float),
/// the row sum ℓ = Σ p_k and Σ p_k V_k accumulated in fp32 in key order (fma), O = fl(Σ p_k V_k / ℓ)
/// rounded to `output`. Masks, causal, window, key lengths, GQA and empty rows (zeros) follow
/// the reference exactly (problem.h, reference.h): masked keys are excluded, not weighted by
/// zero. Single-threaded, O(Lk·(Dk + Dv)) per row. Validates the inputs first (ProblemError).
HostTensor baseline_attention(const Problem& problem, const AttentionInputs& inputs, DType output);

/// A kernel's error beside the baseline's, both against the reference (numerics/README.md §4.5).
/// Over the elements of rows with an allowed key where the reference, the kernel and the baseline
/// are all finite; φ_ij = ½·ulp_out(O_ij) is the floor (the worst error of the correctly rounded
/// answer; the smallest subnormal's half at O = 0):
///   max_ratio       = max_ij |Ô − O| / max_ij max(|Ô_base − O|, φ_ij)
///   aggregate_ratio = ‖Ô − O‖₂ / (Σ_ij max(|Ô_base − O|, φ_ij)²)^½
struct AccuracyMeasure {
  double max_ratio = 0;
  double aggregate_ratio = 0;
  double kernel_max_error = 0;    ///< max |Ô − O|
  double baseline_max_error = 0;  ///< max |Ô_base − O| (unfloored)
  double floored_baseline_max_error = 0;  ///< the max ratio's denominator
  std::int64_t elements = 0;      ///< elements measured
};

/// `reference` must carry row statistics and come from the same inputs as `actual_out` and
/// `baseline_out`; shapes are checked (std::invalid_argument naming the tensor).
AccuracyMeasure measure_accuracy(const Problem& problem, DType output, const AttentionResult& reference,
                                 const HostTensor& actual_out, const HostTensor& baseline_out);

}  // namespace attncheck
