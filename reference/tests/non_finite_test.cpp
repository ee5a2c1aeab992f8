// NaN and Inf in masked or padded K/V never reach the output; rows with no allowed key give zeros
// and LSE = −inf; a masked stretch inside a live row and very large logits are harmless. Expected
// values come from a second run with finite padding (bitwise equality: a masked key must not
// touch any arithmetic) and from the plain loops (agreement.h).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "agreement.h"
#include "plain_attention.h"

namespace attncheck::testing {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

void expect_bitwise_equal(const HostTensor& a, const HostTensor& b, const char* what) {
  ASSERT_EQ(a.values.size(), b.values.size());
  for (std::size_t n = 0; n < a.values.size(); ++n)
    ASSERT_EQ(std::bit_cast<std::uint64_t>(a.values[n]), std::bit_cast<std::uint64_t>(b.values[n]))
        << what << " element " << n << ": " << a.values[n] << " vs " << b.values[n];
}

// B = 2, Hq = 4, Hkv = 2 (GQA), Lq = 5, Lk = 12, Dk = 3, Dv = 2. Keys masked for every row: key
// lengths (9, 12) pad keys 9–11 of batch 0; a mask of key length 11 pads key 11; the mask's column
// 3 is masked for every row. Those K/V entries are poisoned with `poison`.
struct PaddedCase {
  Problem problem;
  HostTensor q, k, v, mask;
  std::vector<std::int64_t> key_lengths{9, 12};

  PaddedCase(MaskKind kind, double poison) {
    problem.batch = 2;
    problem.q_heads = 4;
    problem.kv_heads = 2;
    problem.q_len = 5;
    problem.k_len = 12;
    problem.qk_dim = 3;
    problem.v_dim = 2;
    problem.has_key_lengths = true;
    problem.mask = kind;
    problem.mask_heads = 4;
    problem.mask_q_len = 5;
    problem.mask_k_len = 11;
    std::mt19937_64 rng(7);
    q = random_tensor({2, 4, 5, 3}, rng);
    k = random_tensor({2, 2, 12, 3}, rng);
    v = random_tensor({2, 2, 12, 2}, rng);
    mask = HostTensor({1, 4, 5, 11}, kind == MaskKind::Boolean ? 1.0 : 0.0);
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t i = 0; i < 5; ++i) {
        mask(0, h, i, 3) = kind == MaskKind::Boolean ? 0.0 : -kInf;
        if (kind == MaskKind::Additive) mask(0, h, i, (h + i) % 3) = 0.5 * static_cast<double>(i) - 1.0;
      }
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t g = 0; g < 2; ++g)
        for (std::int64_t j = 0; j < 12; ++j) {
          const bool masked = j == 3 || j == 11 || (b == 0 && j >= 9);
          if (!masked) continue;
          for (std::int64_t d = 0; d < 3; ++d) k(b, g, j, d) = poison;
          for (std::int64_t d = 0; d < 2; ++d) v(b, g, j, d) = d == 0 ? poison : -poison;
        }
  }
  AttentionInputs inputs() const { return {q.view(), k.view(), v.view(), mask.view(), key_lengths}; }
};

TEST(NonFinite, MaskedAndPaddedNaNOrInfNeverLeaks) {
  for (MaskKind kind : {MaskKind::Boolean, MaskKind::Additive}) {
    const PaddedCase finite(kind, 7.0);
    ReferenceOptions options;
    options.probabilities = true;
    const AttentionResult expected = reference_attention(finite.problem, finite.inputs(), options);
    for (double poison : {kNaN, kInf, -kInf}) {
      SCOPED_TRACE(::testing::Message() << mask_kind_name(kind) << " poison " << poison);
      const PaddedCase poisoned(kind, poison);
      const AttentionResult got = reference_attention(poisoned.problem, poisoned.inputs(), options);
      expect_bitwise_equal(got.out, expected.out, "O");
      expect_bitwise_equal(got.lse, expected.lse, "LSE");
      expect_bitwise_equal(*got.probabilities, *expected.probabilities, "P");
      for (double x : got.out.values) ASSERT_TRUE(std::isfinite(x));
    }
  }
}

TEST(NonFinite, AttendedNaNPropagatesOnlyToRowsThatSeeIt) {
  // Causal top-left, Lq = Lk = 6, V of the last key is NaN: only row 5 sees key 5, so rows 0–4
  // equal the finite run bit for bit and row 5 is NaN (an attended NaN must show).
  Problem p;
  p.q_len = p.k_len = 6;
  p.qk_dim = p.v_dim = 2;
  p.causal = true;
  std::mt19937_64 rng(11);
  const HostTensor q = random_tensor({1, 1, 6, 2}, rng), k = random_tensor({1, 1, 6, 2}, rng);
  const HostTensor v = random_tensor({1, 1, 6, 2}, rng);
  HostTensor v_nan = v;
  v_nan(0, 0, 5, 1) = kNaN;
  const AttentionResult clean = reference_attention(p, {q.view(), k.view(), v.view(), {}, {}});
  const AttentionResult dirty = reference_attention(p, {q.view(), k.view(), v_nan.view(), {}, {}});
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t j = 0; j < 2; ++j) EXPECT_EQ(dirty.out(0, 0, i, j), clean.out(0, 0, i, j)) << i;
  EXPECT_TRUE(std::isnan(dirty.out(0, 0, 5, 1)));
  EXPECT_EQ(dirty.out(0, 0, 5, 0), clean.out(0, 0, 5, 0));  // the other column does not read it
}

TEST(NonFinite, FullyMaskedRowGivesZerosAndNegativeInfinityLse) {
  // Batch 1 has key length 0 (every row empty); in batch 0 the boolean mask empties row 2. K and V
  // are NaN everywhere a masked key reads them, and Q of the empty rows is NaN too: an empty row
  // must not touch either.
  Problem p;
  p.batch = 2;
  p.q_len = 4;
  p.k_len = 3;
  p.qk_dim = p.v_dim = 2;
  p.has_key_lengths = true;
  p.mask = MaskKind::Boolean;
  p.mask_q_len = 4;
  p.mask_k_len = 3;
  std::mt19937_64 rng(5);
  HostTensor q = random_tensor({2, 1, 4, 2}, rng), k = random_tensor({2, 1, 3, 2}, rng),
             v = random_tensor({2, 1, 3, 2}, rng);
  HostTensor mask({1, 1, 4, 3}, 1.0);
  for (std::int64_t j = 0; j < 3; ++j) mask(0, 0, 2, j) = 0.0;
  for (std::int64_t j = 0; j < 3; ++j)  // batch 1: every K is NaN, every V is +inf
    for (std::int64_t d = 0; d < 2; ++d) k(1, 0, j, d) = kNaN, v(1, 0, j, d) = kInf;
  q(0, 0, 2, 0) = kNaN;
  for (std::int64_t i = 0; i < 4; ++i) q(1, 0, i, 1) = kNaN;
  const std::vector<std::int64_t> lengths{3, 0};
  ReferenceOptions options;
  options.probabilities = true;
  options.row_statistics = true;
  const AttentionResult r = reference_attention(p, {q.view(), k.view(), v.view(), mask.view(), lengths}, options);
  auto expect_empty = [&](std::int64_t b, std::int64_t i) {
    EXPECT_EQ(r.lse(0, b, 0, i), -kInf) << b << "," << i;
    for (std::int64_t j = 0; j < 2; ++j) {
      EXPECT_EQ(std::bit_cast<std::uint64_t>(r.out(b, 0, i, j)), 0u) << "+0 expected at " << b << "," << i;
    }
    for (std::int64_t j = 0; j < 3; ++j) EXPECT_EQ((*r.probabilities)(b, 0, i, j), 0.0);
    EXPECT_EQ(r.stats->allowed_keys(0, b, 0, i), 0.0);
    EXPECT_EQ(r.stats->max_score(0, b, 0, i), -kInf);
  };
  expect_empty(0, 2);
  for (std::int64_t i = 0; i < 4; ++i) expect_empty(1, i);
  for (std::int64_t i : {0, 1, 3}) EXPECT_TRUE(std::isfinite(r.lse(0, 0, 0, i)));
}

TEST(NonFinite, MaskedStretchInsideALiveRowIsHarmless) {
  // Lk = 300 with keys [64, 192) masked for every row (a whole 128-key stretch, so several
  // vector-width and GEMM blocks hold nothing but −inf) and NaN there in K and V; row_block 2.
  // Expected: the plain loops, and the same output bit for bit as with finite values there.
  Problem p;
  p.q_len = 5;
  p.k_len = 300;
  p.qk_dim = 4;
  p.v_dim = 3;
  p.mask = MaskKind::Boolean;
  p.mask_k_len = 300;
  std::mt19937_64 rng(3);
  const HostTensor q = random_tensor({1, 1, 5, 4}, rng), k = random_tensor({1, 1, 300, 4}, rng),
                   v = random_tensor({1, 1, 300, 3}, rng);
  HostTensor mask({1, 1, 1, 300}, 1.0);
  HostTensor k_nan = k, v_nan = v;
  for (std::int64_t j = 64; j < 192; ++j) {
    mask(0, 0, 0, j) = 0.0;
    for (std::int64_t d = 0; d < 4; ++d) k_nan(0, 0, j, d) = kNaN;
    for (std::int64_t d = 0; d < 3; ++d) v_nan(0, 0, j, d) = kNaN;
  }
  ReferenceOptions options;
  options.row_block = 2;
  const AttentionInputs clean{q.view(), k.view(), v.view(), mask.view(), {}};
  const AttentionResult expected = reference_attention(p, clean, options);
  const AttentionResult got = reference_attention(p, {q.view(), k_nan.view(), v_nan.view(), mask.view(), {}}, options);
  expect_bitwise_equal(got.out, expected.out, "O");
  expect_bitwise_equal(got.lse, expected.lse, "LSE");
  AgreementReport report;
  expect_agreement(p, got, plain_attention(p, clean), "masked stretch", report);
  EXPECT_EQ(report.live_rows, 5);
}

TEST(NonFinite, LargeLogitsGiveNoNaN) {
  // Q = 30·N(0,1), K = N(0,1), Dk = 16, scale 1: logits of order ±1e3, far beyond e^709. Max
  // subtraction keeps every exponent ≤ 0; expected values from the plain loops.
  Problem p;
  p.q_heads = p.kv_heads = 2;
  p.q_len = 7;
  p.k_len = 40;
  p.qk_dim = 16;
  p.v_dim = 3;
  p.scale = 1.0;
  std::mt19937_64 rng(13);
  const HostTensor q = random_tensor({1, 2, 7, 16}, rng, 30.0), k = random_tensor({1, 2, 40, 16}, rng),
                   v = random_tensor({1, 2, 40, 3}, rng);
  const AttentionInputs in{q.view(), k.view(), v.view(), {}, {}};
  ReferenceOptions options;
  options.row_statistics = true;
  const AttentionResult r = reference_attention(p, in, options);
  double largest = 0;
  for (double x : r.stats->max_abs_score.values) largest = std::max(largest, x);
  EXPECT_GT(largest, 300.0) << "the case must actually have large logits";
  for (double x : r.out.values) EXPECT_TRUE(std::isfinite(x));
  for (double x : r.lse.values) EXPECT_TRUE(std::isfinite(x));
  AgreementReport report;
  expect_agreement(p, r, plain_attention(p, in), "large logits", report);
}

}  // namespace
}  // namespace attncheck::testing
