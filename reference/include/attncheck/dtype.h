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

/// E4M3 is OCP's float8 e4m3fn (4 exponent bits, 3 mantissa bits, bias 7, no infinity, one NaN
/// pattern per sign, largest finite 448); E5M2 is OCP's float8 e5m2 (IEEE-like, bias 15, largest
/// finite 57344). They are storage formats of fp8 Q, K and V (problem.h, descales): no kernel
/// computes or writes in them, but a profile may name them where P is rounded.
enum class DType : std::uint8_t { F32, F16, BF16, F64, E4M3, E5M2 };

/// Stable lower-case name: "f32", "f16", "bf16", "f64", "e4m3", "e5m2".
std::string_view dtype_name(DType dtype);
/// Inverse of dtype_name; also accepts "fp32", "float32", "half", "float16", "bfloat16",
/// "float8_e4m3fn" and "float8_e5m2" (PyTorch's names).
std::optional<DType> parse_dtype(std::string_view name);
/// Storage size of one element in bytes.
int dtype_bytes(DType dtype);

/// Whether dtype is one of the 8-bit storage formats (E4M3, E5M2).
bool is_fp8(DType dtype);

/// Unit roundoff u = 2^-p of the format (f32 2^-24, f16 2^-11, bf16 2^-8, f64 2^-53, e4m3 2^-4,
/// e5m2 2^-3).
double unit_roundoff(DType dtype);
/// Smallest positive normal number of the format.
double smallest_normal(DType dtype);
/// Smallest positive subnormal number of the format.
double smallest_subnormal(DType dtype);
/// Largest finite number of the format.
double largest_finite(DType dtype);

/// x rounded to the nearest value representable in `dtype` (ties to even), as a double.
/// Overflow gives ±inf and NaN stays NaN, as a conversion in hardware does; E4M3, which has no
/// infinity, overflows to NaN (the non-saturating conversion).
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
