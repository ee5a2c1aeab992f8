// A call that never returns: the isolated run was killed at its timeout.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> timeout_hypotheses() {
  return {{"hang", "the call does not return on the minimal case (a hang)",
           [](const FailureEvidence& e) -> std::optional<std::string> {
             if (e.kind != FailureKind::Timeout) return std::nullopt;
             return "the call does not return on the minimal case (" + e.attention_case.problem.describe() +
                    "), a hang: " + e.message;
           }}};
}

}  // namespace attncheck::diagnosis
