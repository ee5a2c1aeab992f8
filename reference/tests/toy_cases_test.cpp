// Two-token cases derived by hand. Each expected value is written beside its derivation; where the
// reference's arithmetic is exact (integers, e^0 = 1, division by a power of two) the check is
// exact equality, otherwise the bound is counted in roundings of u = 2^-53 (see kLogisticBound).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "attncheck/reference.h"

namespace attncheck {
namespace {

constexpr double kU = 0x1p-53;  // unit roundoff of double
constexpr double kInf = std::numeric_limits<double>::infinity();

// Roundings between the reference's O = (V1 + e·V2)/(1 + e), e = e^{s2−s1}, and the closed form
// O = V2 + p1(V1 − V2), p1 = 1/(1 + e^{−(s1−s2)}): reference exp ≤ 2u (Eigen's or libm's exp), the
// sum 1 + e, the two products and the sum of the P·V row, the division (≤ 6u in all, relative to
// A = p1|V1| + p2|V2| ≤ |V1| + |V2|); closed form exp, sum, division, difference, product and sum
// (≤ 6u, relative to |V1| + |V2|). 16u·(|V1| + |V2|) covers both with room to spare.
double logistic_bound(double v1, double v2) { return 16 * kU * (std::fabs(v1) + std::fabs(v2)); }

double logistic(double d) { return 1.0 / (1.0 + std::exp(-d)); }

// One batch and head: q [Lq, Dk], k [Lk, Dk], v [Lk, Dv] given row by row.
struct Toy {
  Problem problem;
  HostTensor q, k, v, mask;
  Toy(std::int64_t lq, std::int64_t lk, std::int64_t dk, std::int64_t dv) {
    problem.q_len = lq;
    problem.k_len = lk;
    problem.qk_dim = dk;
    problem.v_dim = dv;
    problem.scale = 1.0;  // scores are then plain dot products
    q = HostTensor({1, 1, lq, dk});
    k = HostTensor({1, 1, lk, dk});
    v = HostTensor({1, 1, lk, dv});
  }
  AttentionResult run() const {
    const bool masked = problem.mask != MaskKind::None;
    return reference_attention(problem, {q.view(), k.view(), v.view(), masked ? mask.view() : View4<const double>{}, {}});
  }
};

// Two keys, Dk = 1, q = 1, so s = (k1, k2) exactly. V1 = (1, 4), V2 = (−3, 0.5).
Toy two_keys(double s1, double s2) {
  Toy t(1, 2, 1, 2);
  t.q.values = {1.0};
  t.k.values = {s1, s2};
  t.v.values = {1.0, 4.0, -3.0, 0.5};
  return t;
}

void expect_logistic_output(const AttentionResult& r, double p1, std::int64_t head = 0, std::int64_t row = 0,
                            const std::vector<double>& v = {1.0, 4.0, -3.0, 0.5}) {
  // softmax over two keys: p1 = e^{s1}/(e^{s1} + e^{s2}) = 1/(1 + e^{−(s1−s2)}), p2 = 1 − p1,
  // O = p1·V1 + (1 − p1)·V2 = V2 + p1·(V1 − V2).
  for (std::int64_t j = 0; j < 2; ++j) {
    const double v1 = v[j], v2 = v[2 + j];
    EXPECT_NEAR(r.out(0, head, row, j), v2 + p1 * (v1 - v2), logistic_bound(v1, v2)) << "j=" << j;
  }
}

TEST(ToyCases, TwoKeysGiveTheLogistic) {
  const AttentionResult r = two_keys(1.0, 0.0).run();
  expect_logistic_output(r, logistic(1.0));
  // LSE = log(e^1 + e^0) = 1 + log(1 + e^{-1}); reference: m + log(Z) with m = 1, Z = 1 + e^{-1}:
  // exp, sum, log and the final sum, 4 roundings of values ≤ 1.32.
  EXPECT_NEAR(r.lse(0, 0, 0, 0), 1.0 + std::log1p(std::exp(-1.0)), 8 * kU * 1.32);
}

TEST(ToyCases, LargeLogitsDependOnlyOnTheirDifference) {
  // s = (1000, 999): e^{1000} overflows, but softmax is shift-invariant: p1 = logistic(1), and
  // LSE = 1000 + log(1 + e^{-1}) (4 roundings of values ≤ 1001).
  const AttentionResult r = two_keys(1000.0, 999.0).run();
  expect_logistic_output(r, logistic(1.0));
  EXPECT_NEAR(r.lse(0, 0, 0, 0), 1000.0 + std::log1p(std::exp(-1.0)), 8 * kU * 1001);
}

TEST(ToyCases, OneKeyGivesVExactly) {
  // p = e^0/e^0 = 1 exactly, so O = 1·V/1 = V with no rounding; LSE = s + log(1) = s exactly.
  Toy t(1, 1, 2, 3);
  t.q.values = {0.5, -2.0};
  t.k.values = {3.0, 1.25};  // s = 1.5 − 2.5 = −1 (exact)
  t.v.values = {0.1, -7.3, 1e-300};
  const AttentionResult r = t.run();
  for (std::int64_t j = 0; j < 3; ++j) EXPECT_EQ(r.out(0, 0, 0, j), t.v(0, 0, 0, j));
  EXPECT_EQ(r.lse(0, 0, 0, 0), -1.0);
}

TEST(ToyCases, EqualKeysGiveTheMean) {
  // Four equal keys: every weight is e^0 = 1 and Z = 4, so O = (V1 + V2 + V3 + V4)/4; with small
  // integer V every sum is exact and the division by 4 is exact. LSE = s + log 4, with m + log(Z)
  // computing exactly that expression.
  Toy t(1, 4, 1, 2);
  t.q.values = {2.0};
  t.k.values = {0.75, 0.75, 0.75, 0.75};  // s = 1.5
  t.v.values = {1, 2, 3, -4, 5, 6, 7, 8};
  const AttentionResult r = t.run();
  EXPECT_EQ(r.out(0, 0, 0, 0), (1.0 + 3 + 5 + 7) / 4);
  EXPECT_EQ(r.out(0, 0, 0, 1), (2.0 - 4 + 6 + 8) / 4);
  EXPECT_EQ(r.lse(0, 0, 0, 0), 1.5 + std::log(4.0));
}

TEST(ToyCases, MaskedKeyIsExcluded) {
  // Boolean mask (1, 0): only key 1 remains, p = (1, 0), O = V1 exactly and LSE = s1 exactly. The
  // additive bias (0, −inf) is the same mask.
  for (MaskKind kind : {MaskKind::Boolean, MaskKind::Additive}) {
    Toy t = two_keys(0.25, 3.0);  // the masked key would dominate
    t.problem.mask = kind;
    t.problem.mask_k_len = 2;
    t.mask = HostTensor({1, 1, 1, 2});
    t.mask.values = kind == MaskKind::Boolean ? std::vector<double>{1.0, 0.0} : std::vector<double>{0.0, -kInf};
    const AttentionResult r = t.run();
    EXPECT_EQ(r.out(0, 0, 0, 0), 1.0) << mask_kind_name(kind);
    EXPECT_EQ(r.out(0, 0, 0, 1), 4.0) << mask_kind_name(kind);
    EXPECT_EQ(r.lse(0, 0, 0, 0), 0.25) << mask_kind_name(kind);
  }
}

TEST(ToyCases, CausalTopLeftAndBottomRightDifferWhenLqIsNotLk) {
  // Lq = 1, Lk = 2. Top-left: query 0 sees j <= 0, so O = V1 exactly. Bottom-right: offset
  // Lk − Lq = 1, query 0 sees j <= 1, both keys: the logistic.
  Toy t = two_keys(1.0, 0.0);
  t.problem.causal = true;
  t.problem.alignment = Alignment::TopLeft;
  AttentionResult r = t.run();
  EXPECT_EQ(r.out(0, 0, 0, 0), 1.0);
  EXPECT_EQ(r.out(0, 0, 0, 1), 4.0);
  EXPECT_EQ(r.lse(0, 0, 0, 0), 1.0);
  t.problem.alignment = Alignment::BottomRight;
  r = t.run();
  expect_logistic_output(r, logistic(1.0));
}

TEST(ToyCases, CausalWithTwoTokensAgreesAcrossAlignmentsWhenLqIsLk) {
  // Lq = Lk = 2: offset 0 for both alignments. Row 0 sees key 0 (O = V1 exactly), row 1 both.
  for (Alignment a : {Alignment::TopLeft, Alignment::BottomRight}) {
    Toy t(2, 2, 1, 2);
    t.problem.causal = true;
    t.problem.alignment = a;
    t.q.values = {1.0, 1.0};
    t.k.values = {1.0, 0.0};
    t.v.values = {1.0, 4.0, -3.0, 0.5};
    const AttentionResult r = t.run();
    EXPECT_EQ(r.out(0, 0, 0, 0), 1.0) << alignment_name(a);
    EXPECT_EQ(r.out(0, 0, 0, 1), 4.0) << alignment_name(a);
    expect_logistic_output(r, logistic(1.0), 0, 1);
  }
}

TEST(ToyCases, MqaHeadsShareOneKeyValueHead) {
  // Hq = 2, Hkv = 1: both query heads read kv head 0 (h / (Hq/Hkv) = 0). k = (1, 0); head 0 has
  // q = 1, so s = (1, 0); head 1 has q = −2, so s = (−2, 0): p1 = logistic(1) and logistic(−2).
  Toy t(1, 2, 1, 2);
  t.problem.q_heads = 2;
  t.problem.kv_heads = 1;
  t.q = HostTensor({1, 2, 1, 1});
  t.q.values = {1.0, -2.0};
  t.k.values = {1.0, 0.0};
  t.v.values = {1.0, 4.0, -3.0, 0.5};
  const AttentionResult r = t.run();
  expect_logistic_output(r, logistic(1.0), 0);
  expect_logistic_output(r, logistic(-2.0), 1);
}

TEST(ToyCases, SoftcapBendsScoresBeforeTheSoftmax) {
  // c = 2, raw s = (3, 0): capped s = (2·tanh(1.5), 0), so p1 = logistic(2·tanh(1.5)). The cap's
  // tanh, division and product add 3 roundings to the logit (≤ 3u·2), moving p1 by at most
  // p1(1 − p1)·6u ≤ 1.5u: inside the logistic bound.
  Toy t = two_keys(3.0, 0.0);
  t.problem.softcap = 2.0;
  expect_logistic_output(t.run(), logistic(2.0 * std::tanh(1.5)));
}

TEST(ToyCases, AdditiveBiasShiftsScores) {
  // s = (1, 0) plus bias (0.5, −1) = (1.5, −1), exact: p1 = logistic(2.5).
  Toy t = two_keys(1.0, 0.0);
  t.problem.mask = MaskKind::Additive;
  t.problem.mask_k_len = 2;
  t.mask = HostTensor({1, 1, 1, 2});
  t.mask.values = {0.5, -1.0};
  const AttentionResult r = t.run();
  expect_logistic_output(r, logistic(2.5));
  // LSE = 1.5 + log(1 + e^{-2.5}), 4 roundings of values ≤ 1.6.
  EXPECT_NEAR(r.lse(0, 0, 0, 0), 1.5 + std::log1p(std::exp(-2.5)), 8 * kU * 1.6);
}

TEST(ToyCases, ScaleMultipliesTheDotProduct) {
  // Default scale 1/sqrt(Dk) with Dk = 4: q·k1 = 4 (q = k1 = (1, 1, 1, 1)), q·k2 = 0, so s = (2, 0)
  // and p1 = logistic(2). 1/sqrt(4) = 0.5 is exact, so s is exact.
  Toy t(1, 2, 4, 2);
  t.problem.scale.reset();
  t.q.values = {1, 1, 1, 1};
  t.k.values = {1, 1, 1, 1, 1, -1, 1, -1};
  t.v.values = {1.0, 4.0, -3.0, 0.5};
  expect_logistic_output(t.run(), logistic(2.0));
}

}  // namespace
}  // namespace attncheck
