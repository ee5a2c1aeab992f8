// The fixed-order kernels for the build's own target (x86-64 baseline or any other architecture):
// std::fma is glibc's correctly rounded fma, one instruction on CPUs with FMA.
#include "kernels/elementary.h"
#include "kernels/fixed_order.h"

namespace attncheck::detail {
// Named after the ISA so that a symbol says which build it is (scripts/check-isa.sh allows AVX
// instructions only in the avx2 and avx512 ones).
namespace isa_baseline {

// One double per "vector". __builtin_fma is std::fma: a call into glibc, correctly rounded.
struct Lanes {
  using reg = double;
  static reg load(const double* p) { return *p; }
  static void store(double* p, reg x) { *p = x; }
  static reg broadcast(double x) { return x; }
  static reg fma(reg a, reg b, reg c) { return __builtin_fma(a, b, c); }
  static reg max(reg x, reg m) { return x > m ? x : m; }
  static reg mul(reg a, reg b) { return a * b; }
};
constexpr int kLanes = 1, kRows = 4, kCols = 4;
#include "kernels/fixed_order.inl"

constexpr FixedOrderKernels kKernels{ReferenceIsa::Baseline, product, product_continued, scaled_product_transposed, exp_shifted, max, sum};

}  // namespace isa_baseline

const FixedOrderKernels& baseline_kernels() { return isa_baseline::kKernels; }

}  // namespace attncheck::detail
