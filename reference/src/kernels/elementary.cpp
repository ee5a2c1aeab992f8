#include "kernels/elementary.h"

#include <bit>
#include <cmath>
#include <limits>
#include <initializer_list>
#include <iterator>

namespace attncheck::detail {

double log(double x) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (x != x || x == inf) return x;
  if (x <= 0) return x == 0 ? -inf : std::numeric_limits<double>::quiet_NaN();
  int exponent = 0;
  if (x < 0x1p-1022) {  // subnormal: scale into the normal range (exact)
    x *= 0x1p54;
    exponent = -54;
  }
  const auto bits = std::bit_cast<std::uint64_t>(x);
  exponent += static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  double f = std::bit_cast<double>((bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);  // [1, 2)
  if (f > 0x1.6a09e667f3bcdp0) {  // √2: keep f in [√½, √2) so that |s| ≤ 0.1716
    f *= 0.5;
    exponent += 1;
  }
  // ln f = ln(1 + g), g = f − 1 exact (Sterbenz), as g − (g²/2 − s(g²/2 + R)) with
  // s = g/(2 + g) and R = 2s²/3 + 2s⁴/5 + … (the identity 2s = g − s·g turns 2 atanh(s) into
  // this form): the leading g is exact and everything subtracted from it is small, so the result
  // carries about one rounding.
  const double g = f - 1.0;
  const double s = g / (2.0 + g);
  const double z = s * s;
  double r = 2.0 / 25.0;  // R = z(2/3 + z(2/5 + … + z·2/25)), |s| ≤ 0.1716: the tail is below 2^-62
  for (const double odd : {23.0, 21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0}) r = r * z + 2.0 / odd;
  r *= z;
  const double half_square = 0.5 * g * g;
  constexpr double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
  const double e = exponent;  // e·ln2_hi is exact: ln2_hi has 32 significant bits, |e| < 2^11
  return e * ln2_hi + (g - (half_square - (s * (half_square + r) + e * ln2_lo)));
}

namespace {

// tanh a = Σ_{n≥1} c_n a^{2n−1}, c_n = 2^{2n}(2^{2n} − 1) B_{2n} / (2n)! (B: Bernoulli numbers),
// each the double nearest the exact rational; to n = 19 the tail at a = 0.55 is below 2^-54
// relative (the series' ratio there is (2a/π)² ≈ 0.12).
constexpr double kTanhSeries[] = {
    -0x1.5555555555555p-2, 0x1.1111111111111p-3,  -0x1.ba1ba1ba1ba1cp-5, 0x1.664f4882c10fap-6,
    -0x1.226e355e6c23dp-7, 0x1.d6d3d0e157de0p-9,  -0x1.7da36452b75e3p-10, 0x1.3558248036744p-11,
    -0x1.f57d7734d1664p-13, 0x1.967e18afcafadp-14, -0x1.497d8eea25259p-15, 0x1.0b132d39a6050p-16,
    -0x1.b0f72d3ee24e9p-18, 0x1.5ef2da474e5b7p-19, -0x1.1c77df95c1c0dp-20, 0x1.cd299de4ae6bbp-22,
    -0x1.75cde6563fed9p-23, 0x1.2efe8db3aff1fp-24};

}  // namespace

double tanh(double x) {
  const double a = std::fabs(x);
  double t;
  if (a > 22.0) {
    t = 1.0;
  } else if (a >= 0.55) {
    t = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);  // e^{2a} ≥ 3: the subtraction loses at most one bit
  } else {
    // a + a·a²·(c_2 + c_3 a² + …): the correction is at most a third of a, so its rounding
    // errors stay below half an ulp of the sum.
    const double a2 = a * a;
    double series = kTanhSeries[std::size(kTanhSeries) - 1];
    for (std::size_t n = std::size(kTanhSeries) - 1; n-- > 0;) series = series * a2 + kTanhSeries[n];
    t = a + a * (a2 * series);
  }
  return std::copysign(t, x);  // also keeps −0 and NaN
}

}  // namespace attncheck::detail
