#include "attncheck/dtype.h"

#include <cstring>

#include <bit>
#include <cmath>
#include <limits>

namespace attncheck {

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F64: return "f64";
    case DType::E4M3: return "e4m3";
    case DType::E5M2: return "e5m2";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  if (name == "f32" || name == "fp32" || name == "float32" || name == "float") return DType::F32;
  if (name == "f16" || name == "fp16" || name == "float16" || name == "half") return DType::F16;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "f64" || name == "fp64" || name == "float64" || name == "double") return DType::F64;
  if (name == "e4m3" || name == "float8_e4m3fn" || name == "fp8_e4m3") return DType::E4M3;
  if (name == "e5m2" || name == "float8_e5m2" || name == "fp8_e5m2") return DType::E5M2;
  return std::nullopt;
}

bool is_fp8(DType dtype) { return dtype == DType::E4M3 || dtype == DType::E5M2; }

int dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
    case DType::E4M3:
    case DType::E5M2: return 1;
  }
  return 0;
}

double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::ldexp(1.0, -24);
    case DType::F16: return std::ldexp(1.0, -11);
    case DType::BF16: return std::ldexp(1.0, -8);
    case DType::F64: return std::ldexp(1.0, -53);
    case DType::E4M3: return std::ldexp(1.0, -4);
    case DType::E5M2: return std::ldexp(1.0, -3);
  }
  return 0;
}

double smallest_normal(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::ldexp(1.0, -126);
    case DType::F16: return std::ldexp(1.0, -14);
    case DType::BF16: return std::ldexp(1.0, -126);
    case DType::F64: return std::numeric_limits<double>::min();
    case DType::E4M3: return std::ldexp(1.0, -6);
    case DType::E5M2: return std::ldexp(1.0, -14);
  }
  return 0;
}

double smallest_subnormal(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::ldexp(1.0, -149);
    case DType::F16: return std::ldexp(1.0, -24);
    case DType::BF16: return std::ldexp(1.0, -133);
    case DType::F64: return std::numeric_limits<double>::denorm_min();
    case DType::E4M3: return std::ldexp(1.0, -9);
    case DType::E5M2: return std::ldexp(1.0, -16);
  }
  return 0;
}

double largest_finite(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::numeric_limits<float>::max();
    case DType::F16: return 65504.0;
    case DType::BF16: return std::ldexp(255.0, 120);  // (2 - 2^-7) * 2^127
    case DType::F64: return std::numeric_limits<double>::max();
    case DType::E4M3: return 448.0;    // 1.75 · 2^8: S.1111.111 is NaN, so 1.110 is the top mantissa
    case DType::E5M2: return 57344.0;  // 1.75 · 2^15
  }
  return 0;
}

namespace {

// Rounds a finite double to a binary format with `precision` significand bits (hidden bit
// included), minimum normal exponent `emin` and maximum finite `max_finite`, ties to even.
// Subnormals are handled by fixing the quantum at 2^(emin - precision + 1), which is exactly what
// gradual underflow does. The work is done in double: every intermediate is exact because the
// quantum is a power of two and std::nearbyint rounds ties to even in the default mode.
double round_binary(double x, int precision, int emin, double max_finite) {
  if (!std::isfinite(x) || x == 0.0) return x;
  int exponent = std::ilogb(x);
  if (exponent < emin) exponent = emin;
  const double quantum = std::ldexp(1.0, exponent - (precision - 1));
  double rounded = std::nearbyint(x / quantum) * quantum;
  // Values at or beyond max_finite + half an ulp overflow to infinity (IEEE RN overflow rule).
  const double overflow_at = max_finite + std::ldexp(1.0, std::ilogb(max_finite) - precision);
  if (std::fabs(x) >= overflow_at) return std::copysign(std::numeric_limits<double>::infinity(), x);
  return rounded;
}

}  // namespace

double round_to(DType dtype, double x) {
  switch (dtype) {
    case DType::F32: return static_cast<double>(static_cast<float>(x));
    case DType::F16: return round_binary(x, 11, -14, 65504.0);
    case DType::BF16: return round_binary(x, 8, -126, largest_finite(DType::BF16));
    case DType::F64: return x;
    case DType::E4M3: {
      // No infinity: what IEEE rounding sends to infinity is NaN here (the non-saturating cvt).
      const double r = round_binary(x, 4, -6, 448.0);
      return std::isinf(r) && std::isfinite(x) ? std::numeric_limits<double>::quiet_NaN() : r;
    }
    case DType::E5M2: return round_binary(x, 3, -14, 57344.0);
  }
  return x;
}

namespace {

// The bits of an 8-bit float with `mantissa_bits` and exponent bias `bias`, from a value already
// representable (round_to): sign, biased exponent (0 for subnormals), mantissa.
std::uint8_t fp8_bits(double r, int mantissa_bits, int bias) {
  const std::uint8_t sign = std::signbit(r) ? 0x80 : 0;
  const double a = std::fabs(r);
  if (a == 0.0) return sign;
  const int emin = 1 - bias;
  const int exponent = std::ilogb(a);
  if (exponent < emin)  // subnormal: a = mantissa · 2^(emin − mantissa_bits)
    return sign | static_cast<std::uint8_t>(std::ldexp(a, mantissa_bits - emin));
  const auto mantissa = static_cast<std::uint8_t>(std::ldexp(a, mantissa_bits - exponent) - std::ldexp(1.0, mantissa_bits));
  return sign | static_cast<std::uint8_t>((exponent + bias) << mantissa_bits) | mantissa;
}

std::uint8_t to_e4m3_bits(double x) {
  const double r = round_to(DType::E4M3, x);
  if (std::isnan(r)) return std::signbit(x) ? 0xff : 0x7f;
  return fp8_bits(r, 3, 7);
}

std::uint8_t to_e5m2_bits(double x) {
  if (std::isnan(x)) return 0x7e;
  const double r = round_to(DType::E5M2, x);
  if (std::isinf(r)) return std::signbit(r) ? 0xfc : 0x7c;
  return fp8_bits(r, 2, 15);
}

double from_e4m3_bits(std::uint8_t bits) {
  const double sign = (bits & 0x80) ? -1.0 : 1.0;
  const int exponent = (bits >> 3) & 0xf;
  const int mantissa = bits & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return std::numeric_limits<double>::quiet_NaN();
  if (exponent == 0) return sign * std::ldexp(mantissa, -9);
  return sign * std::ldexp(8 + mantissa, exponent - 10);
}

double from_e5m2_bits(std::uint8_t bits) {
  const double sign = (bits & 0x80) ? -1.0 : 1.0;
  const int exponent = (bits >> 2) & 0x1f;
  const int mantissa = bits & 0x3;
  if (exponent == 0x1f) return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(mantissa, -16);
  return sign * std::ldexp(4 + mantissa, exponent - 17);
}

}  // namespace

std::uint16_t to_f16_bits(double x) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isnan(x)) return 0x7e00;
  const double r = std::fabs(round_to(DType::F16, x));
  if (std::isinf(r)) return sign | 0x7c00;
  if (r == 0.0) return sign;
  int exponent = std::ilogb(r);
  if (exponent < -14) {  // subnormal: value = mantissa * 2^-24
    return sign | static_cast<std::uint16_t>(std::ldexp(r, 24));
  }
  const auto mantissa = static_cast<std::uint16_t>(std::ldexp(r, 10 - exponent) - 1024.0);
  return sign | static_cast<std::uint16_t>((exponent + 15) << 10) | mantissa;
}

double from_f16_bits(std::uint16_t bits) {
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  if (exponent == 0x1f) return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

std::uint16_t to_bf16_bits(double x) {
  if (std::isnan(x)) return 0x7fc0;
  // bf16 is the top half of an f32; round the double directly to bf16 precision (one rounding,
  // not double->f32->bf16, which could double-round), then the f32 holding it is exact.
  const float exact = static_cast<float>(round_to(DType::BF16, x));
  return static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(exact) >> 16);
}

double from_bf16_bits(std::uint16_t bits) {
  return static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16));
}

void encode_value(DType dtype, double x, std::byte* at) {
  switch (dtype) {
    case DType::F32: {
      const float f = static_cast<float>(x);
      std::memcpy(at, &f, 4);
      return;
    }
    case DType::F16: {
      const std::uint16_t bits = to_f16_bits(x);
      std::memcpy(at, &bits, 2);
      return;
    }
    case DType::BF16: {
      const std::uint16_t bits = to_bf16_bits(x);
      std::memcpy(at, &bits, 2);
      return;
    }
    case DType::F64: std::memcpy(at, &x, 8); return;
    case DType::E4M3: *reinterpret_cast<std::uint8_t*>(at) = to_e4m3_bits(x); return;
    case DType::E5M2: *reinterpret_cast<std::uint8_t*>(at) = to_e5m2_bits(x); return;
  }
}

double decode_value(DType dtype, const std::byte* at) {
  switch (dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, at, 4);
      return f;
    }
    case DType::F16: {
      std::uint16_t bits;
      std::memcpy(&bits, at, 2);
      return from_f16_bits(bits);
    }
    case DType::BF16: {
      std::uint16_t bits;
      std::memcpy(&bits, at, 2);
      return from_bf16_bits(bits);
    }
    case DType::F64: {
      double d;
      std::memcpy(&d, at, 8);
      return d;
    }
    case DType::E4M3: return from_e4m3_bits(*reinterpret_cast<const std::uint8_t*>(at));
    case DType::E5M2: return from_e5m2_bits(*reinterpret_cast<const std::uint8_t*>(at));
  }
  return 0;
}

}  // namespace attncheck
