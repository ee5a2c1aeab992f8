/// \file dtype.h
/// \brief The element types attncheck speaks of, and rounding into them.
///
/// Defined once: the Problem, the ABI conversion, the tolerance model and the fixture format all
/// use this enum and these functions. Rounding is round-to-nearest-even, the rounding the suite
/// applies to every input before the double reference runs (numerics/README.md §1: input rounding
/// is not kernel error).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace attncheck {

enum class DType : std::uint8_t { F32, F16, BF16, F64 };

/// Stable lower-case name: "f32", "f16", "bf16", "f64".
std::string_view dtype_name(DType dtype);
/// Inverse of dtype_name; also accepts "fp32", "float32", "half", "float16", "bfloat16".
std::optional<DType> parse_dtype(std::string_view name);
/// Storage size of one element in bytes.
int dtype_bytes(DType dtype);

/// Unit roundoff u = 2^-p of the format (f32 2^-24, f16 2^-11, bf16 2^-8, f64 2^-53).
double unit_roundoff(DType dtype);
/// Smallest positive normal number of the format.
double smallest_normal(DType dtype);
/// Smallest positive subnormal number of the format.
double smallest_subnormal(DType dtype);
/// Largest finite number of the format.
double largest_finite(DType dtype);

/// x rounded to the nearest value representable in `dtype` (ties to even), as a double.
/// Overflow gives ±inf and NaN stays NaN, as a conversion in hardware does.
double round_to(DType dtype, double x);

/// Bit patterns of the 16-bit formats, round-to-nearest-even from double.
std::uint16_t to_f16_bits(double x);
std::uint16_t to_bf16_bits(double x);
double from_f16_bits(std::uint16_t bits);
double from_bf16_bits(std::uint16_t bits);

/// Stores x (already representable in dtype, or rounded to nearest) as dtype's bytes at `at`
/// (dtype_bytes(dtype) of them, little-endian as the host): the one codec of the suite.
void encode_value(DType dtype, double x, std::byte* at);
/// The exact value of dtype's bytes at `at`.
double decode_value(DType dtype, const std::byte* at);

}  // namespace attncheck
