// libFuzzer target: the three one-line text formats, parse_problem, parse_case and
// parse_layer_problem, which read failure reports, fixture metadata and command-line arguments.
//
// Each parser (and validate() after it) may refuse its input with ProblemError and nothing else.
// An input they accept must survive the round trip the formats exist for: describe() of the
// parsed value parses again, validates, and describes itself identically. A failure report whose
// reproduce string does not rebuild the same case is a silent bug, so the harness checks it.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "attncheck/case.h"
#include "attncheck/layer.h"
#include "attncheck/problem.h"
#include "fuzz_support.h"

namespace {

using attncheck::fuzz::invariant_broken;

// Parses and validates `text` with `parse`; nullopt when refused with ProblemError. Any other
// exception escapes.
template <class Parse>
auto accepted(std::string_view text, Parse parse) -> std::optional<decltype(parse(text))> {
  try {
    auto value = parse(text);
    if constexpr (requires { value.validate(); }) value.validate();
    else value.problem.validate();
    return value;
  } catch (const attncheck::ProblemError&) {
    return std::nullopt;
  }
}

// describe() of an accepted value must be accepted again and describe itself identically.
template <class Parse>
void check_round_trip(std::string_view what, std::string_view text, Parse parse) {
  const auto value = accepted(text, parse);
  if (!value) return;
  const std::string described = value->describe();
  const auto again = accepted(described, parse);
  if (!again) invariant_broken(std::string(what) + ": describe() of an accepted value is refused", text, described);
  if (again->describe() != described)
    invariant_broken(std::string(what) + ": describe() changes over a round trip", described, again->describe());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_round_trip("parse_problem", text, [](std::string_view t) { return attncheck::parse_problem(t); });
  check_round_trip("parse_case", text, [](std::string_view t) { return attncheck::parse_case(t); });
  check_round_trip("parse_layer_problem", text, [](std::string_view t) { return attncheck::parse_layer_problem(t); });
  return 0;
}
