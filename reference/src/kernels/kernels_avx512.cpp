// The fixed-order kernels for AVX-512F + FMA (compiled with -mavx512f -mfma; used only on CPUs
// that have both). Tile 8 × 16: 16 zmm accumulators of 32.
#include <immintrin.h>

#include "kernels/elementary.h"
#include "kernels/fixed_order.h"

namespace attncheck::detail {
// Named after the ISA so that a symbol says which build it is (scripts/check-isa.sh allows AVX
// instructions only in the avx2 and avx512 ones).
namespace isa_avx512 {

struct Lanes {
  using reg = __m512d;
  static reg load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, reg x) { _mm512_storeu_pd(p, x); }
  static reg broadcast(double x) { return _mm512_set1_pd(x); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static reg max(reg x, reg m) { return _mm512_max_pd(x, m); }  // x > m ? x : m, m if either is NaN
  static reg mul(reg a, reg b) { return _mm512_mul_pd(a, b); }
};
constexpr int kLanes = 8, kRows = 8, kCols = 16;
#include "kernels/fixed_order.inl"

constexpr FixedOrderKernels kKernels{ReferenceIsa::Avx512, product, product_continued, scaled_product_transposed, exp_shifted, max, sum};

}  // namespace isa_avx512

const FixedOrderKernels* avx512_kernels() { return &isa_avx512::kKernels; }

}  // namespace attncheck::detail
