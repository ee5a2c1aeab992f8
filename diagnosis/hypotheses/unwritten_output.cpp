// Output elements still holding the harness's NaN pre-fill (execute.h): never written.
#include <fmt/format.h>

#include "../src/alternatives.h"
#include "tensor_names.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> unwritten_output_hypotheses() {
  return {{"unwritten-output", "leaves elements of O unwritten (they hold the harness's NaN pre-fill)",
           [](const FailureEvidence& e) -> std::optional<std::string> {
             for (const std::string_view tensor : {"out", "lse"})
               if (const auto finding = memory_finding(e, tensor, "never written")) {
                 const auto colon = finding->find(": ");
                 return fmt::format("leaves elements of {} unwritten, holding the NaN pre-fill ({})", display_name(tensor),
                                    finding->substr(colon + 2));
               }
             return std::nullopt;
           }}};
}

}  // namespace attncheck::diagnosis
