// The reference's own exp, log and tanh (kernels/elementary.h) against long double libm (x87
// extended precision: 11 more bits than double, so its value is the true one to well below the
// ulp measured here). The bounds are the ones elementary.h states; the special values are IEEE's.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "kernels/elementary.h"

namespace attncheck::detail {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// |got − exact| in units of the last place of the double nearest `exact` (subnormal ulps below
// 2^-1022).
double ulp_error(double got, long double exact) {
  const double nearest = static_cast<double>(exact);
  const double ulp = nearest == 0 ? std::numeric_limits<double>::denorm_min()
                                  : std::nextafter(std::fabs(nearest), kInf) - std::fabs(nearest);
  return static_cast<double>(std::fabs(static_cast<long double>(got) - exact) / ulp);
}

// The largest ulp_error seen, and where.
struct WorstError {
  double ulps = 0, at = 0;
  void record(double x, double got, long double exact) {
    if (const double e = ulp_error(got, exact); e > ulps) ulps = e, at = x;
  }
};

TEST(Elementary, ExpIsWithinOneUlpOverItsWholeRange) {
  std::mt19937_64 rng(1);
  WorstError worst;
  auto check = [&](double x) { worst.record(x, exp(x), std::exp(static_cast<long double>(x))); };
  std::uniform_real_distribution<double> everywhere(-745.0, 709.7), softmax(-40.0, 0.0), small(-1e-3, 1e-3);
  for (int i = 0; i < 300000; ++i) check(everywhere(rng)), check(softmax(rng)), check(small(rng));
  for (double x = -745.0; x < -700.0; x += 0.0137) check(x);  // subnormal results: one rounding
  EXPECT_LE(worst.ulps, 1.0) << "at x = " << worst.at;
}

TEST(Elementary, ExpSpecialValues) {
  EXPECT_EQ(exp(0.0), 1.0);
  EXPECT_EQ(exp(-0.0), 1.0);
  EXPECT_EQ(exp(-kInf), 0.0);
  EXPECT_FALSE(std::signbit(exp(-kInf)));  // a masked key weighs +0
  EXPECT_EQ(exp(kInf), kInf);
  EXPECT_EQ(exp(710.0), kInf);
  EXPECT_EQ(exp(-746.0), 0.0);
  EXPECT_TRUE(std::isnan(exp(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_EQ(exp(-745.1), std::numeric_limits<double>::denorm_min());  // e^-745.1 ≈ 0.61·2^-1074
}

TEST(Elementary, LogIsWithinOneUlp) {
  std::mt19937_64 rng(2);
  WorstError worst;
  auto check = [&](double x) { worst.record(x, log(x), std::log(static_cast<long double>(x))); };
  std::uniform_real_distribution<double> mantissa(1.0, 2.0), near_one(0.999, 1.001), row_sum(1.0, 40000.0);
  std::uniform_int_distribution<int> exponent(-1074, 1023);
  for (int i = 0; i < 300000; ++i)
    check(std::ldexp(mantissa(rng), exponent(rng))), check(near_one(rng)), check(row_sum(rng));
  EXPECT_LE(worst.ulps, 1.0) << "at x = " << worst.at;
}

TEST(Elementary, LogSpecialValues) {
  EXPECT_EQ(log(1.0), 0.0);
  EXPECT_EQ(log(0.0), -kInf);
  EXPECT_EQ(log(kInf), kInf);
  EXPECT_TRUE(std::isnan(log(-1.0)));
  EXPECT_TRUE(std::isnan(log(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_NEAR(log(std::numeric_limits<double>::denorm_min()), -744.44007192138126, 1e-12);  // −1074·ln 2
}

TEST(Elementary, TanhIsWithinTwoUlp) {
  std::mt19937_64 rng(3);
  WorstError worst;
  auto check = [&](double x) { worst.record(x, tanh(x), std::tanh(static_cast<long double>(x))); };
  std::uniform_real_distribution<double> wide(-25.0, 25.0), near_switch(0.5, 0.6), tiny(-1e-6, 1e-6);
  for (int i = 0; i < 300000; ++i) check(wide(rng)), check(near_switch(rng)), check(-near_switch(rng)), check(tiny(rng));
  EXPECT_LE(worst.ulps, 2.0) << "at x = " << worst.at;
}

TEST(Elementary, TanhSpecialValues) {
  EXPECT_EQ(tanh(0.0), 0.0);
  EXPECT_TRUE(std::signbit(tanh(-0.0)));
  EXPECT_EQ(tanh(kInf), 1.0);
  EXPECT_EQ(tanh(-kInf), -1.0);
  EXPECT_EQ(tanh(30.0), 1.0);
  EXPECT_TRUE(std::isnan(tanh(std::numeric_limits<double>::quiet_NaN())));
}

}  // namespace
}  // namespace attncheck::detail
