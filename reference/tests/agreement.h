// Agreement of reference_attention with the plain loops, with the bounds the tests use.
//
// Both sides compute the same real numbers in double precision, in different orders (GEMM blocking
// and vectorized exp against sequential loops), so they differ by rounding only. With a_k =
// |σ|Σ_l|q_l k_kl| and a_max its maximum over a row, a logit is off by at most γ_Dk·a_k ≈ Dk·u·a_k
// (u = 2^-53), exp by about 2u, and the centred identity of numerics/README.md §2.4 turns a logit
// error δ into an output error of at most δ·Σ_k p_k|V_kj − O_j| ≤ 2δ·A_j, where A_j = Σ_k p_k|V_kj|
// is the row scale. For the random problems here (Dk ≤ 9, a_max ≲ 100) that is below 2·9·2^-53·100
// ≈ 2e-13 in the worst case and ~1e-14 in practice; the tests require 1e-13·A_j (and report the
// largest ratio seen), so a genuine semantic difference (a wrong mask, a wrong diagonal, a missing
// softcap) fails by many orders of magnitude.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "plain_attention.h"

namespace attncheck::testing {

/// 1e-13: the agreement bound, relative to the row scale A_j (outputs) or to 1 + a_max (LSE, P).
inline constexpr double kAgreement = 1e-13;

struct AgreementReport {
  double worst_output_ratio = 0;  // max |ΔO_j| / (kAgreement·A_j)
  std::int64_t empty_rows = 0;    // rows with no allowed key
  std::int64_t live_rows = 0;
};

/// EXPECTs that `ref` (O, LSE, and P and the row statistics where present) matches `plain`.
void expect_agreement(const Problem& p, const AttentionResult& ref, const PlainResult& plain,
                      const std::string& context, AgreementReport& report);

}  // namespace attncheck::testing
