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
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  if (name == "f32" || name == "fp32" || name == "float32" || name == "float") return DType::F32;
  if (name == "f16" || name == "fp16" || name == "float16" || name == "half") return DType::F16;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "f64" || name == "fp64" || name == "float64" || name == "double") return DType::F64;
  return std::nullopt;
}

int dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
  }
  return 0;
}

double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::ldexp(1.0, -24);
    case DType::F16: return std::ldexp(1.0, -11);
    case DType::BF16: return std::ldexp(1.0, -8);
    case DType::F64: return std::ldexp(1.0, -53);
  }
  return 0;
}

double smallest_normal(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::ldexp(1.0, -126);
    case DType::F16: return std::ldexp(1.0, -14);
    case DType::BF16: return std::ldexp(1.0, -126);
    case DType::F64: return std::numeric_limits<double>::min();
  }
  return 0;
}

double smallest_subnormal(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::ldexp(1.0, -149);
    case DType::F16: return std::ldexp(1.0, -24);
    case DType::BF16: return std::ldexp(1.0, -133);
    case DType::F64: return std::numeric_limits<double>::denorm_min();
  }
  return 0;
}

double largest_finite(DType dtype) {
  switch (dtype) {
    case DType::F32: return std::numeric_limits<float>::max();
    case DType::F16: return 65504.0;
    case DType::BF16: return std::ldexp(255.0, 120);  // (2 - 2^-7) * 2^127
    case DType::F64: return std::numeric_limits<double>::max();
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
  }
  return x;
}

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
  }
  return 0;
}

}  // namespace attncheck
