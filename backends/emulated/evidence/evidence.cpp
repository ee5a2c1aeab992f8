#include "evidence.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

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

namespace {

/// The baseline kernel's output on `data`: fp32 products summed in order for each score, fp32
/// exp, one fp32 pass for the row sum and one for P·V after the max is known, O rounded to
/// `output`. Only the evidence cases' option (causal, bottom-right) is implemented.
HostTensor baseline_output(const Problem& p, const CaseData& data, DType output) {
  HostTensor out({p.batch, p.q_heads, p.q_len, p.v_dim});
  const float scale = static_cast<float>(p.effective_scale());
  std::vector<float> s(static_cast<size_t>(p.k_len));
  std::vector<float> acc(static_cast<size_t>(p.v_dim));
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t g = p.kv_head_of(h);
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const std::int64_t last = std::min(p.k_len - 1, i + p.k_len - p.q_len);
        if (last < 0) continue;  // no allowed key: O = 0, the suite's convention
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t j = 0; j <= last; ++j) {
          float dot = 0.0f;
          for (std::int64_t d = 0; d < p.qk_dim; ++d)
            dot += static_cast<float>(data.q(b, h, i, d)) * static_cast<float>(data.k(b, g, j, d));
          s[static_cast<size_t>(j)] = dot * scale;
          m = std::fmax(m, s[static_cast<size_t>(j)]);
        }
        float l = 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::int64_t j = 0; j <= last; ++j) {
          const float e = std::exp(s[static_cast<size_t>(j)] - m);
          l += e;
          for (std::int64_t d = 0; d < p.v_dim; ++d) acc[static_cast<size_t>(d)] += e * static_cast<float>(data.v(b, g, j, d));
        }
        for (std::int64_t d = 0; d < p.v_dim; ++d) out(b, h, i, d) = round_to(output, acc[static_cast<size_t>(d)] / l);
      }
    }
  return out;
}

struct ErrorNorms {
  double max_abs = 0, sum_squares = 0;
};

ErrorNorms error_norms(const HostTensor& actual, const HostTensor& expected) {
  ErrorNorms n;
  for (size_t e = 0; e < expected.values.size(); ++e) {
    const double err = std::abs(actual.values[e] - expected.values[e]);
    n.max_abs = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(n.max_abs, err);
    n.sum_squares += err * err;
  }
  return n;
}

}  // namespace

EvidenceCell::EvidenceCell(AttentionCase c, ValueClass values) : case_(std::move(c)), data_(make_case_data(case_)) {
  if (case_.problem.mask != MaskKind::None || case_.problem.has_key_lengths || case_.problem.has_window() ||
      !case_.problem.causal || case_.problem.alignment != Alignment::BottomRight || case_.problem.softcap != 0)
    throw std::invalid_argument("evidence cells are causal bottom-right problems without masks, windows or softcap");
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

  const HostTensor baseline = baseline_output(case_.problem, data_, profile->output);
  const ErrorNorms kernel_error = error_norms(run.out, reference_.out);
  const ErrorNorms baseline_error = error_norms(baseline, reference_.out);
  double max_o = 0;
  for (double o : reference_.out.values) max_o = std::max(max_o, std::abs(o));
  const double floor = 0x1p-24 * max_o;
  const double n = static_cast<double>(reference_.out.values.size());
  j.accuracy_max = kernel_error.max_abs / std::max(baseline_error.max_abs, floor);
  j.accuracy_rms = std::sqrt(kernel_error.sum_squares / n) / std::max(std::sqrt(baseline_error.sum_squares / n), floor);
  j.tau_relative = max_o > 0 ? verdict.tau_at_worst / max_o : 0;
  return j;
}

}  // namespace attncheck::evidence
