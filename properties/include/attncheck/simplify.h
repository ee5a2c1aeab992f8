/// \file simplify.h
/// \brief The steps that make a failing case smaller after RapidCheck's shrinking: drop one
/// option, or shrink one dimension or value class. The engine keeps a step only when the same
/// property still fails, and repeats until no step is kept: the case is then 1-minimal.
///
/// RapidCheck shrinks each draw toward its generator's first choice, one draw at a time, and
/// stops at a local minimum of that order: a case whose softcap, mask and poisoning are not
/// needed can keep them because shrinking them alone changes what later draws produce. The
/// steps here act on the drawn case as a whole, so each removal is judged on its own.
#pragma once

#include <string>
#include <vector>

#include "attncheck/case.h"

namespace attncheck {

struct SimplificationStep {
  std::string option;  ///< the option it removes ("softcap", "mask", …); empty for a size step
  std::string what;    ///< "softcap=15 → off", "Lk 130 → 65"
  AttentionCase result;
};

/// Every single-step simplification of `c` that is a valid case, options first, then sizes
/// (1, half, minus one), each at most once: smaller in one respect, the same in all others.
std::vector<SimplificationStep> simplification_steps(const AttentionCase& c);

/// The options of `c` that a step could remove (the names SimplificationStep::option uses).
std::vector<std::string> removable_options(const AttentionCase& c);

}  // namespace attncheck
