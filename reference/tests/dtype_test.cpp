// Rounding into the narrow formats, checked against values derived by hand from the formats'
// definitions (IEEE 754 binary16; bfloat16 = the top 16 bits of binary32).
#include <gtest/gtest.h>

#include <cmath>

#include "attncheck/dtype.h"

namespace attncheck {
namespace {

TEST(DType, F16RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even significand, 1.
  EXPECT_EQ(round_to(DType::F16, 1.0 + std::ldexp(1.0, -11)), 1.0);
  // 1 + 3·2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
  EXPECT_EQ(round_to(DType::F16, 1.0 + 3 * std::ldexp(1.0, -11)), 1.0 + std::ldexp(1.0, -9));
  // 65504 is the largest finite; 65520 (max + half ulp) overflows under round-to-nearest.
  EXPECT_EQ(round_to(DType::F16, 65519.0), 65504.0);
  EXPECT_TRUE(std::isinf(round_to(DType::F16, 65520.0)));
  // Subnormals are multiples of 2^-24; 2^-25 ties to even (0), 3·2^-25 ties up to 2^-23.
  EXPECT_EQ(round_to(DType::F16, std::ldexp(1.0, -25)), 0.0);
  EXPECT_EQ(round_to(DType::F16, 3 * std::ldexp(1.0, -25)), std::ldexp(1.0, -23));
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(round_to(DType::BF16, 1.0 + std::ldexp(1.0, -8)), 1.0);
  EXPECT_EQ(round_to(DType::BF16, 1.0 + 3 * std::ldexp(1.0, -8)), 1.0 + std::ldexp(1.0, -6));
  EXPECT_EQ(round_to(DType::BF16, 3.14159), 3.140625);  // 3.14159 = 1.5708·2: 1.5703125·2 is nearest
}

TEST(DType, BitPatternsRoundTrip) {
  EXPECT_EQ(to_f16_bits(1.0), 0x3c00);
  EXPECT_EQ(to_f16_bits(-2.0), 0xc000);
  EXPECT_EQ(to_f16_bits(65504.0), 0x7bff);
  EXPECT_EQ(to_f16_bits(std::ldexp(1.0, -24)), 0x0001);
  EXPECT_EQ(to_bf16_bits(1.0), 0x3f80);
  EXPECT_EQ(to_bf16_bits(-2.0), 0xc000);
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto b = static_cast<std::uint16_t>(bits);
    const double h = from_f16_bits(b);
    if (!std::isnan(h)) {
      EXPECT_EQ(to_f16_bits(h), b) << std::hex << bits;
    }
    const double bf = from_bf16_bits(b);
    if (!std::isnan(bf)) {
      EXPECT_EQ(to_bf16_bits(bf), b) << std::hex << bits;
    }
  }
}

TEST(DType, ParsesNamesAndAliases) {
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  EXPECT_EQ(parse_dtype("half"), DType::F16);
  EXPECT_FALSE(parse_dtype("int8").has_value());
  EXPECT_EQ(dtype_name(DType::F32), "f32");
}

}  // namespace
}  // namespace attncheck
