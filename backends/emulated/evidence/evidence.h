// The evidence behind backends/emulated/README.md's table: one long case judged for an emulated
// kernel (healthy or with a defect planted) by conformance — the comparator with the τ the
// kernel's own per-problem profile derives — and by accuracy beside the baseline kernel.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "attncheck/case.h"
#include "attncheck/reference.h"
#include "emulated_kernel.h"

namespace attncheck::evidence {

/// How a case's values are drawn (all from the suite's generators, then reshaped).
enum class ValueClass {
  Gaussian,      ///< Q, K, V ~ N(0, 1), scale 1/sqrt(Dk)
  Diffuse,       ///< the same with scale / 16: nearly uniform weights over a long row
  Peaked,        ///< large logits (|s| ≈ 1e3): nearly one-hot weights
  ConstantV,     ///< every key equal and V = 10: uniform weights, the fp16 running sum's worst case
  NonNegativeV,  ///< Gaussian Q, K with V = |N(0, 1)|: P·V terms of one sign
};
std::string_view value_class_name(ValueClass values);

/// The case of one evidence cell: B = 1, Hq = 2 sharing one kv head, Dk = Dv = 64, causal with
/// bottom-right alignment (a decode or a chunk at the end of a cache).
AttentionCase evidence_case(std::int64_t q_len, std::int64_t k_len, ValueClass values, DType dtype, std::uint64_t seed);

struct Judgement {
  std::optional<std::string> declined;
  bool conforms = false;        ///< passed the comparator with the declared τ (and no memory finding)
  std::string failure;          ///< the comparator's reason when not
  double max_ratio = 0;         ///< max |Ô − O| / τ
  std::string dominant_term;    ///< τ's largest term where max_ratio peaks
  double aggregate_ratio = 0;   ///< the aggregate check's ratio (0 when not checked)
  /// The suite's accuracy verdict (accuracy.h, numerics/README.md §4.5): the kernel's error
  /// beside that of the fp32 baseline kernel on the same inputs and output dtype, floored at half
  /// an output ulp per element.
  double accuracy_max = 0;        ///< AccuracyMeasure::max_ratio
  double accuracy_aggregate = 0;  ///< AccuracyMeasure::aggregate_ratio
  double tau_relative = 0;      ///< τ at the worst element / max |O|
  /// Whether the accuracy verdict with `factor` flags the case.
  bool accuracy_flagged(double factor) const { return accuracy_max > factor || accuracy_aggregate > factor; }
};

/// A case with its inputs, reference and baseline output computed once, judged for any kernel.
class EvidenceCell {
 public:
  /// `c` from evidence_case with the same `values`.
  EvidenceCell(AttentionCase c, ValueClass values);
  const AttentionCase& attention_case() const { return case_; }
  Judgement judge(emulated::Kernel kernel, emulated::Defect defect);

 private:
  AttentionCase case_;
  CaseData data_;
  AttentionResult reference_;
};

}  // namespace attncheck::evidence
