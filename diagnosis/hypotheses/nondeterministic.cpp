// The determinism property's probe: equal inputs, runs that differ bit for bit, while the
// profile declares determinism (properties/families/determinism.cpp words it "run N differs from
// run 0").
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> nondeterministic_hypotheses() {
  return {{"nondeterministic", "two runs of the same inputs differ bitwise: not deterministic as declared",
           [](const FailureEvidence& e) -> std::optional<std::string> {
             if (e.kind != FailureKind::Probe || !e.profile.deterministic ||
                 e.message.find("differs from run") == std::string::npos)
               return std::nullopt;
             return "two runs of the same inputs differ bitwise: not deterministic as declared (" + e.message + ")";
           }}};
}

}  // namespace attncheck::diagnosis
