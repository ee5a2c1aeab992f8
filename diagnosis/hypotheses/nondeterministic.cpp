// Equal inputs, runs that differ bit for bit, while the profile declares determinism: the
// determinism property's probe (properties/families/determinism.cpp words it "run N differs from
// run 0"), or any failure whose case the engine ran once more (FailureEvidence::rerun_out) with
// another result, which is how a metamorphic property's failure turns out to be noise.
#include <bit>
#include <cmath>
#include <cstdint>
#include <fmt/format.h>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> nondeterministic_hypotheses() {
  return {{"nondeterministic", "two runs of the same inputs differ bitwise: not deterministic as declared",
           [](const FailureEvidence& e) -> std::optional<std::string> {
             if (!e.profile.deterministic) return std::nullopt;
             if (e.rerun_out && e.rerun_out->shape == e.run_out.shape && !e.run_out.values.empty()) {
               for (std::size_t n = 0; n < e.run_out.values.size(); ++n) {
                 const double a = e.run_out.values[n], b = e.rerun_out->values[n];
                 if (std::bit_cast<std::uint64_t>(a) != std::bit_cast<std::uint64_t>(b) && !(std::isnan(a) && std::isnan(b)))
                   return fmt::format("two runs of the same inputs differ bitwise: not deterministic as declared (flat "
                                      "index {}: {} vs {})",
                                      n, a, b);
               }
             }
             if (e.kind != FailureKind::Probe || e.message.find("differs from run") == std::string::npos)
               return std::nullopt;
             return "two runs of the same inputs differ bitwise: not deterministic as declared (" + e.message + ")";
           }}};
}

}  // namespace attncheck::diagnosis
