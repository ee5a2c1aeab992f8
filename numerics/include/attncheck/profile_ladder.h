/// \file profile_ladder.h
/// \brief Candidate profiles for a kernel whose internals nobody declared, tightest first: the
/// rungs `attncheck characterize` judges a kernel's outputs under, to name the tightest profile it
/// behaves like ("fp16 P·V accumulation") and the next tighter one it breaks.
#pragma once

#include <string>
#include <vector>

#include "attncheck/numerics_profile.h"

namespace attncheck {

struct ProfileRung {
  std::string name;         ///< "fp32, fast exp (u_E = 2^-13)"
  NumericsProfile profile;  ///< the declared profile's conventions with the rung's rounding stages
};

/// The rungs for a kernel that declared `declared`, ordered by the size of their leading error
/// term on long rows (numerics/README.md §2.13). Not a chain on every problem: fp16 P·V sums are
/// tighter than bf16 P on two keys and far looser on a thousand, so a kernel is said to satisfy
/// the first rung from which every looser rung passes too. The conventions (input and output
/// dtypes, mask dtype, LSE, empty rows, strides, determinism) are the declaration's; the stages
/// where values are rounded (scores, P, accumulators, operand rounding, exp accuracy) the rung's.
std::vector<ProfileRung> profile_ladder(const NumericsProfile& declared);

}  // namespace attncheck
