// The last query rows never written: they still hold the harness's NaN pre-fill (execute.h,
// PreparedCall) while every row before them is the reference's. One row short is a loop bound
// off by one; half the rows, work that lands after the call returns.
#include <cmath>
#include <fmt/format.h>
#include <limits>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> trailing_rows_unwritten_hypotheses() {
  return {{"trailing-rows-unwritten", "the last query row is left unwritten (the harness's NaN pre-fill)",
           [](const FailureEvidence& e) -> std::optional<std::string> {
             if (!has_output(e) || !memory_finding(e, "out", "never written")) return std::nullopt;
             const Shape4& s = e.run_out.shape;
             // The first row from which every row of every (b, h) is wholly NaN.
             std::int64_t first = s[2];
             while (first > 0) {
               bool all_nan = true;
               for (std::int64_t b = 0; b < s[0] && all_nan; ++b)
                 for (std::int64_t h = 0; h < s[1] && all_nan; ++h)
                   for (std::int64_t d = 0; d < s[3] && all_nan; ++d) all_nan = std::isnan(e.run_out(b, h, first - 1, d));
               if (!all_nan) break;
               --first;
             }
             if (first == s[2]) return std::nullopt;
             Prediction unwritten = truth_prediction(e);
             for (std::int64_t b = 0; b < s[0]; ++b)
               for (std::int64_t h = 0; h < s[1]; ++h)
                 for (std::int64_t i = first; i < s[2]; ++i)
                   for (std::int64_t d = 0; d < s[3]; ++d) unwritten.out(b, h, i, d) = std::numeric_limits<double>::quiet_NaN();
             if (!explains(e, unwritten)) return std::nullopt;
             if (first == s[2] - 1) return std::string("the last query row is left unwritten (the harness's NaN pre-fill)");
             return fmt::format("the last {} of {} query rows are left unwritten (the harness's NaN pre-fill): rows {}..{} "
                                "never land",
                                s[2] - first, s[2], first, s[2] - 1);
           }}};
}

}  // namespace attncheck::diagnosis
