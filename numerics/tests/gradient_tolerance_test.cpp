// The gradient bound (numerics/README.md §10) on emulated backward kernels (backward_sim.h):
// healthy kernels stay within τ, each defect class leaves it; and the comparator's rules.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "attncheck/gradient_tolerance.h"
#include "backward_sim.h"

namespace attncheck {
namespace {

using backward_sim::Defect;
using backward_sim::KernelSpec;

struct Config {
  const char* name;
  DType input, probability, ds, gradient;
  std::int64_t q_heads, kv_heads;
  bool causal;
  double softcap;
};

KernelSpec spec_of(const Config& c, Defect defect) {
  KernelSpec k;
  k.input = c.input;
  k.probability = c.probability;
  k.ds = c.ds;
  k.gradient = c.gradient;
  k.defect = defect;
  k.narrow = c.input == DType::F32 ? DType::BF16 : c.input;
  return k;
}

const Config kConfigs[] = {
    {"f32", DType::F32, DType::F32, DType::F32, DType::F32, 1, 1, false, 0},
    {"f32-gqa-causal-softcap", DType::F32, DType::F32, DType::F32, DType::F32, 4, 1, true, 20},
    {"f16-flash", DType::F16, DType::F16, DType::F16, DType::F32, 1, 1, false, 0},
    {"bf16-flash", DType::BF16, DType::BF16, DType::BF16, DType::BF16, 1, 1, false, 0},
    {"bf16-flash-gqa-causal", DType::BF16, DType::BF16, DType::BF16, DType::BF16, 4, 1, true, 0},
    {"bf16-flash-softcap", DType::BF16, DType::BF16, DType::BF16, DType::BF16, 2, 2, false, 30},
};

backward_sim::Case case_of(const Config& c, std::int64_t n, std::uint64_t seed) {
  return backward_sim::make_case(c.input, n, 64, seed, c.q_heads, c.kv_heads, c.causal, c.softcap);
}

// Healthy kernels: every element within τ. Below half of τ wherever a gradient element is a long
// sum; where causal leaves a key to only the last few rows, dV_k is a sum of a few terms, each one
// rounding of a narrow P, and its bound is that rounding's worst case (§10.3): there only r ≤ 1
// is asserted.
TEST(GradientTolerance, HealthyEmulatedKernelsStayWithinTheBound) {
  for (const Config& config : kConfigs)
    for (std::int64_t n : {64, 256})
      for (std::uint64_t seed : {1u, 2u}) {
        const backward_sim::Case c = case_of(config, n, 1000 * seed + static_cast<std::uint64_t>(n));
        const GradientVerdict v = backward_sim::judge(spec_of(config, Defect::None), c);
        SCOPED_TRACE(::testing::Message() << config.name << " n=" << n << " seed=" << seed << ": " << v.summary());
        EXPECT_TRUE(v.passed);
        EXPECT_GT(v.max_ratio, 0.0) << "a check whose kernel never errs says nothing about the bound";
        const bool few_term_tails = config.causal && config.probability != DType::F32;
        if (!few_term_tails) {
          EXPECT_LT(v.max_ratio, 0.5);
        }
      }
}

// Each defect is caught (max r > 1) wherever it changes what the kernel computes beyond its
// declared roundings: a narrow dS is no defect when dS is declared narrow already, and a scale
// off by 2^-10 is below the error of P rounded to fp16 or bf16 (both asserted in fp32 only).
TEST(GradientTolerance, EveryDefectClassLeavesTheBound) {
  for (const Config& config : kConfigs)
    for (Defect d : {Defect::NoDTerm, Defect::KvAccNarrow, Defect::DsStoredNarrow, Defect::ScaleOffInDk,
                     Defect::DroppedKeyInDv}) {
      const bool narrow_declared = config.input != DType::F32;
      if ((d == Defect::DsStoredNarrow || d == Defect::ScaleOffInDk) && narrow_declared) continue;
      const backward_sim::Case c = case_of(config, 128, 7);
      const GradientVerdict v = backward_sim::judge(spec_of(config, d), c);
      EXPECT_FALSE(v.passed) << config.name << " " << backward_sim::defect_name(d) << ": " << v.summary();
      EXPECT_GT(v.max_ratio, 1.0);
    }
}

// Where nothing flows the gradient is exactly 0 and so is τ: with Lq = 1 and top-left causal
// alignment only key 0 is visible, so keys 1..3 receive nothing, and any nonzero dK there fails.
TEST(GradientTolerance, UnreachableKeysHaveZeroBound) {
  const KernelSpec k;
  // Lq = 1 with top-left causal: only key 0 is visible; keys 1..3 get τ = 0, and the reference 0.
  backward_sim::Case one = backward_sim::make_case(DType::F32, 4, 8, 5, 1, 1, false, 0);
  Problem single = Problem::of_shape(1, 1, 1, 1, 4, 8, 8);
  single.causal = true;
  single.scale = one.problem.scale;
  HostTensor q({1, 1, 1, 8}), d_out({1, 1, 1, 8});
  for (std::int64_t l = 0; l < 8; ++l) {
    q(0, 0, 0, l) = one.q(0, 0, 0, l);
    d_out(0, 0, 0, l) = one.d_out(0, 0, 0, l);
  }
  const AttentionInputs in{q.view(), one.k.view(), one.v.view(), {}, {}};
  const AttentionResult fwd = reference_attention(single, in);
  const BackwardInputs bi = backward_inputs(fwd, d_out.view());
  const AttentionGradients exact = reference_attention_backward(single, in, bi);
  const GradientBounds t = gradient_tolerance(single, k.forward(), k.declared(), in, bi, exact);
  for (std::int64_t kk = 1; kk < 4; ++kk)
    for (std::int64_t l = 0; l < 8; ++l) {
      EXPECT_EQ(t.d_k(0, 0, kk, l), 0.0);
      EXPECT_EQ(exact.d_k(0, 0, kk, l), 0.0);
    }
  // A kernel writing anything but 0 there fails, however small.
  AttentionGradients leaky = exact;
  leaky.d_k(0, 0, 2, 0) = 1e-30;
  const GradientVerdict v = compare_gradients(exact, t, leaky);
  EXPECT_FALSE(v.passed);
  EXPECT_NE(v.failure.find("dK[0, 0, 2, 0]"), std::string::npos) << v.failure;
}

TEST(GradientTolerance, ComparatorJudgesNonFiniteValuesByClass) {
  const backward_sim::Case c = backward_sim::make_case(DType::F32, 4, 4, 9);
  const KernelSpec k;
  const GradientBounds tau = gradient_tolerance(c.problem, k.forward(), k.declared(), c.inputs(), c.exact_inputs(), c.exact);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // A NaN against a finite reference fails and names the element.
  AttentionGradients bad = c.exact;
  bad.d_v(0, 0, 1, 2) = nan;
  GradientVerdict v = compare_gradients(c.exact, tau, bad);
  EXPECT_FALSE(v.passed);
  EXPECT_NE(v.failure.find("dV[0, 0, 1, 2]"), std::string::npos) << v.failure;
  // A NaN reference (an attended NaN input) must be matched by NaN, not by a number.
  AttentionGradients nan_ref = c.exact;
  nan_ref.d_q(0, 0, 0, 0) = nan;
  AttentionGradients matched = nan_ref;
  EXPECT_TRUE(compare_gradients(nan_ref, tau, matched).passed);
  v = compare_gradients(nan_ref, tau, c.exact);
  EXPECT_FALSE(v.passed);
  EXPECT_NE(v.failure.find("dQ[0, 0, 0, 0]"), std::string::npos) << v.failure;
  // The reference itself passes with r = 0; a shape mismatch fails.
  EXPECT_TRUE(compare_gradients(c.exact, tau, c.exact).passed);
  AttentionGradients wrong = c.exact;
  wrong.d_k = HostTensor({1, 1, 3, 4});
  EXPECT_FALSE(compare_gradients(c.exact, tau, wrong).passed);
}

}  // namespace
}  // namespace attncheck
