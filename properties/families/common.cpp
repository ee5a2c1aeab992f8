#include "common.h"

#include <cmath>
#include <fmt/format.h>

namespace attncheck::props {

AttentionResult reference_for(const Problem& problem, const CaseData& data) {
  ReferenceOptions options;
  options.row_statistics = true;
  return reference_attention(problem, data.inputs(problem), options);
}

Verdict judge(PropertyContext& ctx, const AttentionCase& c, const CaseData& data, const BackendRun& run) {
  const AttentionResult reference = reference_for(c.problem, data);
  const bool lse = run.lse && ctx.judges_lse();
  Verdict verdict = compare_attention(c.problem, ctx.profile(c.problem), data.inputs(c.problem), reference, run.out,
                                      lse ? &*run.lse : nullptr, ctx.compare_options(data_character(c.values)));
  ctx.note_judgement(reference, &verdict);
  return verdict;
}

HostTensor tolerance_of(PropertyContext& ctx, const AttentionCase& c, const CaseData& data,
                        const AttentionResult& reference) {
  const ToleranceModel model(c.problem, ctx.profile(c.problem), data_character(c.values), data.inputs(c.problem));
  return model.tau_tensor(reference);
}

Verdict compare_pair(const HostTensor& a, const HostTensor& tau_a, const HostTensor& b, const HostTensor& tau_b) {
  Verdict v;
  v.passed = true;
  double sum_sq_diff = 0, sum_sq = 0;
  const Shape4& s = a.shape;
  for (std::int64_t i0 = 0; i0 < s[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < s[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < s[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < s[3]; ++i3) {
          ++v.elements;
          const double x = a(i0, i1, i2, i3), y = b(i0, i1, i2, i3);
          const double bound = tau_a(i0, i1, i2, i3) + tau_b(i0, i1, i2, i3);
          if (std::isnan(x) && std::isnan(y)) continue;
          const double diff = std::fabs(x - y);
          // NaN on one side only, or different infinities, is a disagreement of any size.
          const double ratio = std::isnan(diff) || std::isinf(diff) ? INFINITY : bound > 0 ? diff / bound : (diff > 0 ? INFINITY : 0);
          if (std::isfinite(diff)) {
            v.max_abs_error = std::max(v.max_abs_error, diff);
            sum_sq_diff += diff * diff;
            sum_sq += x * x;
          }
          if (v.elements == 1 || ratio > v.max_ratio) {
            v.max_ratio = ratio;
            v.worst = {i0, i1, i2, i3};
            v.tau_at_worst = bound;
            v.error_at_worst = diff;
            v.dominant_term = "pair bound τ + τ′";
          }
        }
  v.nmse = sum_sq > 0 ? sum_sq_diff / sum_sq : 0;
  // An infinite τ + τ′ would let every difference pass: refused, as compare_attention refuses it.
  for (std::int64_t n = 0; n < static_cast<std::int64_t>(tau_a.values.size()); ++n)
    if (!std::isfinite(tau_a.values[static_cast<size_t>(n)]) || !std::isfinite(tau_b.values[static_cast<size_t>(n)])) {
      v.passed = false;
      v.failure = fmt::format("refused: τ is infinite at flat index {} (a term of the bound overflows), so the two "
                              "outputs cannot be compared there",
                              n);
      return v;
    }
  if (v.max_ratio > 1) {
    v.passed = false;
    v.failure = fmt::format("the two outputs differ by {:.3g} at [{}, {}, {}, {}] where τ + τ′ = {:.3g}", v.error_at_worst,
                            v.worst.batch, v.worst.head, v.worst.row, v.worst.col, v.tau_at_worst);
  }
  return v;
}

JudgedRun run_and_bound(PropertyContext& ctx, const AttentionCase& c, CaseData data) {
  JudgedRun j{std::move(data), {}, {}, {}};
  j.run = ctx.run(c, j.data);
  j.reference = reference_for(c.problem, j.data);
  ctx.note_judgement(j.reference, nullptr);
  j.tau = tolerance_of(ctx, c, j.data, j.reference);
  return j;
}

JudgedRun run_and_bound(PropertyContext& ctx, const AttentionCase& c) { return run_and_bound(ctx, c, ctx.case_data(c)); }

}  // namespace attncheck::props
