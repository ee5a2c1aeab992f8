#include "attncheck/hypothesis.h"

namespace attncheck::diagnosis {

#define ATTNCHECK_HYPOTHESES(name) std::vector<Hypothesis> name##_hypotheses();
#include "catalogue.def"
#undef ATTNCHECK_HYPOTHESES

std::vector<Hypothesis> catalogue() {
  std::vector<Hypothesis> all;
  // Built on every call: the catalogue is a value, not state shared between callers.
  for (auto* family : {
#define ATTNCHECK_HYPOTHESES(name) &name##_hypotheses,
#include "catalogue.def"
#undef ATTNCHECK_HYPOTHESES
       })
    for (Hypothesis& h : family()) all.push_back(std::move(h));
  return all;
}

}  // namespace attncheck::diagnosis
