// The fixed-order kernels for AVX2 + FMA (compiled with -mavx2 -mfma; used only on CPUs that have
// both). Tile 4 × 12: 12 ymm accumulators of 16.
#include <immintrin.h>

#include "kernels/elementary.h"
#include "kernels/fixed_order.h"

namespace attncheck::detail {
// Named after the ISA so that a symbol says which build it is (scripts/check-isa.sh allows AVX
// instructions only in the avx2 and avx512 ones).
namespace isa_avx2 {

struct Lanes {
  using reg = __m256d;
  static reg load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, reg x) { _mm256_storeu_pd(p, x); }
  static reg broadcast(double x) { return _mm256_set1_pd(x); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static reg max(reg x, reg m) { return _mm256_max_pd(x, m); }  // x > m ? x : m, m if either is NaN
  static reg mul(reg a, reg b) { return _mm256_mul_pd(a, b); }
};
constexpr int kLanes = 4, kRows = 4, kCols = 12;
#include "kernels/fixed_order.inl"

constexpr FixedOrderKernels kKernels{ReferenceIsa::Avx2, product, product_continued, scaled_product_transposed, exp_shifted, max, sum};

}  // namespace isa_avx2

const FixedOrderKernels* avx2_kernels() { return &isa_avx2::kKernels; }

}  // namespace attncheck::detail
