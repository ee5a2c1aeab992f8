// The row statistics (numerics/README.md §2.2) against the plain loops' direct evaluation of each
// definition, on a few problems, and on a two-key row derived by hand.
#include <gtest/gtest.h>

#include <cmath>

#include "agreement.h"

namespace attncheck::testing {
namespace {

TEST(RowStatistics, MatchThePlainDefinitions) {
  struct Shape {
    std::int64_t hq, hkv, lq, lk, dk, dv;
    bool causal;
    double softcap;
  };
  const Shape shapes[] = {{2, 1, 9, 33, 8, 5, false, 0.0}, {4, 2, 70, 70, 16, 16, true, 0.0},
                          {1, 1, 3, 200, 4, 7, false, 20.0}};
  std::mt19937_64 rng(17);
  for (const Shape& s : shapes) {
    Problem p;
    p.q_heads = s.hq, p.kv_heads = s.hkv, p.q_len = s.lq, p.k_len = s.lk, p.qk_dim = s.dk, p.v_dim = s.dv;
    p.causal = s.causal;
    p.softcap = s.softcap;
    // Q three times larger: rows from nearly flat to nearly one-hot, so the fp16 tail T_j and the
    // weight cut-off of M both see keys on either side of their thresholds.
    const HostTensor q = random_tensor({1, s.hq, s.lq, s.dk}, rng, 3.0), k = random_tensor({1, s.hkv, s.lk, s.dk}, rng),
                     v = random_tensor({1, s.hkv, s.lk, s.dv}, rng);
    const AttentionInputs in{q.view(), k.view(), v.view(), {}, {}};
    ReferenceOptions options;
    options.row_statistics = true;
    options.row_block = 16;
    const AttentionResult r = reference_attention(p, in, options);
    ASSERT_TRUE(r.stats.has_value());
    const PlainResult plain = plain_attention(p, in);
    double tail = 0;
    for (double t : plain.fp16_tail.values) tail += t;
    EXPECT_GT(tail, 0.0) << p.describe() << ": no key below fp16's normal weight; T_j untested";
    AgreementReport report;
    expect_agreement(p, r, plain, p.describe(), report);
  }
}

TEST(RowStatistics, TwoKeyRowByHand) {
  // One query, two keys, Dk = 1, scale 1, q = 1, k = (0, −20): s = (0, −20), m = 0, n = 2,
  // M = 20 (e^{−20} > e^{−104}, so key 2 counts), a_k = |q·k_k| = (0, 20).
  // Z = 1 + e^{−20}; p = (1, e^{−20})/Z. V = (2, −4): A = (2 + 4e^{−20})/Z,
  // O = (2 − 4e^{−20})/Z, W = (Σ p_k²(|V_k| + |O|)²)^½, C = Σ p_k|V_k − O|,
  // Ca = p_2·20·|V_2 − O|, Cs = p_2·20·|V_2 − O| (|s_1| = 0), and T = Σ_{k: e^{s_k−m} < 2^-14}
  // |V_k|/Z = |V_2|/Z = 4/Z, because e^{−20} ≈ 2.1e-9 < 2^-14 (key 2's weight is subnormal in fp16).
  // T carries no weight of its own: E_P's fp16 tail in numerics/README.md §2.5 is η_P·T.
  Problem p;
  p.k_len = 2;
  p.scale = 1.0;
  HostTensor q({1, 1, 1, 1}, 1.0), k({1, 1, 2, 1}), v({1, 1, 2, 1});
  k.values = {0.0, -20.0};
  v.values = {2.0, -4.0};
  ReferenceOptions options;
  options.row_statistics = true;
  const AttentionResult r = reference_attention(p, {q.view(), k.view(), v.view(), {}, {}}, options);
  const RowStatistics& st = *r.stats;
  const double e = std::exp(-20.0), z = 1 + e, p1 = 1 / z, p2 = e / z, o = (2 - 4 * e) / z;
  // Exact: counts, maxima of exactly computed scores.
  EXPECT_EQ(st.allowed_keys(0, 0, 0, 0), 2.0);
  EXPECT_EQ(st.max_score(0, 0, 0, 0), 0.0);
  EXPECT_EQ(st.max_abs_score(0, 0, 0, 0), 20.0);
  EXPECT_EQ(st.max_dot_abs(0, 0, 0, 0), 20.0);
  // The rest: a handful of roundings each (exp, the sum Z, a division, two to four products and
  // sums); 16u relative covers them.
  const double bound = 16 * 0x1p-53;
  EXPECT_NEAR(st.row_scale(0, 0, 0, 0), p1 * 2 + p2 * 4, bound * 2);
  EXPECT_NEAR(r.out(0, 0, 0, 0), o, bound * 2);
  const double w = std::sqrt(p1 * p1 * (2 + std::fabs(o)) * (2 + std::fabs(o)) +
                             p2 * p2 * (4 + std::fabs(o)) * (4 + std::fabs(o)));
  EXPECT_NEAR(st.spread(0, 0, 0, 0), w, bound * w);
  const double c = p1 * std::fabs(2 - o) + p2 * std::fabs(-4 - o);
  EXPECT_NEAR(st.centered(0, 0, 0, 0), c, bound * c);
  EXPECT_NEAR(st.centered_dot(0, 0, 0, 0), p2 * 20 * std::fabs(-4 - o), bound * p2 * 20 * 6);
  EXPECT_NEAR(st.centered_score(0, 0, 0, 0), p2 * 20 * std::fabs(-4 - o), bound * p2 * 20 * 6);
  EXPECT_NEAR(st.fp16_tail(0, 0, 0, 0), 4 / z, bound * 4);
  EXPECT_NEAR(st.e4m3_tail(0, 0, 0, 0), 4 / z, bound * 4);  // e^{−20} < 2^-6 as well
}

TEST(RowStatistics, TheE4m3TailStartsAtTwoToTheMinusSix) {
  // Three keys, scores s = (0, −5, −3) (q = 1, k = s, scale 1), m = 0: weights 1, e^{−5} ≈ 6.7e-3
  // and e^{−3} ≈ 5.0e-2. Only e^{−5} is below 2^-6 ≈ 1.56e-2 (e4m3's normal range), and none is
  // below 2^-14, so T = 0 and T8 = |V_2|/Z with Z = 1 + e^{−5} + e^{−3}, V = (1, 8, 2).
  Problem p;
  p.k_len = 3;
  p.scale = 1.0;
  HostTensor q({1, 1, 1, 1}, 1.0), k({1, 1, 3, 1}), v({1, 1, 3, 1});
  k.values = {0.0, -5.0, -3.0};
  v.values = {1.0, 8.0, 2.0};
  ReferenceOptions options;
  options.row_statistics = true;
  const RowStatistics st = *reference_attention(p, {q.view(), k.view(), v.view(), {}, {}}, options).stats;
  const double z = 1 + std::exp(-5.0) + std::exp(-3.0);
  EXPECT_EQ(st.fp16_tail(0, 0, 0, 0), 0.0);
  EXPECT_NEAR(st.e4m3_tail(0, 0, 0, 0), 8 / z, 16 * 0x1p-53 * 8);
}

}  // namespace
}  // namespace attncheck::testing
