// The declarable empty-row LSE convention (ABI 2.1, numerics/README.md §6.1): −inf (the
// default, log 0), exactly 0 (PyTorch), or unspecified (not read).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "attncheck/compare.h"
#include "sim_kernels.h"

namespace attncheck {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Row 1 has no allowed key (an all-false boolean mask row); rows 0 and 2 attend to every key and
// carry the reference's own values, so only the empty row's LSE decides the verdict.
struct EmptyRowLseCase {
  Problem p;
  HostTensor q{{1, 1, 3, 4}}, k{{1, 1, 8, 4}}, v{{1, 1, 8, 2}}, mask{{1, 1, 3, 8}, 1.0};
  AttentionResult ref;
  HostTensor out, lse;
  EmptyRowLseCase() {
    p.q_len = 3;
    p.k_len = 8;
    p.qk_dim = 4;
    p.v_dim = 2;
    p.mask = MaskKind::Boolean;
    p.mask_q_len = 3;
    p.mask_k_len = 8;
    sim::Normal normal(5);
    for (auto* t : {&q, &k, &v})
      for (double& x : t->values) x = round_to(DType::F32, normal());
    for (std::int64_t j = 0; j < 8; ++j) mask(0, 0, 1, j) = 0.0;
    ReferenceOptions ro;
    ro.row_statistics = true;
    ref = reference_attention(p, {q.view(), k.view(), v.view(), mask.view(), {}}, ro);
    out = ref.out;
    for (double& x : out.values) x = round_to(DType::F32, x);
    lse = ref.lse;
    for (double& x : lse.values) x = round_to(DType::F32, x);
  }
  Verdict judge(EmptyRowLse convention, double empty_row_lse) {
    lse(0, 0, 0, 1) = empty_row_lse;
    NumericsProfile profile;
    profile.writes_lse = true;
    profile.empty_row_lse = convention;
    return compare_attention(p, profile, {q.view(), k.view(), v.view(), mask.view(), {}}, ref, out, &lse);
  }
};

TEST(EmptyRowLse, NegativeInfinityIsTheDefaultAndRefusesZero) {
  EmptyRowLseCase c;
  ASSERT_EQ(c.ref.lse(0, 0, 0, 1), -kInf);
  EXPECT_EQ(NumericsProfile{}.empty_row_lse, EmptyRowLse::NegativeInfinity);
  EXPECT_TRUE(c.judge(EmptyRowLse::NegativeInfinity, -kInf).passed);
  const Verdict zero = c.judge(EmptyRowLse::NegativeInfinity, 0.0);
  EXPECT_FALSE(zero.passed) << "a kernel writing 0 while declaring −inf";
  EXPECT_EQ(zero.nonfinite_violations, 1);
}

TEST(EmptyRowLse, DeclaredZeroAcceptsExactlyZero) {
  EmptyRowLseCase c;
  EXPECT_TRUE(c.judge(EmptyRowLse::Zero, 0.0).passed);
  EXPECT_TRUE(c.judge(EmptyRowLse::Zero, -0.0).passed);
  const Verdict nan = c.judge(EmptyRowLse::Zero, std::numeric_limits<double>::quiet_NaN());
  EXPECT_FALSE(nan.passed);
  EXPECT_NE(nan.failure.find("declared LSE = 0"), std::string::npos) << nan.failure;
  EXPECT_FALSE(c.judge(EmptyRowLse::Zero, -kInf).passed) << "declared 0: −inf is another convention";
  EXPECT_FALSE(c.judge(EmptyRowLse::Zero, 1e-30).passed);
}

TEST(EmptyRowLse, UnspecifiedIsNotRead) {
  EmptyRowLseCase c;
  EXPECT_TRUE(c.judge(EmptyRowLse::Unspecified, 0.0).passed);
  EXPECT_TRUE(c.judge(EmptyRowLse::Unspecified, std::numeric_limits<double>::quiet_NaN()).passed);
  // A live row's LSE is still judged.
  c.lse(0, 0, 0, 0) += 1.0;
  EXPECT_FALSE(c.judge(EmptyRowLse::Unspecified, 0.0).passed);
}

}  // namespace
}  // namespace attncheck
