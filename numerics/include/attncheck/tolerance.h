/// \file tolerance.h
/// \brief τ for every output element, from a backend's numerics profile and the reference's row
/// statistics (numerics/README.md §2–§3). The comparator is its only consumer.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "attncheck/compare.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"

namespace attncheck {

/// τ's terms at one element (numerics/README.md §2.8: τ = E_L + E_P + E_A + E_ref + output).
struct ToleranceTerms {
  double logit = 0;         ///< E_L
  double probability = 0;   ///< E_P
  double accumulation = 0;  ///< E_A
  double reference = 0;     ///< E_ref
  double output = 0;        ///< u_O(|O| + E) + η_O
  // The aggregate check's model of a healthy error at this element (compare.cpp, "aggregate"):
  // error = coherent part + random part. Not part of total().
  double coherent = 0;        ///< bound on the part that does not average out (exp, constants, E_ref, tails)
  double noise_variance = 0;  ///< sub-Gaussian variance proxy of the random part (uniform rounding-error model)
  double total() const { return logit + probability + accumulation + reference + output; }
  /// Name of the largest term.
  const char* dominant() const;
};

/// The bound for every output element of `reference` (which must carry row statistics).
class ToleranceModel {
 public:
  ToleranceModel(const Problem& problem, const NumericsProfile& profile, DataCharacter data);
  /// As above, and checks that `inputs` match the problem. E_P's tail for weights below fp32's
  /// normal range is bounded by the reference's max |V| over each row's allowed keys
  /// (RowStatistics::reachable_max_abs_value), so the inputs add no data to the bound.
  ToleranceModel(const Problem& problem, const NumericsProfile& profile, DataCharacter data,
                 const AttentionInputs& inputs);
  /// Whether the probabilistic (λ√N) accumulation bounds apply (numerics/README.md §3.2: RN
  /// accumulation and generic random data); the aggregate check exists only when they do.
  bool probabilistic() const;
  /// τ's terms at output element (b, h, i, j).
  ToleranceTerms at(const AttentionResult& reference, std::int64_t b, std::int64_t h, std::int64_t i,
                    std::int64_t j) const;
  /// τ for every element of O, shaped like reference.out: at(…).total() everywhere.
  HostTensor tau_tensor(const AttentionResult& reference) const;
  /// The bound on |LSE_backend − LSE_ref| for row (b, h, i).
  double lse_bound(const AttentionResult& reference, std::int64_t b, std::int64_t h, std::int64_t i) const;

 private:
  Problem problem_;
  NumericsProfile profile_;
  DataCharacter data_;
};

}  // namespace attncheck
