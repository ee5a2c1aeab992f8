// The LSE in another convention than reference.h's ln Σ_k exp(s_k) over allowed keys: in base 2,
// without the row max (ln Σ e^{s_k − m}), divided by the scale σ, or of the unscaled scores
// (ln Σ e^{q·k}). Each transform of the true LSE carries the same transform of its bound
// (ToleranceModel::lse_bound); the unscaled variant is the reference of the problem with σ = 1,
// bounded by the tolerance model for it. Rows with no allowed key (LSE = −inf) are not predicted.
// Each requires O within τ of the reference: a kernel whose O is wrong too (an unscaled softmax,
// say) is explained by the hypothesis about O, not by a convention of the LSE alone.
#include <cmath>
#include <functional>
#include <numbers>

#include "../src/alternatives.h"
#include "attncheck/tolerance.h"

namespace attncheck::diagnosis {
namespace {

struct LsePrediction {
  HostTensor lse, bound;  ///< [1, B, Hq, Lq]
};

bool output_right(const FailureEvidence& e) {
  for (size_t n = 0; n < e.run_out.values.size(); ++n)
    if (!(std::fabs(e.run_out.values[n] - e.reference.out.values[n]) <= e.tau.values[n]) &&
        !(std::isnan(e.run_out.values[n]) && e.profile.empty_row == EmptyRowConvention::NaN))
      return false;
  return true;
}

LsePrediction bounds_of(const FailureEvidence& e, const Problem& problem, const AttentionResult& reference) {
  const ToleranceModel model(problem, e.profile, data_character(e.attention_case.values));
  LsePrediction p{reference.lse, HostTensor(reference.lse.shape)};
  const Shape4& s = p.lse.shape;
  for (std::int64_t b = 0; b < s[1]; ++b)
    for (std::int64_t h = 0; h < s[2]; ++h)
      for (std::int64_t i = 0; i < s[3]; ++i) p.bound(0, b, h, i) = model.lse_bound(reference, b, h, i);
  return p;
}

// Named iff the kernel's LSE is within the prediction's bound wherever the truth is finite, and
// the prediction differs from the truth by more than both bounds somewhere.
bool explains_lse(const FailureEvidence& e, const LsePrediction& truth, const LsePrediction& alternative) {
  bool distinguishable = false;
  for (size_t n = 0; n < truth.lse.values.size(); ++n) {
    if (!std::isfinite(truth.lse.values[n])) continue;
    const double x = e.run_lse->values[n], a = alternative.lse.values[n];
    if (!(std::fabs(x - a) <= alternative.bound.values[n])) return false;
    if (std::fabs(a - truth.lse.values[n]) > alternative.bound.values[n] + truth.bound.values[n]) distinguishable = true;
  }
  return distinguishable;
}

// A convention that maps the true LSE ℓ of row (b, h, i) and its bound δ to the kernel's.
using Transform = std::function<std::pair<double, double>(double lse, double bound, double max_score)>;

Hypothesis transformed(std::string name, std::string statement, Transform transform) {
  return {std::move(name), statement, [statement, transform](const FailureEvidence& e) -> std::optional<std::string> {
            if (!e.run_lse || !can_recompute(e) || e.run_lse->shape != e.reference.lse.shape || !output_right(e))
              return std::nullopt;
            const LsePrediction truth = bounds_of(e, e.attention_case.problem, e.reference);
            LsePrediction alternative = truth;
            for (size_t n = 0; n < truth.lse.values.size(); ++n) {
              const auto [lse, bound] =
                  transform(truth.lse.values[n], truth.bound.values[n], e.reference.stats->max_score.values[n]);
              alternative.lse.values[n] = lse;
              alternative.bound.values[n] = bound;
            }
            if (!explains_lse(e, truth, alternative)) return std::nullopt;
            return statement;
          }};
}

}  // namespace

std::vector<Hypothesis> lse_convention_hypotheses() {
  return {
      transformed("lse-log2", "LSE in base 2 (log2 Σ e^s) instead of the natural log",
                  [](double lse, double bound, double) {
                    return std::pair{lse / std::numbers::ln2, bound / std::numbers::ln2};
                  }),
      transformed("lse-without-max", "LSE without the row max: ln Σ e^{s − m} instead of m + ln Σ e^{s − m}",
                  [](double lse, double bound, double max_score) { return std::pair{lse - max_score, bound}; }),
      {"lse-divided-by-scale", "LSE divided by the scale σ (in units of the unscaled scores)",
       [](const FailureEvidence& e) -> std::optional<std::string> {
         const double scale = e.attention_case.problem.effective_scale();
         return transformed("lse-divided-by-scale", "LSE divided by the scale σ (in units of the unscaled scores)",
                            [scale](double lse, double bound, double) {
                              return std::pair{lse / scale, bound / std::fabs(scale)};
                            })
             .test(e);
       }},
      {"lse-of-unscaled-scores", "LSE of the unscaled scores, ln Σ e^{q·k}, instead of ln Σ e^{σ·q·k}",
       [](const FailureEvidence& e) -> std::optional<std::string> {
         if (!e.run_lse || !can_recompute(e) || e.run_lse->shape != e.reference.lse.shape || !output_right(e))
           return std::nullopt;
         Problem unscaled = e.attention_case.problem;
         unscaled.scale = 1.0;
         ReferenceOptions options;
         options.row_statistics = true;
         options.threads = 1;
         const AttentionResult reference = reference_attention(unscaled, e.data.inputs(unscaled), options);
         if (!explains_lse(e, bounds_of(e, e.attention_case.problem, e.reference), bounds_of(e, unscaled, reference)))
           return std::nullopt;
         return std::string("LSE of the unscaled scores, ln Σ e^{q·k}, instead of ln Σ e^{σ·q·k}");
       }},
  };
}

}  // namespace attncheck::diagnosis
