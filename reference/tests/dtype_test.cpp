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

// OCP 8-bit floats (OCP "8-bit Floating Point Specification", 2023): e4m3fn has bias 7, mantissa
// 3 bits, S.1111.111 as its only NaN and no infinity; e5m2 has bias 15, mantissa 2 bits and IEEE's
// specials. Every expected bit pattern below is worked out from those definitions.
TEST(DType, E4M3BitPatternsByHand) {
  const auto bits = [](double x) {
    std::byte b{};
    encode_value(DType::E4M3, x, &b);
    return std::to_integer<int>(b);
  };
  EXPECT_EQ(bits(1.0), 0x38);           // exponent 0 + 7 = 0111, mantissa 000
  EXPECT_EQ(bits(-1.0), 0xb8);
  EXPECT_EQ(bits(448.0), 0x7e);         // 1.110 · 2^8: exponent 1111, mantissa 110 (111 is NaN)
  EXPECT_EQ(bits(0x1p-6), 0x08);        // smallest normal: exponent 0001
  EXPECT_EQ(bits(0x1p-9), 0x01);        // smallest subnormal: 0.001 · 2^-6
  EXPECT_EQ(bits(0.0), 0x00);
  EXPECT_EQ(bits(1.0625), 0x38);        // halfway between 1 and 1.125: ties to even (mantissa 000)
  EXPECT_EQ(bits(1.1875), 0x3a);        // halfway between 1.125 and 1.25: ties to even (010)
  EXPECT_EQ(bits(463.9), 0x7e);         // below the overflow midpoint 464: rounds to 448
  EXPECT_EQ(bits(464.0), 0x7f);         // at it: no infinity, so NaN (non-saturating conversion)
  EXPECT_TRUE(std::isnan(round_to(DType::E4M3, 1e6)));
  EXPECT_EQ(round_to(DType::E4M3, 0x1p-10), 0.0);  // half the smallest subnormal: ties to even, 0
  EXPECT_EQ(round_to(DType::E4M3, 0x1.8p-10), 0x1p-9);
  for (int b = 0; b < 256; ++b) {  // every pattern decodes and re-encodes to itself (NaN to NaN)
    const std::byte in{static_cast<unsigned char>(b)};
    const double x = decode_value(DType::E4M3, &in);
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(x)) << b;
      continue;
    }
    EXPECT_EQ(bits(x), b) << b;
  }
  EXPECT_EQ(largest_finite(DType::E4M3), 448.0);
  EXPECT_EQ(unit_roundoff(DType::E4M3), 0x1p-4);
}

TEST(DType, E5M2BitPatternsByHand) {
  const auto bits = [](double x) {
    std::byte b{};
    encode_value(DType::E5M2, x, &b);
    return std::to_integer<int>(b);
  };
  EXPECT_EQ(bits(1.0), 0x3c);            // exponent 0 + 15 = 01111, mantissa 00
  EXPECT_EQ(bits(57344.0), 0x7b);        // 1.11 · 2^15: exponent 11110, mantissa 11
  EXPECT_EQ(bits(0x1p-14), 0x04);        // smallest normal
  EXPECT_EQ(bits(0x1p-16), 0x01);        // smallest subnormal: 0.01 · 2^-14
  EXPECT_EQ(bits(61440.0), 0x7c);        // the overflow midpoint: +inf
  EXPECT_EQ(bits(-INFINITY), 0xfc);
  EXPECT_EQ(bits(1.125), 0x3c);          // halfway between 1 and 1.25: ties to even
  for (int b = 0; b < 256; ++b) {
    const std::byte in{static_cast<unsigned char>(b)};
    const double x = decode_value(DType::E5M2, &in);
    if ((b & 0x7c) == 0x7c && (b & 0x03) != 0) {
      EXPECT_TRUE(std::isnan(x)) << b;
      continue;
    }
    EXPECT_EQ(bits(x), b) << b;
    // e5m2 is binary16's top byte: the same value as that half with a zero low byte.
    EXPECT_EQ(x, from_f16_bits(static_cast<std::uint16_t>(b << 8))) << b;
  }
  EXPECT_EQ(unit_roundoff(DType::E5M2), 0x1p-3);
  EXPECT_EQ(parse_dtype("float8_e4m3fn"), DType::E4M3);
  EXPECT_EQ(parse_dtype("e5m2"), DType::E5M2);
  EXPECT_TRUE(is_fp8(DType::E4M3) && is_fp8(DType::E5M2) && !is_fp8(DType::F16));
}

}  // namespace
}  // namespace attncheck
