#include "attncheck/diagnosis.h"

#include "attncheck/hypothesis.h"

namespace attncheck {

std::vector<Diagnosis> diagnose(const FailureEvidence& evidence) {
  std::vector<Diagnosis> named;
  for (const diagnosis::Hypothesis& hypothesis : diagnosis::catalogue()) {
    if (hypothesis.only_when_unexplained && !named.empty()) continue;
    try {
      if (std::optional<std::string> statement = hypothesis.test(evidence))
        named.push_back({hypothesis.name, std::move(*statement)});
    } catch (const ProblemError&) {
      // The hypothesis's altered problem is not a valid one for this case (a window it would
      // shift past the keys, say): it cannot be what the kernel computed, so it is not named.
    }
  }
  return named;
}

}  // namespace attncheck
