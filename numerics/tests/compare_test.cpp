// Tests of the comparator's rules (numerics/README.md §4, §6.1, §7): NaN/Inf policy, empty-row
// conventions, refusal of vacuous checks, the LSE bound, and the exact modes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "attncheck/compare.h"
#include "attncheck/tolerance.h"
#include "sim_kernels.h"

namespace attncheck {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A small fp32 case: 4 query rows, 64 keys, d = 16; Q, K, V ~ N(0, 1).
struct Small {
  sim::Case c = sim::make_case(DType::F32, 64, 16, 4, 99, 1.0);
  AttentionResult ref = sim::reference_of(c);
  NumericsProfile profile = sim::KernelSpec{}.declared();
  HostTensor out, lse;
  Small() { out = sim::run_kernel(sim::KernelSpec{}, c, &lse); }
  Verdict judge(DataCharacter data = DataCharacter::GenericRandom) const {
    CompareOptions options;
    options.data = data;
    return compare_attention(c.problem, profile, c.inputs(), ref, out, &lse, options);
  }
};

TEST(CompareAttention, HealthyFp32KernelPassesWithAOneLineSummary) {
  Small s;
  const Verdict v = s.judge();
  EXPECT_TRUE(v.passed) << v.summary();
  EXPECT_EQ(v.elements, 4 * 16);
  EXPECT_EQ(v.summary().rfind("PASS max r=", 0), 0u) << v.summary();
  EXPECT_EQ(v.summary().find('\n'), std::string::npos);
}

TEST(CompareAttention, OneElementJustOutsideTauFailsAndIsLocated) {
  Small s;
  const ToleranceModel model(s.c.problem, s.profile, DataCharacter::GenericRandom, s.c.inputs());
  const double tau = model.at(s.ref, 0, 0, 2, 5).total();
  // The reference plus 1.01·τ (in double; τ ≫ ulp of the value): r = 1.01 by construction.
  s.out(0, 0, 2, 5) = s.ref.out(0, 0, 2, 5) + 1.01 * tau;
  const Verdict v = s.judge();
  EXPECT_FALSE(v.passed);
  EXPECT_NEAR(v.max_ratio, 1.01, 1e-9);
  EXPECT_EQ(v.worst.row, 2);
  EXPECT_EQ(v.worst.col, 5);
  EXPECT_NE(v.failure.find("exceeds τ"), std::string::npos) << v.failure;
}

TEST(CompareAttention, NaNOrInfAgainstAFiniteReferenceFails) {
  for (double bad : {kNaN, kInf, -kInf}) {
    Small s;
    s.out(0, 0, 1, 3) = bad;
    const Verdict v = s.judge();
    EXPECT_FALSE(v.passed) << bad;
    EXPECT_EQ(v.nonfinite_violations, 1) << v.summary();
  }
}

TEST(CompareAttention, LseOutsideItsBoundFails) {
  Small s;
  ASSERT_TRUE(s.judge().passed);
  const ToleranceModel model(s.c.problem, s.profile, DataCharacter::GenericRandom, s.c.inputs());
  s.lse(0, 0, 0, 1) = s.ref.lse(0, 0, 0, 1) + 2 * model.lse_bound(s.ref, 0, 0, 1);
  const Verdict v = s.judge();
  EXPECT_FALSE(v.passed);
  EXPECT_GE(v.lse_max_ratio, 1.5);  // ≥ 2 − (the kernel's own error, < 0.5 of the bound)
  EXPECT_EQ(v.lse_worst.row, 1);
}

TEST(CompareAttention, RefusesAnAllZeroReference) {
  Small s;
  for (double& x : s.c.v.values) x = 0.0;
  s.ref = sim::reference_of(s.c);
  s.out = sim::run_kernel(sim::KernelSpec{}, s.c, &s.lse);
  const Verdict v = s.judge();
  EXPECT_FALSE(v.passed);
  EXPECT_NE(v.failure.find("all zeros"), std::string::npos) << v.failure;
}

TEST(CompareAttention, RefusesANonFiniteReferenceFromFiniteInputs) {
  Small s;
  s.ref.out(0, 0, 0, 0) = kNaN;  // a broken reference: the inputs are finite
  const Verdict v = s.judge();
  EXPECT_FALSE(v.passed);
  EXPECT_NE(v.failure.find("refused"), std::string::npos) << v.failure;
}

// Past N·u = 1 the bound stays finite (numerics/README.md §9, item 30): an fp16 accumulator over
// n = 4096 keys on structured data (deterministic bounds, §3.2) has N·u = 2, where γ_N has no
// value but every term still carries at most (1 − 2^-11)^{−4096} − 1 = e^{2.0005} − 1 ≈ 6.39 of
// relative error. A kernel inside it passes, the verdict says the profile guarantees nothing
// there (τ/|O| > 1), and an output off by far more than that bound still fails.
TEST(CompareAttention, PastNuOneTheBoundIsFiniteAndSaysItGuaranteesLittle) {
  Small s;
  s.c = sim::make_case(DType::F16, 4096, 16, 1, 5, 1.0);
  s.ref = sim::reference_of(s.c);
  s.profile.input = DType::F16;
  s.profile.accumulator = DType::F16;
  s.profile.probability = DType::F16;
  sim::KernelSpec k;
  k.input = DType::F16;
  s.out = sim::run_kernel(k, s.c, &s.lse);
  Verdict v = s.judge(DataCharacter::Structured);
  EXPECT_TRUE(v.passed) << v.summary();
  EXPECT_GT(v.guaranteed_relative_accuracy, 1.0) << v.summary();
  double largest = 0;
  for (double x : s.ref.out.values) largest = std::max(largest, std::fabs(x));
  for (double& x : s.out.values) x += 1e3 * largest;
  v = s.judge(DataCharacter::Structured);
  EXPECT_FALSE(v.passed) << v.summary();
}

// §6.1: rows with no allowed key are checked against the declared convention (exactly for
// zeros and NaN, within the accumulation bound for the mean of V). Row 1 of
// a boolean mask is all false; the other rows attend to every key.
struct EmptyRow {
  Problem p;
  HostTensor q{{1, 1, 3, 4}}, k{{1, 1, 8, 4}}, v{{1, 1, 8, 2}}, mask{{1, 1, 3, 8}, 1.0};
  AttentionResult ref;
  HostTensor out, lse;
  EmptyRow() {
    p.q_len = 3;
    p.k_len = 8;
    p.qk_dim = 4;
    p.v_dim = 2;
    p.mask = MaskKind::Boolean;
    p.mask_q_len = 3;
    p.mask_k_len = 8;
    sim::Normal normal(3);
    for (auto* t : {&q, &k, &v})
      for (double& x : t->values) x = round_to(DType::F32, normal());
    for (std::int64_t j = 0; j < 8; ++j) mask(0, 0, 1, j) = 0.0;
    ReferenceOptions ro;
    ro.row_statistics = true;
    ref = reference_attention(p, inputs(), ro);
    out = ref.out;  // exact on the live rows: r = 0 there
    for (double& x : out.values) x = round_to(DType::F32, x);
    lse = ref.lse;
  }
  AttentionInputs inputs() const { return {q.view(), k.view(), v.view(), mask.view(), {}}; }
  Verdict judge(EmptyRowConvention convention) const {
    NumericsProfile profile;
    profile.empty_row = convention;
    return compare_attention(p, profile, inputs(), ref, out, &lse);
  }
  double mean_v(std::int64_t j) const {
    double sum = 0;
    for (std::int64_t key = 0; key < 8; ++key) sum += v(0, 0, key, j);
    return sum / 8;
  }
};

TEST(CompareAttention, EmptyRowZerosConvention) {
  EmptyRow e;
  ASSERT_EQ(e.ref.lse(0, 0, 0, 1), -kInf);
  const Verdict ok = e.judge(EmptyRowConvention::Zeros);
  EXPECT_TRUE(ok.passed) << ok.summary();
  EXPECT_EQ(ok.empty_rows, 1);
  e.lse(0, 0, 0, 1) = kInf;  // FlashAttention's LSE for an empty row
  EXPECT_TRUE(e.judge(EmptyRowConvention::Zeros).passed);
  e.out(0, 0, 1, 1) = 0x1p-149;  // not exactly zero
  const Verdict bad = e.judge(EmptyRowConvention::Zeros);
  EXPECT_FALSE(bad.passed);
  EXPECT_EQ(bad.nonfinite_violations, 1);
  EXPECT_FALSE(e.judge(EmptyRowConvention::NaN).passed) << "a finite value where NaN is declared fails";
}

TEST(CompareAttention, EmptyRowNaNConvention) {
  EmptyRow e;
  e.out(0, 0, 1, 0) = kNaN;
  e.out(0, 0, 1, 1) = kNaN;
  EXPECT_TRUE(e.judge(EmptyRowConvention::NaN).passed);
  EXPECT_FALSE(e.judge(EmptyRowConvention::Zeros).passed);
  e.out(0, 0, 1, 1) = 0.0;
  EXPECT_FALSE(e.judge(EmptyRowConvention::NaN).passed);
}

TEST(CompareAttention, EmptyRowMeanOfVConvention) {
  EmptyRow e;
  // The mean of V over the 8 keys, rounded to fp32 as the kernel's output is: within one
  // output rounding, well inside the bound.
  for (std::int64_t j = 0; j < 2; ++j) e.out(0, 0, 1, j) = round_to(DType::F32, e.mean_v(j));
  const Verdict ok = e.judge(EmptyRowConvention::MeanOfV);
  EXPECT_TRUE(ok.passed) << ok.summary();
  EXPECT_FALSE(e.judge(EmptyRowConvention::Zeros).passed);
  // Off by 2^-10 relative: beyond γ_8(2^-24)·mean|V| + output rounding ≈ 1e-6 relative.
  e.out(0, 0, 1, 0) = e.mean_v(0) * (1 + 0x1p-10);
  EXPECT_FALSE(e.judge(EmptyRowConvention::MeanOfV).passed);
}

TEST(CompareExact, Bitwise) {
  HostTensor expected({1, 1, 1, 4});
  expected.values = {1.5, -0.0, kNaN, 3.0};
  HostTensor actual = expected;
  EXPECT_TRUE(compare_exact(expected, actual, DType::F32, ExactMode::Bitwise).passed) << "NaN matches NaN";
  actual.values[1] = 0.0;  // +0 against −0
  const Verdict v = compare_exact(expected, actual, DType::F32, ExactMode::Bitwise);
  EXPECT_FALSE(v.passed);
  EXPECT_EQ(v.worst.col, 1);
  actual = expected;
  actual.values[3] = std::nextafter(3.0f, 4.0f);  // one fp32 ulp
  const Verdict w = compare_exact(expected, actual, DType::F32, ExactMode::Bitwise);
  EXPECT_FALSE(w.passed);
  EXPECT_DOUBLE_EQ(w.max_ulps_row_scale, 1.0) << "ulp of fp32 at 3 is 2^-22";
}

// Two different problems: where the reference is exactly zero (an empty row) +0 and −0 are the
// same value; anywhere else the sign, and any difference, still count.
TEST(CompareExact, ZeroSignIgnoredOnlyWhereTheReferenceIsZero) {
  HostTensor reference({1, 1, 1, 3});
  reference.values = {0.0, 0.25, 0.0};
  HostTensor first = reference, second = reference;
  second.values[0] = -0.0;
  EXPECT_FALSE(compare_exact(first, second, DType::F32, ExactMode::Bitwise).passed) << "without a reference: strict";
  EXPECT_TRUE(compare_exact(first, second, DType::F32, ExactMode::Bitwise, &reference).passed);
  second.values[2] = 0x1p-149;  // a real change of an empty row's value
  EXPECT_FALSE(compare_exact(first, second, DType::F32, ExactMode::Bitwise, &reference).passed);
  second.values[2] = 0.0;
  second.values[1] = -0.25;  // a sign change where the reference is not zero
  const Verdict v = compare_exact(first, second, DType::F32, ExactMode::Bitwise, &reference);
  EXPECT_FALSE(v.passed);
  EXPECT_EQ(v.worst.col, 1);
}

// A kernel declaring flush to zero whose outputs sit just below fp16's normal range 2^-14: each
// is flushed to 0, an error of ≈ 0.99·2^-14 everywhere and always toward zero. Each element is
// within τ (η_O = ν_O under FTZ); the aggregate must bound the flush as coherent, not as noise
// that averages out (numerics/README.md §4.4). Before, the aggregate ratio was ≈ 1.3 here.
TEST(CompareAttention, DeclaredFlushToZeroPassesTheAggregateCheck) {
  sim::Case c = sim::make_case(DType::F16, 64, 64, 256, 7, 1.0);
  sim::Normal normal(11);
  for (double& x : c.v.values) x = round_to(DType::F16, 0x1p-14 * 0.99 * (1 + 0.003 * normal()));
  const AttentionResult ref = sim::reference_of(c);
  NumericsProfile profile = sim::KernelSpec{DType::F16, DType::F32, DType::F16}.declared();
  profile.flushes_subnormals = true;
  HostTensor out(ref.out.shape);
  for (size_t n = 0; n < out.values.size(); ++n) {
    const double x = round_to(DType::F16, ref.out.values[n]);
    out.values[n] = std::fabs(x) < smallest_normal(DType::F16) ? 0.0 : x;
  }
  const Verdict v = compare_attention(c.problem, profile, c.inputs(), ref, out, nullptr);
  ASSERT_TRUE(v.aggregate_checked);
  EXPECT_TRUE(v.passed) << v.summary();
  // The check can still fail: the same outputs flushed while the profile does not declare it.
  profile.flushes_subnormals = false;
  EXPECT_FALSE(compare_attention(c.problem, profile, c.inputs(), ref, out, nullptr).passed);
}

TEST(CompareExact, RoundedExact) {
  HostTensor expected({1, 1, 1, 2});
  expected.values = {1.0 / 3.0, 1e-3};
  HostTensor actual({1, 1, 1, 2});
  actual.values = {round_to(DType::F16, 1.0 / 3.0), round_to(DType::F16, 1e-3)};
  EXPECT_TRUE(compare_exact(expected, actual, DType::F16, ExactMode::RoundedExact).passed);
  EXPECT_FALSE(compare_exact(expected, actual, DType::F16, ExactMode::Bitwise).passed)
      << "1/3 is not an fp16 value, so bitwise equality must fail";
  actual.values[0] = std::nextafter(actual.values[0], 1.0);  // not an fp16 neighbour, but off
  EXPECT_FALSE(compare_exact(expected, actual, DType::F16, ExactMode::RoundedExact).passed);
}

TEST(NumericsProfile, DescribeNamesEveryField) {
  NumericsProfile p;
  p.input = DType::F16;
  p.probability = DType::F16;
  p.output = DType::F16;
  p.softmax_block = 128;
  p.deterministic = true;
  // The example of numerics_profile.h's describe().
  EXPECT_EQ(p.describe(), "in=f16 S=f32 P=f16 acc=f32 out=f16 RN k0=1 block=128 det zeros");
  p.score_accumulator = DType::F32;
  p.score = DType::F16;
  p.accumulation_rounding = Rounding::TowardZero;
  EXPECT_EQ(p.describe(), "in=f16 S=f16 Sacc=f32 P=f16 acc=f32 out=f16 RZ k0=1 block=128 det zeros");
}

}  // namespace
}  // namespace attncheck
