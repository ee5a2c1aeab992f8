// The portable instance of cpu-flash's tile kernel: one lane, plain C++ (the compiler may still
// vectorize it for the build's target). exp and tanh come from the C library.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "flash_kernel.h"

namespace attncheck::cpu_flash {
namespace {

struct Generic {
  using reg = float;
  static constexpr int W = 1, MR = 4, QK_NV = 4, PV_NV = 4;
  static reg load(const float* p) { return *p; }
  static void store(float* p, reg a) { *p = a; }
  static reg set1(float x) { return x; }
  static reg zero() { return 0.0f; }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg fma(reg a, reg b, reg c) { return std::fma(a, b, c); }
  static reg max(reg a, reg b) { return b > a || b != b ? b : a; }  // NaN in b propagates
  static float hmax(reg a) { return a; }
  static float hsum(reg a) { return a; }
  static reg mask_interval(reg s, int c0, int lo, int hi) { return c0 < lo || c0 >= hi ? -HUGE_VALF : s; }
  static reg add_bias(reg s, reg bias) { return bias == -HUGE_VALF ? bias : s + bias; }
  static reg exp(reg x) { return std::exp(x); }
  // x where p is nonzero or NaN, else +0: dS = P (dP − D) with masked keys selected out, not multiplied.
  static reg keep_where_nonzero(reg p, reg x) { return p != 0.0f ? x : 0.0f; }
  static float exp1(float x) { return std::exp(x); }
  static float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24, exact in fp32
      const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
      return sign != 0 ? -magnitude : magnitude;
    }
    const std::uint32_t bits = exponent == 31 ? sign | 0x7f800000u | (mantissa << 13)
                                              : sign | ((exponent + 112u) << 23) | (mantissa << 13);
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  // Round-to-nearest-even float → binary16 (overflow to ±inf, NaN stays NaN), by the
  // magic-number method: adding 2^-1 aligns a binary16 subnormal's last bit with fp32's, so the
  // FPU's own rounding does the work.
  static std::uint16_t float_to_half(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    const std::uint32_t sign = u & 0x80000000u;
    u ^= sign;
    std::uint16_t out;
    if (u >= (127u + 16u) << 23) {  // ≥ 2^16: inf, or NaN
      out = u > 0x7f800000u ? 0x7e00 : 0x7c00;
    } else if (u < 113u << 23) {  // below 2^-14: a binary16 subnormal or zero
      const std::uint32_t magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
      float magic, value;
      std::memcpy(&magic, &magic_bits, 4);
      std::memcpy(&value, &u, 4);
      value += magic;  // the FPU rounds to nearest even at the 2^-24 position
      std::uint32_t v;
      std::memcpy(&v, &value, 4);
      out = static_cast<std::uint16_t>(v - magic_bits);
    } else {
      const std::uint32_t odd = (u >> 13) & 1u;
      u += (static_cast<std::uint32_t>(15 - 127) << 23) + 0xfffu + odd;  // rebias and round half to even
      out = static_cast<std::uint16_t>(u >> 13);
    }
    return static_cast<std::uint16_t>(out | (sign >> 16));
  }
};

#include "flash_tile.inl"
#include "flash_backward.inl"

}  // namespace

void flash_tile_generic(const FlashParams& params, std::int64_t b, std::int64_t h, std::int64_t q0, const Workspace& ws) {
  FlashTile<Generic>::run(params, b, h, q0, ws);
}

void pack_kv_generic(const FlashParams& params, std::int64_t b, std::int64_t g, std::int64_t heads, std::int64_t t, float* packed_k,
                  float* packed_v, unsigned char* v_finite) {
  pack_kv_tile<Generic>(params, b, g, heads, t, packed_k, packed_v, v_finite);
}

void exp_generic(const float* x, float* y, std::int64_t n) { exp_array<Generic>(x, y, n); }

void backward_rows_generic(const BackwardParams& params, std::int64_t b, std::int64_t h) {
  FlashBackward<Generic>::prepare_rows(params, b, h);
}

void backward_keys_generic(const BackwardParams& params, std::int64_t b, std::int64_t g, const BackwardWorkspace& ws) {
  FlashBackward<Generic>::key_task(params, b, g, ws);
}

void backward_dbias_generic(const BackwardParams& params, std::int64_t row) {
  FlashBackward<Generic>::dbias_row(params, row);
}

float half_to_float_exact(std::uint16_t h) { return Generic::half_to_float(h); }
std::uint16_t float_to_half_rn(float x) { return Generic::float_to_half(x); }

}  // namespace attncheck::cpu_flash
