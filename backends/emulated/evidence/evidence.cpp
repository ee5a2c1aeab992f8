#include "evidence.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "attncheck/accuracy.h"
#include "attncheck/check.h"
#include "attncheck/execute.h"

namespace attncheck::evidence {

std::string_view value_class_name(ValueClass values) {
  switch (values) {
    case ValueClass::Gaussian: return "gaussian";
    case ValueClass::Diffuse: return "diffuse";
    case ValueClass::Peaked: return "peaked";
    case ValueClass::ConstantV: return "constant-v";
    case ValueClass::NonNegativeV: return "non-negative-v";
  }
  return "";
}

AttentionCase evidence_case(std::int64_t q_len, std::int64_t k_len, ValueClass values, DType dtype, std::uint64_t seed) {
  AttentionCase c;
  Problem p = with_causal(Problem::of_shape(1, 2, 1, q_len, k_len, 64, 64), Alignment::BottomRight);
  if (values == ValueClass::Diffuse) p.scale = 0.125 / 16;
  c.problem = with_fp32_parameters(p);
  c.dtype = dtype;
  c.values = values == ValueClass::Peaked ? ValueKind::LargeLogits : values == ValueClass::ConstantV ? ValueKind::Ties : ValueKind::Gaussian;
  c.seed = seed;
  return c;
}

EvidenceCell::EvidenceCell(AttentionCase c, ValueClass values) : case_(std::move(c)), data_(make_case_data(case_)) {
  // Reshaped draws stay exact in every dtype: 10 and |v| of a representable v are representable.
  for (double& v : data_.v.values) {
    if (values == ValueClass::ConstantV) v = 10.0;
    if (values == ValueClass::NonNegativeV) v = std::abs(v);
  }
  ReferenceOptions options;
  options.row_statistics = true;
  reference_ = reference_attention(case_.problem, data_.inputs(case_.problem), options);
}

Judgement EvidenceCell::judge(emulated::Kernel kernel, emulated::Defect defect) {
  Judgement j;
  Backend backend(emulated::make_emulated(kernel, defect), "make_emulated");
  const std::optional<NumericsProfile> profile = backend.profile(case_.problem, case_.dtype);
  if (!profile) {
    j.declined = std::string(backend.name()) + " does not take " + std::string(dtype_name(case_.dtype)) + " inputs";
    return j;
  }
  if (auto reason = backend.unsupported_reason(case_.problem, case_.dtype)) {
    j.declined = *reason;
    return j;
  }
  RunOptions options;
  const BackendRun run = run_backend(backend, case_.problem, *profile, data_.inputs(case_.problem), options);
  CompareOptions compare;
  compare.data = data_character(case_.values);
  const Verdict verdict = compare_attention(case_.problem, *profile, data_.inputs(case_.problem), reference_, run.out,
                                            run.lse ? &*run.lse : nullptr, compare);
  j.conforms = verdict.passed && run.memory_findings.empty();
  j.failure = !run.memory_findings.empty() ? run.memory_findings.front() : verdict.failure;
  j.max_ratio = verdict.max_ratio;
  j.dominant_term = verdict.dominant_term;
  j.aggregate_ratio = verdict.aggregate_checked ? verdict.aggregate_ratio : 0;

  // The suite's accuracy verdict (numerics/README.md §4.5): the fp32 baseline kernel on the same
  // inputs, its output rounded to the kernel's output dtype.
  const HostTensor baseline = baseline_attention(case_.problem, data_.inputs(case_.problem), profile->output);
  const AccuracyMeasure accuracy = measure_accuracy(case_.problem, profile->output, reference_, run.out, baseline);
  j.accuracy_max = accuracy.max_ratio;
  j.accuracy_aggregate = accuracy.aggregate_ratio;
  double max_o = 0;
  for (double o : reference_.out.values) max_o = std::max(max_o, std::abs(o));
  j.tau_relative = max_o > 0 ? verdict.tau_at_worst / max_o : 0;
  return j;
}

}  // namespace attncheck::evidence
