// exp, log and tanh of the reference, defined here rather than taken from libm.
//
// The reference is a specification: its bytes must not depend on the machine that computes them
// (reference/README.md, "Reproducibility"). glibc picks among several builds of exp and log at
// load time (an FMA build on CPUs that have it), and they are accurate to within an ulp, not
// correctly rounded, so two machines may round the same argument differently. These functions
// use only +, −, ×, ÷, fused multiply-add (std::fma) and bit operations, each rounded once (the
// reference builds with -ffp-contract=off), so every CPU and compiler computes the same bits. They are inline so that
// the kernels' loops vectorize over them; elsewhere call the kernels (exp_shifted), since in the
// baseline build std::fma is a call into glibc.
//
// Accuracy (tests/elementary_test.cpp, against long double libm): exp within 1 ulp, log within
// 1 ulp, tanh within 2 ulp — far below anything an fp32 tolerance can see.
#pragma once

#include <cstdint>

namespace attncheck::detail {

// The inline functions have internal linkage: kernels_avx2.cpp and kernels_avx512.cpp compile
// them with AVX instructions, and one shared (weak) definition would let the linker hand an AVX
// copy to baseline code. For the same reason they use builtins, not std:: templates.
namespace {

// Round-to-nearest of a double to an integer-valued double: adding 1.5·2^52 pushes the fraction
// bits out (|x| < 2^51), and the bits of the sum hold the integer in their low half.
inline constexpr double kRoundingShift = 0x1.8p52;
inline constexpr std::int64_t kRoundingShiftBits = 0x4338000000000000;

// 2^n for an integer-valued double n in [−1022, 1023], by writing the exponent field.
inline double exact_power_of_two(double n) {
  const std::int64_t integer = __builtin_bit_cast(std::int64_t, n + kRoundingShift) - kRoundingShiftBits;
  return __builtin_bit_cast(double, static_cast<std::uint64_t>(integer + 1023) << 52);
}

// c ? a : b on the bits, which compilers vectorize where a conditional on doubles stays a branch
// (GCC will not if-convert a floating-point comparison that may trap).
inline double select(bool c, double a, double b) {
  const std::uint64_t all = -static_cast<std::uint64_t>(c);
  return __builtin_bit_cast(double, (__builtin_bit_cast(std::uint64_t, a) & all) | (__builtin_bit_cast(std::uint64_t, b) & ~all));
}

/// e^x, within 1 ulp, and exactly +0 for x = −inf.
///
/// x = n·ln 2 + r with |r| ≤ ln 2 / 2 (Cody–Waite: ln 2 in two parts, the first with 11 trailing
/// zero bits so that n·ln2_hi is exact for |n| < 2^11, and x − n·ln2_hi exact by Sterbenz's lemma);
/// e^r − 1 by its Taylor series to r^13/13! (the next term is below 2^-57 relative); e^x = 2^n e^r.
/// 2^n is applied in two exact steps when |n| > 1000, so a subnormal result is rounded once.
inline double exp(double x) {
  constexpr double log2e = 0x1.71547652b82fep0;
  constexpr double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
  const double n = (x * log2e + kRoundingShift) - kRoundingShift;
  const double r = (x - n * ln2_hi) - n * ln2_lo;
  // e^r − 1 = r + r²(1/2! + r(1/3! + … + r/13!)), Horner from the highest term with one rounding
  // per step (std::fma, as the products of fixed_order.h). The coefficients are exact integer
  // quotients, folded at compile time with one IEEE rounding each.
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = __builtin_fma(p, r, 1.0 / 479001600.0);
  p = __builtin_fma(p, r, 1.0 / 39916800.0);
  p = __builtin_fma(p, r, 1.0 / 3628800.0);
  p = __builtin_fma(p, r, 1.0 / 362880.0);
  p = __builtin_fma(p, r, 1.0 / 40320.0);
  p = __builtin_fma(p, r, 1.0 / 5040.0);
  p = __builtin_fma(p, r, 1.0 / 720.0);
  p = __builtin_fma(p, r, 1.0 / 120.0);
  p = __builtin_fma(p, r, 1.0 / 24.0);
  p = __builtin_fma(p, r, 1.0 / 6.0);
  p = __builtin_fma(p, r, 0.5);
  const double e_r = 1.0 + (r + (r * r) * p);
  // Clamp n to what the two steps can represent; the selects below settle the ends.
  const double n_clamped = select(n > 1030.0, 1030.0, select(n < -1080.0, -1080.0, n));
  const double split = select(n_clamped > 1000.0, 1000.0, select(n_clamped < -1000.0, -1000.0, 0.0));
  const double result = (e_r * exact_power_of_two(n_clamped - split)) * exact_power_of_two(split);
  // Past the ends: overflow, and below half the smallest subnormal (−inf included). A NaN x
  // has already made `result` NaN.
  return select(x > 709.782712893384, __builtin_inf(), select(x < -745.2, 0.0, result));
}

}  // namespace

/// ln x, within 1 ulp: x = 2^e·f with f in [√½, √2), ln f = 2 atanh(s) with s = (f − 1)/(f + 1),
/// |s| ≤ 0.1716, by its series to s^25 (the next term is below 2^-62 relative), arranged so that
/// f − 1 leads (elementary.cpp).
double log(double x);

/// tanh x, within 2 ulp: its odd Taylor series below |x| = 0.55, 1 − 2/(e^{2|x|} + 1) beyond,
/// ±1 past |x| = 22 (where 1 − tanh x < 2^-63).
double tanh(double x);

}  // namespace attncheck::detail
