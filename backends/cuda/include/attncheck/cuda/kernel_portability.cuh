/// \file kernel_portability.cuh
/// \brief The subset of CUDA the CUDA backends' kernels are written in, for nvcc and for the host.
///
/// A kernel header includes this file and then uses only: __global__ / __device__ /
/// __forceinline__, threadIdx / blockIdx / blockDim / gridDim, __syncthreads(),
/// ATTNCHECK_SHARED_ARRAY / ATTNCHECK_DYNAMIC_SHARED, the float math of <cmath> (expf, logf,
/// tanhf, fmaxf, isfinite), and the element types and conversions below. Under nvcc that is CUDA;
/// under a host compiler host_emulation.h provides it.
///
/// Kernels live between ATTNCHECK_KERNEL_NAMESPACE_BEGIN / _END: the inline namespace differs
/// between the two builds, so the host-emulated and the device instantiations of a kernel
/// template never share a mangled name (the linker would otherwise keep either one of them).
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define ATTNCHECK_SHARED_ARRAY(type, name, count) __shared__ type name[count]
#define ATTNCHECK_DYNAMIC_SHARED(type, name)                                 \
  extern __shared__ __align__(16) unsigned char attncheck_dynamic_shared_[]; \
  type* const name = reinterpret_cast<type*>(attncheck_dynamic_shared_)
#define ATTNCHECK_KERNEL_NAMESPACE_BEGIN \
  namespace attncheck::cuda {            \
  inline namespace device {
#define ATTNCHECK_KERNEL_NAMESPACE_END \
  }                                    \
  }

#else  // host emulation

#include <cmath>
#include <cstring>

#include "attncheck/cuda/host_emulation.h"

#define ATTNCHECK_KERNEL_NAMESPACE_BEGIN \
  namespace attncheck::cuda {            \
  inline namespace host_emulation {      \
  using ::attncheck::cuda_emulation::__expf;        \
  using ::attncheck::cuda_emulation::__fdividef;    \
  using ::attncheck::cuda_emulation::__logf;        \
  using ::attncheck::cuda_emulation::__syncthreads; \
  using ::attncheck::cuda_emulation::blockDim;      \
  using ::attncheck::cuda_emulation::blockIdx;      \
  using ::attncheck::cuda_emulation::gridDim;       \
  using ::attncheck::cuda_emulation::threadIdx;
#define ATTNCHECK_KERNEL_NAMESPACE_END \
  }                                    \
  }

#endif

ATTNCHECK_KERNEL_NAMESPACE_BEGIN

#ifdef __CUDACC__
using half_t = __half;
using bfloat16_t = __nv_bfloat16;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(half_t x) { return __half2float(x); }
__device__ __forceinline__ float to_float(bfloat16_t x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ half_t from_float<half_t>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ bfloat16_t from_float<bfloat16_t>(float x) { return __float2bfloat16_rn(x); }

#else
// Storage-only stand-ins for __half and __nv_bfloat16: the kernels only load and store them, and
// do all arithmetic in float, exactly as on the device.
struct half_t {
  std::uint16_t bits;
};
struct bfloat16_t {
  std::uint16_t bits;
};

inline std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline float to_float(float x) { return x; }
inline float to_float(bfloat16_t x) { return bits_float(std::uint32_t{x.bits} << 16); }
inline float to_float(half_t x) {
  const std::uint32_t sign = std::uint32_t{x.bits & 0x8000u} << 16;
  const std::uint32_t exponent = (x.bits >> 10) & 0x1fu, mantissa = x.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {                                                               // zero, subnormal
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

template <class T>
T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}
// Round to nearest, ties to even, as __float2bfloat16_rn.
template <>
inline bfloat16_t from_float<bfloat16_t>(float x) {
  const std::uint32_t u = float_bits(x);
  if (std::isnan(x)) return {static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return {static_cast<std::uint16_t>(rounded >> 16)};
}
// Round to nearest, ties to even, as __float2half_rn: overflow gives ±inf, small values become
// subnormal halves (the rounding of the scaled magnitude is exact-to-nearest in float).
template <>
inline half_t from_float<half_t>(float x) {
  const std::uint32_t u = float_bits(x);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(x);
  if (std::isnan(x)) return {static_cast<std::uint16_t>(sign | 0x7e00u)};
  if (a >= 65520.0f) return {static_cast<std::uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (a < 6.103515625e-05f) {  // below 2^-14: subnormal, a multiple of 2^-24
    const float units = std::nearbyint(a * 16777216.0f);  // exact scaling; nearbyint ties to even
    return {static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(units))};
  }
  const std::uint32_t ua = float_bits(a);
  // Drop 13 mantissa bits with round-to-nearest-even, then rebias the exponent (127 → 15).
  const std::uint32_t rounded = ua + 0xfffu + ((ua >> 13) & 1u);
  return {static_cast<std::uint16_t>(sign | ((rounded >> 13) - (112u << 10)))};
}
#endif

ATTNCHECK_KERNEL_NAMESPACE_END
