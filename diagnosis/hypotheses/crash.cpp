// A call that dies: the isolated run's evidence is the signal, on the minimal case.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> crash_hypotheses() {
  return {{"crash", "the call crashes on the minimal case", [](const FailureEvidence& e) -> std::optional<std::string> {
             if (e.kind != FailureKind::Crash) return std::nullopt;
             return "the call crashes on the minimal case (" + e.attention_case.problem.describe() + "): " + e.message;
           }}};
}

}  // namespace attncheck::diagnosis
