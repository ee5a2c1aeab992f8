// exp(s) without subtracting the row max m: e^s overflows fp32 once s > ln(FLT_MAX) ≈ 88.72, so
// O is non-finite in exactly the rows whose max logit passes it, and right in the rows whose
// whole sum Σ e^s (= e^LSE) stays below it. At the other end, a row whose every logit lies below
// fp32's exp underflow (ln FLT_MIN ≈ −87.3; large negative logits) sums to 0 and comes out as
// the kernel's empty-row value (0 or NaN) instead of its weighted values. Rows within a margin
// of either threshold are not predicted.
#include <cmath>
#include <limits>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> no_max_subtraction_hypotheses() {
  const std::string statement =
      "exp without max-subtraction: O is non-finite exactly in the rows whose max logit exceeds fp32's exp overflow "
      "(≈ 88.7), and 0 or NaN in the rows whose every logit is below its underflow (≈ −87.3)";
  return {{"no-max-subtraction", statement, [statement](const FailureEvidence& e) -> std::optional<std::string> {
             if (!has_output(e)) return std::nullopt;
             const double overflow = std::log(static_cast<double>(std::numeric_limits<float>::max()));
             const double underflow = std::log(static_cast<double>(std::numeric_limits<float>::min()));
             // Scores are computed in the kernel's precision: a unit of margin keeps a row whose
             // max sits on the threshold out of the prediction.
             constexpr double margin = 1.0;
             const HostTensor& max_score = e.reference.stats->max_score;
             const Shape4& s = e.run_out.shape;
             bool any_overflow = false, any_underflow = false;
             for (std::int64_t b = 0; b < s[0]; ++b)
               for (std::int64_t h = 0; h < s[1]; ++h)
                 for (std::int64_t i = 0; i < s[2]; ++i) {
                   const double m = max_score(0, b, h, i), lse = e.reference.lse(0, b, h, i);
                   const bool overflows = m > overflow + margin;
                   // Only a live row (finite max) underflows; an empty row has m = −inf.
                   const bool underflows = std::isfinite(m) && m < underflow - margin;
                   const bool safe = lse < overflow - margin && m > underflow + margin;
                   any_overflow = any_overflow || overflows;
                   bool row_differs = false;
                   for (std::int64_t d = 0; d < s[3]; ++d) {
                     const double x = e.run_out(b, h, i, d);
                     if (overflows && std::isfinite(x)) return std::nullopt;
                     if (underflows && std::isfinite(x) && x != 0) return std::nullopt;
                     row_differs = row_differs || (underflows && e.reference.out(b, h, i, d) != 0);
                     if (safe && !(std::fabs(x - e.reference.out(b, h, i, d)) <= e.tau(b, h, i, d))) return std::nullopt;
                   }
                   any_underflow = any_underflow || row_differs;
                 }
             if (!any_overflow && !any_underflow) return std::nullopt;
             return statement;
           }}};
}

}  // namespace attncheck::diagnosis
