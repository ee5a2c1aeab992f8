// The AVX2 + FMA instance of cpu-flash's tile kernel (compiled with -mavx2 -mfma -mf16c; called
// only when the CPU has them). 8 lanes; micro-tiles of 6 rows × 16 columns: 12 accumulators of
// the 16 ymm registers.
#include <immintrin.h>

#include <cstdint>

#include "flash_kernel.h"

namespace attncheck::cpu_flash {
namespace {

struct Avx2 {
  using reg = __m256;
  static constexpr int W = 8, MR = 6, QK_NV = 2, PV_NV = 2;
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg a) { _mm256_storeu_ps(p, a); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg zero() { return _mm256_setzero_ps(); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static float hmax(reg a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static float hsum(reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static reg mask_interval(reg s, int c0, int lo, int hi) {
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(c0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i below = _mm256_cmpgt_epi32(_mm256_set1_epi32(lo), idx);              // idx < lo
    const __m256i above = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(hi - 1));          // idx >= hi
    const __m256 out = _mm256_castsi256_ps(_mm256_or_si256(below, above));
    return _mm256_blendv_ps(s, _mm256_set1_ps(-__builtin_inff()), out);
  }
  static reg add_bias(reg s, reg bias) {
    const __m256 masked = _mm256_cmp_ps(bias, _mm256_set1_ps(-__builtin_inff()), _CMP_EQ_OQ);
    return _mm256_blendv_ps(_mm256_add_ps(s, bias), bias, masked);
  }
  // As Avx512::exp, but 2^n is built from exponent bits in two factors 2^n1·2^n2 (each normal for
  // n in [−173, 129]); the second product rounds once, so subnormal results are right too.
  static reg exp(reg x) {
    x = _mm256_max_ps(_mm256_set1_ps(-120.0f), x);
    x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
    const reg n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    reg r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    reg p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const reg s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const reg s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  }
  // x where p is nonzero or NaN, else +0: dS = P (dP − D) with masked keys selected out, not multiplied.
  static reg keep_where_nonzero(reg p, reg x) { return _mm256_and_ps(_mm256_cmp_ps(p, _mm256_setzero_ps(), _CMP_NEQ_UQ), x); }
  static float exp1(float x) { return _mm256_cvtss_f32(exp(_mm256_set1_ps(x))); }
  static float half_to_float(std::uint16_t h) { return _cvtsh_ss(h); }
  // Not _cvtss_sh: Clang 14 defines it with a compound literal, which is not C++.
  static std::uint16_t float_to_half(float x) {
    const __m128i h = _mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return static_cast<std::uint16_t>(_mm_extract_epi16(h, 0));
  }
};

#include "flash_tile.inl"
#include "flash_backward.inl"

}  // namespace

void flash_tile_avx2(const FlashParams& params, std::int64_t b, std::int64_t h, std::int64_t q0, const Workspace& ws) {
  FlashTile<Avx2>::run(params, b, h, q0, ws);
}

void pack_kv_avx2(const FlashParams& params, std::int64_t b, std::int64_t g, std::int64_t heads, std::int64_t t, float* packed_k,
                  float* packed_v, unsigned char* v_finite) {
  pack_kv_tile<Avx2>(params, b, g, heads, t, packed_k, packed_v, v_finite);
}

void exp_avx2(const float* x, float* y, std::int64_t n) { exp_array<Avx2>(x, y, n); }

void backward_rows_avx2(const BackwardParams& params, std::int64_t b, std::int64_t h) {
  FlashBackward<Avx2>::prepare_rows(params, b, h);
}

void backward_keys_avx2(const BackwardParams& params, std::int64_t b, std::int64_t g, const BackwardWorkspace& ws) {
  FlashBackward<Avx2>::key_task(params, b, g, ws);
}

void backward_dbias_avx2(const BackwardParams& params, std::int64_t row) {
  FlashBackward<Avx2>::dbias_row(params, row);
}

}  // namespace attncheck::cpu_flash
