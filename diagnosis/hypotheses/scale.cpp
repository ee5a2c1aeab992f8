// The softmax scale σ mistaken (problem.h: unset means 1/√Dk): 1/Dk (which is also the default σ
// applied twice), or no scaling at all. Where Dk = 1 both are the truth and neither can be named.
#include <cmath>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {
namespace {

Hypothesis scaled(std::string name, std::string statement, double (*scale_of)(const Problem&)) {
  return alternative_reference(std::move(name), std::move(statement),
                               [scale_of](const FailureEvidence& e) -> std::optional<Alteration> {
                                 Problem p = e.attention_case.problem;
                                 p.scale = scale_of(p);
                                 return Alteration{p, e.data};
                               });
}

}  // namespace

std::vector<Hypothesis> scale_hypotheses() {
  return {
      scaled("scale-one-over-d", "matches the reference with scale 1/Dk instead of the problem's",
             [](const Problem& p) { return 1.0 / static_cast<double>(p.qk_dim); }),
      scaled("scale-missing", "matches the reference with no scale (σ = 1): scores not scaled",
             [](const Problem&) { return 1.0; }),
  };
}

}  // namespace attncheck::diagnosis
