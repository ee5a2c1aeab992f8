// The reference's inner loops, built once per instruction set (kernels_*.cpp) and chosen at run
// time; every build computes the same bits (reference/README.md, "Reproducibility").
//
// What makes the bits independent of the build is the order of operations, which these
// functions fix and no compiler may change (no -ffast-math, -ffp-contract=off):
//  - products: C_ij = fma(A_i,k−1, B_k−1,j, … fma(A_i1, B_1j, fma(A_i0, B_0j, +0))), the depth index
//    increasing, each step one fused multiply-add (std::fma: one instruction where the CPU has
//    FMA, glibc's correctly rounded fma elsewhere: the same value either way). Tiling and
//    vectorization run over i and j, never over the depth index;
//  - sums of a row of weights: eight partial sums, element e going to partial (first + e) mod 8
//    where `first` is its absolute key index, combined as ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)).
//    Keys with weight +0 change no partial sum, so the block of keys a row is computed in (which
//    depends on its neighbours and the row block) does not matter.
#pragma once

#include <cstdint>

#include "attncheck/reference.h"

namespace attncheck::detail {

struct FixedOrderKernels {
  ReferenceIsa isa;
  /// C[m×n] = A[m×k]·B[k×n] in the order above, rows of A, B and C at strides lda, ldb, ldc
  /// (unit column stride). k = 0 gives C = +0.
  void (*product)(std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda,
                  const double* b, std::int64_t ldb, double* c, std::int64_t ldc);
  /// C[m×n] += A[m×k]·B[k×n] as the continuation of C's chains: each element goes on from its
  /// current value exactly as `product` would have gone on past depth index k₀ had A and B been
  /// one longer product. A sum over row blocks (the backward's dK and dV) is then one chain, the
  /// same whatever the row block. k = 0 leaves C as it is.
  void (*product_continued)(std::int64_t m, std::int64_t n, std::int64_t k, const double* a, std::int64_t lda,
                            const double* b, std::int64_t ldb, double* c, std::int64_t ldc);
  /// C[m×n] = α·(A[m×k]·Btᵀ) with Bt [n×k] at row stride ldbt: each chain as in `product`, then
  /// one multiplication by α (Q·Kᵀ with the softmax scale σ, read straight from K's rows).
  void (*scaled_product_transposed)(std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
                                    std::int64_t lda, const double* bt, std::int64_t ldbt, double* c,
                                    std::int64_t ldc);
  /// x_e ← exp(x_e − shift) for e in [0, n) (detail::exp; −inf becomes +0).
  void (*exp_shifted)(double* x, std::int64_t n, double shift);
  /// max_e x_e over the non-NaN x_e (−inf if there are none).
  double (*max)(const double* x, std::int64_t n);
  /// Σ x_e in the eight-partial order above, x_0 having absolute index `first` (≥ 0).
  double (*sum)(const double* x, std::int64_t n, std::int64_t first);
};

/// The kernels of `isa` (Automatic: the widest this CPU runs). Throws ProblemError naming the
/// missing CPU feature when `isa` cannot run here.
const FixedOrderKernels& fixed_order_kernels(ReferenceIsa isa);

// One per kernels_*.cpp; the baseline build exists everywhere, the others on x86-64 only.
const FixedOrderKernels& baseline_kernels();
const FixedOrderKernels* avx2_kernels();    // nullptr where not built
const FixedOrderKernels* avx512_kernels();  // nullptr where not built

}  // namespace attncheck::detail
