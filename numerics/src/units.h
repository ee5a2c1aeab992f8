// The unit roundoffs a numerics profile implies and the accumulation bound γ_N: what the
// forward's τ (tolerance.cpp) and the gradients' τ (gradient_tolerance.cpp) both derive their
// terms from (numerics/README.md §2.3), defined once.
#pragma once

#include "attncheck/numerics_profile.h"

namespace attncheck::detail {

/// γ_N(u), and its continuation past Nu = 1 (units.cpp).
double gamma(double n, double u);

/// A profile's unit roundoffs, shared by every element of a row (numerics/README.md §2.3).
struct Units {
  double u_dot, u_s, u_e, u_t, u_p, u_a, u_a_rounding, u_o, eta_o, eta_a;
  bool narrow_score_store;  // scores rounded to `score` after a wider accumulator
  // ABI 2.1 stages (§2.12). All zero, and separate_row_sum false, for a 2.0 profile.
  double u_q = 0, u_k = 0, u_v = 0, eta_v = 0;
  double u_r = 0, u_r_rounding = 0, eta_r = 0;
  bool separate_row_sum = false;  // the row sum has its own accumulator dtype
};

/// The units of `p` (numerics/README.md §2.3).
Units units_of(const NumericsProfile& p);

}  // namespace attncheck::detail
