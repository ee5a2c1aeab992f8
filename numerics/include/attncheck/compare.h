/// \file compare.h
/// \brief The comparator: the single place where a backend's output is judged.
///
/// τ comes from the tolerance model (tolerance.h) and nothing else: no per-test atol/rtol, no
/// fudge factor. A check passes iff |O_backend − O_ref| ≤ τ for every element, NaN/Inf appear
/// only where the declared empty-row convention puts them, and (when the backend writes LSE)
/// the LSE meets its own bound.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "attncheck/numerics_profile.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"

namespace attncheck {

/// Position of one output element [b, h, i, j] (j = −1 for an LSE element).
struct ElementIndex {
  std::int64_t batch = 0, head = 0, row = 0, col = 0;
};

/// How the data were generated, which decides deterministic vs probabilistic accumulation bounds
/// (numerics/README.md §3.2): probabilistic only for round-to-nearest accumulation on generic
/// random data; ties, duplicated keys, constant or one-hot V make errors coherent.
enum class DataCharacter : std::uint8_t { GenericRandom, Structured };

struct Verdict {
  bool passed = false;
  std::string failure;  ///< empty when passed; else one line saying why
  /// Refused because every live reference value is zero (§4.2): the data, not the kernel, make
  /// the check vacuous. A property declines such a drawn case and draws another.
  bool all_zero_reference = false;

  // Gated metric and where it peaks.
  double max_ratio = 0;      ///< max |Ô − O| / τ
  ElementIndex worst;        ///< where max_ratio occurs
  std::string dominant_term; ///< τ's largest term there: "logit", "probability", "accumulation", "output", …
  double tau_at_worst = 0;
  double error_at_worst = 0;
  // Distribution and conventional metrics (numerics/README.md §4.3; reported, not gated).
  double p50_ratio = 0, p99_ratio = 0, rms_ratio = 0;
  double max_abs_error = 0;
  double max_rel_error_row_scale = 0;  ///< max |Ô − O| / max(|O|, A_j)
  double max_ulps_row_scale = 0;       ///< max |Ô − O| / ulp_out(A_j)
  double nmse = 0;                     ///< Σ(Ô − O)² / ΣO²
  double lse_max_ratio = 0;            ///< when LSE is checked
  ElementIndex lse_worst;              ///< where lse_max_ratio occurs (col = −1)
  /// Aggregate check (numerics/README.md §4.4): ‖Ô − O‖₂ over the τ-checked elements divided by the
  /// bound a healthy kernel meets with probability ≥ 1 − CompareOptions::aggregate_false_alarm
  /// under the probabilistic model. Gated (> 1 fails) only when aggregate_checked.
  double aggregate_ratio = 0;
  bool aggregate_checked = false;
  std::int64_t empty_rows = 0;         ///< rows with no allowed key, checked against the convention
  std::int64_t elements = 0;
  std::int64_t nonfinite_violations = 0;  ///< NaN/Inf where the convention forbids, or missing where it requires
  /// What the declared profile guarantees at this size: max over τ-checked elements of
  /// τ / max(|O|, A_j) (numerics/README.md §4.5); 0.3 means only 30 % relative accuracy.
  double guaranteed_relative_accuracy = 0;
  // Accuracy verdict (numerics/README.md §4.5; CompareOptions::accuracy): the kernel's error
  // beside that of an fp32 baseline kernel on the same inputs (accuracy.h).
  bool accuracy_checked = false;
  double accuracy_max_ratio = 0;        ///< max |Ô − O| / max max(|Ô_base − O|, φ)
  double accuracy_aggregate_ratio = 0;  ///< ‖Ô − O‖₂ / ‖max(|Ô_base − O|, φ)‖₂
  double baseline_max_error = 0;        ///< max |Ô_base − O|
  /// Conformance passed but an accuracy ratio exceeds CompareOptions::accuracy_factor: the
  /// failure is one of accuracy, not of the declaration.
  bool accuracy_failed = false;

  /// One line: "PASS max r=0.14 at [0,3,17,5] (accumulation) p99=0.08 NMSE=8.2e-08 …".
  std::string summary() const;
};

struct CompareOptions {
  DataCharacter data = DataCharacter::GenericRandom;
  /// False-alarm budget of the aggregate check per verdict (compare.cpp derives its threshold
  /// from it); 2^-30 ≈ 9.3e-10. A budget, not a tolerance: it sets x = ln(1/β) in the tail bound.
  double aggregate_false_alarm = 0x1p-30;
  /// Also measure the accuracy verdict (§4.5): runs the baseline kernel on the inputs.
  bool accuracy = false;
  /// With `accuracy`: 0 reports the ratios only; F > 0 fails the verdict (accuracy_failed) when
  /// the max or the aggregate ratio exceeds F.
  double accuracy_factor = 0;
};

/// Judges a backend's output against the reference. `reference` must carry row statistics
/// (ReferenceOptions::row_statistics) and come from the same quantized `inputs`.
/// `actual_out` [B, Hq, Lq, Dv] and `actual_lse` [1, B, Hq, Lq] (or nullptr) hold the backend's
/// values converted exactly to double. Refuses to pass when the reference is all zeros or
/// non-finite while the inputs were finite (a check that cannot fail).
Verdict compare_attention(const Problem& problem, const NumericsProfile& profile, const AttentionInputs& inputs,
                          const AttentionResult& reference, const HostTensor& actual_out,
                          const HostTensor* actual_lse, const CompareOptions& options = {});

/// Exact modes for properties whose answer is exact (numerics/README.md §7).
enum class ExactMode : std::uint8_t {
  Bitwise,       ///< actual == expected bit for bit (NaN matches NaN, +0 differs from −0)
  RoundedExact,  ///< actual == round_to(output dtype, expected)
};
/// `reference`, when given (the double reference of the problem, shaped like `expected`), makes
/// +0 and −0 match wherever it is exactly zero: two different problems that agree on a row's
/// value need not agree on the sign of an exact zero (an empty row, numerics/README.md §7.5),
/// while any nonzero difference, and a sign change of a nonzero value, still fails.
Verdict compare_exact(const HostTensor& expected, const HostTensor& actual, DType output, ExactMode mode,
                      const HostTensor* reference = nullptr);

}  // namespace attncheck
