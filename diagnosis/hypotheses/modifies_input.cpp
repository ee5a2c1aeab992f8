// An input whose bytes changed during the call: the kernel used it as scratch (Q scaled in place).
#include <fmt/format.h>

#include "../src/alternatives.h"
#include "tensor_names.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> modifies_input_hypotheses() {
  return {{"modifies-input", "modifies an input in place", [](const FailureEvidence& e) -> std::optional<std::string> {
             for (const std::string_view tensor : kTensorNames)
               if (const auto finding = memory_finding(e, tensor, "the backend wrote to this input")) {
                 const auto at = finding->find("(first changed");
                 return fmt::format("modifies {} in place{}{}", display_name(tensor), at == std::string::npos ? "" : " ",
                                    at == std::string::npos ? std::string() : finding->substr(at));
               }
             return std::nullopt;
           }}};
}

}  // namespace attncheck::diagnosis
