/// \file hypothesis.h
/// \brief One entry of the diagnosis catalogue: a known wrong convention or classic bug, with the
/// test that decides whether a failure's evidence is what that bug leaves behind.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "attncheck/evidence.h"

namespace attncheck::diagnosis {

struct Hypothesis {
  std::string name;       ///< stable, lower-case, hyphenated: "window-exclusive"
  std::string statement;  ///< one line, what the kernel does: "matches the reference with window bounds exclusive …"
  /// Nullopt when the evidence does not show this bug, or cannot tell it from the truth. When it
  /// does, the statement to print: `statement`, or a sharper one with what the evidence names
  /// ("modifies Q in place (first changed byte at offset 0)").
  std::function<std::optional<std::string>(const FailureEvidence&)> test;
  /// Named only when no hypothesis before it in the catalogue holds. An alternative profile
  /// widens τ, so it accepts any deviation small enough, a wrong scale on small logits included:
  /// it is the explanation of last resort, never beside a sharper one.
  bool only_when_unexplained = false;
};

/// Every hypothesis, most specific first (the order diagnose() reports them in): the evidence
/// kinds that name a bug outright, the conventions, the alternative references, the alternative
/// profiles (the narrowest dtype first), and last the generic memory findings.
std::vector<Hypothesis> catalogue();

}  // namespace attncheck::diagnosis
