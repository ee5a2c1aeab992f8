// A guard region around an output changed: the kernel wrote outside the tensor (execute.cpp's
// "out-of-bounds write after the end" / "before the start").
#include <fmt/format.h>

#include "../src/alternatives.h"
#include "tensor_names.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> out_of_bounds_write_hypotheses() {
  std::vector<Hypothesis> list;
  for (const char* side : {"after the end", "before the start"}) {
    const std::string where = side[0] == 'a' ? "past the end of" : "before the start of";
    list.push_back({side[0] == 'a' ? "writes-past-output" : "writes-before-output", "writes " + where + " O",
                    [side = std::string(side), where](const FailureEvidence& e) -> std::optional<std::string> {
                      for (const std::string_view tensor : kTensorNames)
                        if (const auto finding = memory_finding(e, tensor, fmt::format("out-of-bounds write {}", side))) {
                          const auto at = finding->find("first bad element");
                          return fmt::format("writes {} {}{}", where, display_name(tensor),
                                             at == std::string::npos ? std::string() : fmt::format(" ({})", finding->substr(at)));
                        }
                      return std::nullopt;
                    }});
  }
  return list;
}

}  // namespace attncheck::diagnosis
