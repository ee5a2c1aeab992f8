// The softmax numerators right, the normalizer wrong (a sum over the queries instead of the keys,
// a stale or partial row sum): each row of O is the reference's row times a constant c_i ≠ 1.
// c_i is fitted by least squares; the row is explained when |Ô − c_i·O| ≤ max(1, |c_i|)·τ
// everywhere (dividing by another exact normalizer scales the kernel's error by the same
// factor), and the truth is told apart where |c_i·O − O| exceeds (max(1, |c_i|) + 1)·τ. A
// row of fewer than 3 elements fits any constant, so Dv ≥ 3 is required.
#include <algorithm>
#include <cmath>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> wrong_normalizer_hypotheses() {
  const std::string statement =
      "each row of O is the reference's times a row constant: the softmax normalized by the wrong sum (e.g. over queries "
      "instead of keys)";
  return {{"softmax-wrong-normalizer", statement, [statement](const FailureEvidence& e) -> std::optional<std::string> {
             if (!has_output(e)) return std::nullopt;
             const Shape4& s = e.run_out.shape;
             if (s[3] < 3) return std::nullopt;
             bool distinguishable = false;
             for (std::int64_t b = 0; b < s[0]; ++b)
               for (std::int64_t h = 0; h < s[1]; ++h)
                 for (std::int64_t i = 0; i < s[2]; ++i) {
                   double cross = 0, norm = 0;
                   for (std::int64_t d = 0; d < s[3]; ++d) {
                     const double x = e.run_out(b, h, i, d), o = e.reference.out(b, h, i, d);
                     if (!std::isfinite(x) || !std::isfinite(o)) return std::nullopt;
                     cross += x * o;
                     norm += o * o;
                   }
                   const double c = norm > 0 ? cross / norm : 1.0;
                   const double widen = std::max(1.0, std::fabs(c));
                   for (std::int64_t d = 0; d < s[3]; ++d) {
                     const double x = e.run_out(b, h, i, d), o = e.reference.out(b, h, i, d), tau = e.tau(b, h, i, d);
                     if (!(std::fabs(x - c * o) <= widen * tau)) return std::nullopt;
                     if (std::fabs(c * o - o) > (widen + 1) * tau) distinguishable = true;
                   }
                 }
             if (!distinguishable) return std::nullopt;
             return statement;
           }}};
}

}  // namespace attncheck::diagnosis
