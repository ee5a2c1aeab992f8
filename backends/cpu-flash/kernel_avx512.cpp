// The AVX-512 instance of cpu-flash's tile kernel (compiled with -mavx512f/bw/dq/vl -mfma -mf16c;
// called only when the CPU has them). 16 lanes; Q·Kᵀ micro-tile 6 rows × 64 keys and P·V
// micro-tile 6 rows × 64 columns: 24 accumulators of the 32 zmm registers.
// GCC 12's _mm512_reduce_* helpers start from `__m256 __Y = __Y;`, which -Wuninitialized reports
// once they are inlined here: a false positive in the compiler's own header (GCC PR 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "flash_kernel.h"

namespace attncheck::cpu_flash {
namespace {

struct Avx512 {
  using reg = __m512;
  static constexpr int W = 16, MR = 6, QK_NV = 4, PV_NV = 4;
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg a) { _mm512_storeu_ps(p, a); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static float hmax(reg a) { return _mm512_reduce_max_ps(a); }
  static float hsum(reg a) { return _mm512_reduce_add_ps(a); }
  // −inf outside columns [lo, hi) of the tile, for lanes c0 .. c0 + 15.
  static reg mask_interval(reg s, int c0, int lo, int hi) {
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(c0),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __mmask16 out = _mm512_cmplt_epi32_mask(idx, _mm512_set1_epi32(lo)) |
                          _mm512_cmpge_epi32_mask(idx, _mm512_set1_epi32(hi));
    return _mm512_mask_mov_ps(s, out, _mm512_set1_ps(-__builtin_inff()));
  }
  // s + bias, exactly −inf where the bias is −inf (even if s is NaN from a masked key's K).
  static reg add_bias(reg s, reg bias) {
    const __mmask16 masked = _mm512_cmp_ps_mask(bias, _mm512_set1_ps(-__builtin_inff()), _CMP_EQ_OQ);
    return _mm512_mask_mov_ps(_mm512_add_ps(s, bias), masked, bias);
  }
  // exp: n = round(x·log2 e), r = x − n·ln 2 (two-part ln 2), e^r by a degree-7 polynomial
  // (Cephes expf), then r·2^n with VSCALEFPS, which rounds once and so handles subnormal results.
  // The clamp keeps n in range; max(c, x) returns x when x is NaN, so NaN propagates.
  static reg exp(reg x) {
    x = _mm512_max_ps(_mm512_set1_ps(-120.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    const reg n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    reg r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    reg p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
  }
  // x where p is nonzero or NaN, else +0: dS = P (dP − D) with masked keys selected out, not multiplied.
  static reg keep_where_nonzero(reg p, reg x) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, _mm512_setzero_ps(), _CMP_NEQ_UQ), x);
  }
  static float exp1(float x) { return _mm512_cvtss_f32(exp(_mm512_set1_ps(x))); }
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

void flash_tile_avx512(const FlashParams& params, std::int64_t b, std::int64_t h, std::int64_t q0, const Workspace& ws) {
  FlashTile<Avx512>::run(params, b, h, q0, ws);
}

void pack_kv_avx512(const FlashParams& params, std::int64_t b, std::int64_t g, std::int64_t heads, std::int64_t t, float* packed_k,
                  float* packed_v, unsigned char* v_finite) {
  pack_kv_tile<Avx512>(params, b, g, heads, t, packed_k, packed_v, v_finite);
}

void exp_avx512(const float* x, float* y, std::int64_t n) { exp_array<Avx512>(x, y, n); }

void backward_rows_avx512(const BackwardParams& params, std::int64_t b, std::int64_t h) {
  FlashBackward<Avx512>::prepare_rows(params, b, h);
}

void backward_keys_avx512(const BackwardParams& params, std::int64_t b, std::int64_t g, const BackwardWorkspace& ws) {
  FlashBackward<Avx512>::key_task(params, b, g, ws);
}

void backward_dbias_avx512(const BackwardParams& params, std::int64_t row) {
  FlashBackward<Avx512>::dbias_row(params, row);
}

}  // namespace attncheck::cpu_flash
