// A write into the elements an output's strides skip: the kernel assumed compact rows.
#include <fmt/format.h>

#include "../src/alternatives.h"
#include "tensor_names.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> writes_into_padding_hypotheses() {
  return {{"writes-into-padding", "writes into the row padding of O: assumes compact rows whatever the strides say",
           [](const FailureEvidence& e) -> std::optional<std::string> {
             for (const std::string_view tensor : kTensorNames)
               if (memory_finding(e, tensor, "padding its strides skip"))
                 return fmt::format("writes into the row padding of {}: assumes compact rows whatever the strides say",
                                    display_name(tensor));
             return std::nullopt;
           }}};
}

}  // namespace attncheck::diagnosis
