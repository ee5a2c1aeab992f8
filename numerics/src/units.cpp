// The units of a numerics profile (numerics/README.md §2.3) and γ_N.
#include "units.h"

#include <cmath>
#include <limits>

namespace attncheck::detail {
namespace {

double default_if_zero(double value) { return value > 0 ? value : 0x1p-22; }

// Whether every value of `from` is a value of `to`: then rounding to `to` is exact.
bool converts_exactly(DType from, DType to) {
  return from == to || to == DType::F64 || (to == DType::F32 && from != DType::F64);
}

// u of an operand rounding stage inside the kernel: 0 when there is none or it is exact.
double stage_roundoff(DType input, const std::optional<DType>& stage) {
  return stage && !converts_exactly(input, *stage) ? unit_roundoff(*stage) : 0.0;
}

}  // namespace

// A bound on |θ_N| for 1 + θ_N = ∏_{i≤N} (1 + δ_i)^{±1}, |δ_i| ≤ u: every factor lies in
// [1 − u, 1/(1 − u)], so |θ_N| ≤ (1 − u)^{−N} − 1 (the lower side, 1 − (1 − u)^N, is smaller).
// For Nu < 1 this is γ_N(u) = Nu/(1 − Nu) [Higham, Lemma 3.1], which Bernoulli's
// (1 − u)^N ≥ 1 − Nu shows is the larger, and is kept there so that every bound below Nu = 1
// keeps its value. Beyond Nu = 1, γ_N has no value but the product is still bounded: it grows
// like e^{Nu} (fp16 accumulation over 8192 keys: e^4 − 1 ≈ 54). Such a τ is honest and
// guarantees almost nothing; the verdict's guaranteed relative accuracy (τ/|O|) says so, and
// the accuracy verdict judges the kernel there (numerics/README.md §2.6, §4.5).
double gamma(double n, double u) {
  const double nu = n * u;
  return nu < 1.0 ? nu / (1.0 - nu) : std::expm1(-n * std::log1p(-u));
}

Units units_of(const NumericsProfile& p) {
  Units u{};
  const bool rz = p.accumulation_rounding == Rounding::TowardZero;
  // Round-toward-zero errs by up to a whole ulp, 2u, and always in the same direction (§3.2).
  const double rounding_factor = rz ? 2.0 : 1.0;
  const DType dot = p.score_accumulator.value_or(p.score);
  u.u_dot = rounding_factor * unit_roundoff(dot);
  u.u_s = unit_roundoff(p.score);
  u.narrow_score_store = unit_roundoff(p.score) > unit_roundoff(dot);
  u.u_e = default_if_zero(p.exp_relative_error);
  u.u_t = default_if_zero(p.tanh_relative_error);
  // The exp delivers e^{x} with relative error u_E in fp32 (or wider): that rounding is inside
  // u_E. P costs a separate rounding only when it is stored narrower than fp32. In particular
  // P kept in an fp32 accumulator is not re-rounded, and the product p_k·V_kj's own rounding
  // belongs to the accumulation's γ_N (an inner-product bound counts its products' roundings).
  // An fp16 accumulator with fp16 P still rounds the fp32 exp result to fp16: that is E_P.
  u.u_p = unit_roundoff(p.probability) > unit_roundoff(DType::F32) ? unit_roundoff(p.probability) : 0.0;
  u.u_a = unit_roundoff(p.accumulator);
  u.u_a_rounding = rounding_factor * u.u_a;
  u.u_o = unit_roundoff(p.output);
  // η_O: half the output's subnormal spacing, or its smallest normal when subnormals flush.
  // η_A: the absolute error of one accumulator operation whose result is subnormal (half the
  // subnormal spacing, or the smallest normal under FTZ). The relative model fl(x∘y) =
  // (x∘y)(1 + δ) does not hold there [Higham §2.1]; it matters when V itself is tiny.
  u.eta_a = p.flushes_subnormals ? smallest_normal(p.accumulator) : smallest_subnormal(p.accumulator) / 2;
  u.eta_o = p.flushes_subnormals ? smallest_normal(p.output)
                                 : std::max(smallest_subnormal(p.output) / 2, std::numeric_limits<double>::denorm_min());
  u.u_q = stage_roundoff(p.input, p.query_rounding);
  u.u_k = stage_roundoff(p.input, p.key_rounding);
  u.u_v = stage_roundoff(p.input, p.value_rounding);
  if (u.u_v > 0) {
    const DType v = *p.value_rounding;
    u.eta_v = p.flushes_subnormals ? smallest_normal(v) : smallest_subnormal(v) / 2;
  }
  const DType row_sum = p.row_sum_dtype();
  u.separate_row_sum = row_sum != p.accumulator;
  u.u_r = unit_roundoff(row_sum);
  u.u_r_rounding = rounding_factor * u.u_r;
  u.eta_r = p.flushes_subnormals ? smallest_normal(row_sum) : smallest_subnormal(row_sum) / 2;
  return u;
}

}  // namespace attncheck::detail
