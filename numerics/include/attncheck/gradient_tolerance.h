/// \file gradient_tolerance.h
/// \brief τ for every element of dQ, dK, dV (and dBias) of a backward call, from the backend's
/// forward and backward profiles and the exact data (numerics/README.md §10), and the comparator
/// that judges a backend's gradients with it: the single place where a gradient passes or fails.
///
/// The target is the exact gradient of the function of the bits the kernel received (Q, K, V, the
/// mask, dO and dLSE), computed by reference_attention_backward from the double reference's own O
/// and LSE. The O and LSE handed to the kernel are those rounded to the forward profile's output
/// dtype and to float32 (make_backward_data, harness/case.h); that rounding is a term of τ.
#pragma once

#include <optional>
#include <string>

#include "attncheck/backward.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"

namespace attncheck {

/// τ per element, shaped like the gradients they bound.
struct GradientBounds {
  HostTensor d_q;  ///< [B, Hq, Lq, Dk]
  HostTensor d_k;  ///< [B, Hkv, Lk, Dk]
  HostTensor d_v;  ///< [B, Hkv, Lk, Dv]
  std::optional<HostTensor> d_bias;  ///< the mask's shape, when `reference` has d_bias
};

/// The bound for every element of `reference` (reference_attention_backward of `problem`,
/// `inputs` and `exact`). `exact` holds the double reference's O and LSE and the dO and dLSE the
/// kernel received; `forward` is the profile of the forward path (its score, exp and softcap
/// stages are the ones the backward recomputes P with), `backward` the backward profile; the
/// input dtype is forward.input. Throws ProblemError when the shapes disagree.
GradientBounds gradient_tolerance(const Problem& problem, const NumericsProfile& forward, const BackwardProfile& backward,
                                  const AttentionInputs& inputs, const BackwardInputs& exact,
                                  const AttentionGradients& reference);

struct GradientVerdict {
  bool passed = true;
  /// Empty when passed; else the first failure: a NaN/Inf rule broken, a missing tensor, or the
  /// largest ratio above 1, naming the tensor and the element ("dK[0, 1, 3, 5]: …").
  std::string failure;
  double max_ratio = 0;  ///< max over every gradient element of |actual − reference| / τ
  std::string worst;     ///< where max_ratio is reached: "dQ[0, 2, 7, 1]"
  double ratio_q = 0, ratio_k = 0, ratio_v = 0, ratio_bias = 0;  ///< the max ratio of each tensor
  /// "passed: max r 0.031 at dK[0, 0, 3, 1] (dQ 0.012, dK 0.031, dV 0.004)" or the failure.
  std::string summary() const;
};

/// Judges `actual` (a backend's gradients as doubles) against `reference` with `tau`. A
/// non-finite actual element against a finite reference fails; a non-finite reference element
/// (an attended NaN or Inf input) must be matched by the same class (NaN with NaN, ±Inf alike);
/// d_bias is judged when both reference and tau have it, and its absence from `actual` then fails.
GradientVerdict compare_gradients(const AttentionGradients& reference, const GradientBounds& tau,
                                  const AttentionGradients& actual);

}  // namespace attncheck
