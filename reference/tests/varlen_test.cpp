// Packed variable-length batches (problem.h, varlen.h) against the independent formulation they
// are defined to equal: each sequence run alone as a padded batch of one, Lq and Lk its own counts.
// The sequences are cut from the padded tensors here by this file's own loops; the reference of
// the varlen problem must equal, bitwise, the reference of every sequence alone, over both
// alignments, causal, a window, ALiBi, sinks and sequences of 0 and 1 tokens. Plus the offsets,
// the packing round trip, a hand-derived case and the validation.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "attncheck/reference.h"
#include "attncheck/varlen.h"

namespace attncheck::testing {
namespace {

bool same_bits(double a, double b) { return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b); }

HostTensor random_tensor(const Shape4& shape, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  HostTensor t(shape);
  for (double& x : t.values) x = normal(rng);
  return t;
}

struct VarlenCase {
  const char* name;
  bool causal;
  Alignment alignment;
  std::int64_t window_left, window_right;
  AlibiSlopes alibi;
  bool sinks;
  std::vector<std::int64_t> query_lengths, key_lengths;
};

class VarlenEqualsPerSequence : public ::testing::TestWithParam<VarlenCase> {};

TEST_P(VarlenEqualsPerSequence, Bitwise) {
  const VarlenCase& vc = GetParam();
  Problem p = Problem::of_shape(static_cast<std::int64_t>(vc.query_lengths.size()), 4, 2, 7, 9, 8, 6);
  p.causal = vc.causal;
  p.alignment = vc.alignment;
  p.window_left = vc.window_left;
  p.window_right = vc.window_right;
  p.alibi = vc.alibi;
  p.sinks = vc.sinks;
  p.has_key_lengths = true;
  p.varlen = true;
  std::mt19937_64 rng(29);
  const HostTensor q = random_tensor({p.batch, p.q_heads, p.q_len, p.qk_dim}, rng);
  const HostTensor k = random_tensor({p.batch, p.kv_heads, p.k_len, p.qk_dim}, rng);
  const HostTensor v = random_tensor({p.batch, p.kv_heads, p.k_len, p.v_dim}, rng);
  std::vector<double> slopes, sinks;
  for (std::int64_t n = 0; n < p.alibi_slope_count(); ++n) slopes.push_back(0.25 + 0.125 * static_cast<double>(n));
  for (std::int64_t h = 0; h < (p.sinks ? p.q_heads : 0); ++h) sinks.push_back(h == 1 ? -INFINITY : 0.5 * static_cast<double>(h));
  AttentionInputs in{q.view(), k.view(), v.view(), {}, vc.key_lengths, slopes, sinks, {}, vc.query_lengths};
  const AttentionResult packed = reference_attention(p, in);

  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t queries = vc.query_lengths[static_cast<size_t>(b)], keys = vc.key_lengths[static_cast<size_t>(b)];
    // The rows that do not exist hold O = 0 and LSE = −inf (reference.h).
    const std::int64_t first = vc.alignment == Alignment::BottomRight ? p.q_len - queries : 0;
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i)
        if (i < first || i >= first + queries) {
          EXPECT_EQ(packed.lse(0, b, h, i), -INFINITY) << "batch " << b << " row " << i;
          for (std::int64_t j = 0; j < p.v_dim; ++j) EXPECT_EQ(packed.out(b, h, i, j), 0.0);
        }
    if (queries == 0) continue;
    // Sequence b alone: a padded batch of one whose Lq and Lk are its counts. No keys: one slot
    // of key length 0 (every row empty, or its sink alone).
    Problem alone = p;
    alone.varlen = false;
    alone.batch = 1;
    alone.q_len = queries;
    alone.k_len = std::max<std::int64_t>(keys, 1);
    alone.has_key_lengths = keys == 0;
    if (alone.alibi == AlibiSlopes::PerBatchHead) alone.alibi = AlibiSlopes::PerHead;
    HostTensor qs({1, p.q_heads, queries, p.qk_dim}), ks({1, p.kv_heads, alone.k_len, p.qk_dim}),
        vs({1, p.kv_heads, alone.k_len, p.v_dim});
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t r = 0; r < queries; ++r)
        for (std::int64_t d = 0; d < p.qk_dim; ++d) qs(0, h, r, d) = q(b, h, first + r, d);
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t j = 0; j < keys; ++j) {
        for (std::int64_t d = 0; d < p.qk_dim; ++d) ks(0, g, j, d) = k(b, g, j, d);
        for (std::int64_t d = 0; d < p.v_dim; ++d) vs(0, g, j, d) = v(b, g, j, d);
      }
    const std::vector<std::int64_t> no_keys{0};
    std::vector<double> own_slopes;
    if (p.alibi == AlibiSlopes::PerBatchHead)
      own_slopes.assign(slopes.begin() + b * p.q_heads, slopes.begin() + (b + 1) * p.q_heads);
    else
      own_slopes = slopes;
    AttentionInputs one{qs.view(), ks.view(), vs.view(), {}, {}, own_slopes, sinks, {}, {}};
    if (keys == 0) one.key_lengths = no_keys;
    const AttentionResult expected = reference_attention(alone, one);
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t r = 0; r < queries; ++r) {
        EXPECT_TRUE(same_bits(packed.lse(0, b, h, first + r), expected.lse(0, 0, h, r)))
            << "batch " << b << " head " << h << " query " << r << ": " << packed.lse(0, b, h, first + r) << " vs "
            << expected.lse(0, 0, h, r);
        for (std::int64_t j = 0; j < p.v_dim; ++j)
          EXPECT_TRUE(same_bits(packed.out(b, h, first + r, j), expected.out(0, h, r, j)))
              << "batch " << b << " head " << h << " query " << r << " dim " << j;
      }
  }
}

const std::vector<std::int64_t> kQueries{3, 0, 7, 1, 5}, kKeys{9, 4, 2, 0, 1};

INSTANTIATE_TEST_SUITE_P(
    Grid, VarlenEqualsPerSequence,
    ::testing::Values(VarlenCase{"plain", false, Alignment::TopLeft, -1, -1, AlibiSlopes::None, false, kQueries, kKeys},
                      VarlenCase{"causal_top_left", true, Alignment::TopLeft, -1, -1, AlibiSlopes::None, false, kQueries, kKeys},
                      VarlenCase{"causal_bottom_right", true, Alignment::BottomRight, -1, -1, AlibiSlopes::None, false, kQueries,
                                 kKeys},
                      VarlenCase{"window_bottom_right", false, Alignment::BottomRight, 2, 1, AlibiSlopes::None, false, kQueries,
                                 kKeys},
                      VarlenCase{"alibi_causal", true, Alignment::BottomRight, -1, -1, AlibiSlopes::PerBatchHead, false,
                                 kQueries, kKeys},
                      VarlenCase{"sinks_causal", true, Alignment::TopLeft, -1, -1, AlibiSlopes::PerHead, true, kQueries, kKeys},
                      VarlenCase{"full_sequences", true, Alignment::BottomRight, -1, -1, AlibiSlopes::None, true, {7, 7}, {9, 9}}),
    [](const ::testing::TestParamInfo<VarlenCase>& param) { return std::string(param.param.name); });

// Hand-derived: one sequence of 2 queries and 2 keys, bottom-right causal, scale 1, Dk = Dv = 1,
// q = (1, 1), k = (0, ln 3), v = (2, 6), inside a capacity of Lq = 3, Lk = 4. Query 0 sits on
// diagonal 0 + 2 − 2 = 0: key 0 alone, O = 2, LSE = 0. Query 1 sees both keys, scores (0, ln 3):
// weights (1/4, 3/4), O = 2/4 + 18/4 = 5, LSE = ln(1 + 3) = ln 4. Bottom-right places the
// sequence on the last rows, 1 and 2; row 0 does not exist.
TEST(Varlen, HandDerivedBottomRight) {
  Problem p = Problem::of_shape(1, 1, 1, 3, 4, 1, 1);
  p.scale = 1.0;
  p.causal = true;
  p.alignment = Alignment::BottomRight;
  p.has_key_lengths = true;
  p.varlen = true;
  HostTensor q({1, 1, 3, 1}, 1.0), k({1, 1, 4, 1}, 100.0), v({1, 1, 4, 1}, 100.0);
  k(0, 0, 0, 0) = 0.0, k(0, 0, 1, 0) = std::log(3.0);
  v(0, 0, 0, 0) = 2.0, v(0, 0, 1, 0) = 6.0;
  const std::vector<std::int64_t> queries{2}, keys{2};
  const AttentionResult r = reference_attention(p, {q.view(), k.view(), v.view(), {}, keys, {}, {}, {}, queries});
  EXPECT_EQ(r.out(0, 0, 0, 0), 0.0);
  EXPECT_EQ(r.lse(0, 0, 0, 0), -INFINITY);
  EXPECT_DOUBLE_EQ(r.out(0, 0, 1, 0), 2.0);
  EXPECT_DOUBLE_EQ(r.lse(0, 0, 0, 1), 0.0);
  EXPECT_NEAR(r.out(0, 0, 2, 0), 5.0, 1e-14);
  EXPECT_NEAR(r.lse(0, 0, 0, 2), std::log(4.0), 1e-15);
}

TEST(Varlen, CumulativeLengthsAreOffsets) {
  const std::vector<std::int64_t> lengths{3, 0, 2};
  EXPECT_EQ(cumulative_lengths(lengths, "cu_seqlens_q"), (std::vector<std::int32_t>{0, 3, 3, 5}));
  const std::vector<std::int64_t> negative{1, -1};
  EXPECT_THROW(cumulative_lengths(negative, "cu_seqlens_k"), ProblemError);
  const std::vector<std::int64_t> huge{std::int64_t{1} << 30, std::int64_t{1} << 30};
  EXPECT_THROW(cumulative_lengths(huge, "cu_seqlens_k"), ProblemError);
}

TEST(Varlen, PackingRoundTripsTheRowsThatExist) {
  Problem p = Problem::of_shape(2, 2, 2, 4, 4, 3, 3);
  p.has_key_lengths = true;
  p.varlen = true;
  p.alignment = Alignment::BottomRight;
  std::mt19937_64 rng(3);
  const HostTensor q = random_tensor({2, 2, 4, 3}, rng);
  const std::vector<std::int64_t> lengths{1, 3};
  const HostTensor packed = pack_sequences(p, q.view(), lengths, PackedRows::Queries);
  ASSERT_EQ(packed.shape, (Shape4{1, 4, 2, 3}));
  // Bottom-right: sequence 0's one query is logical row 3, sequence 1's are rows 1..3.
  EXPECT_EQ(packed(0, 0, 1, 2), q(0, 1, 3, 2));
  EXPECT_EQ(packed(0, 1, 0, 0), q(1, 0, 1, 0));
  const HostTensor back = unpack_sequences(p, packed.view(), lengths, PackedRows::Queries, 4, -7.0);
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < 4; ++i)
        for (std::int64_t d = 0; d < 3; ++d)
          EXPECT_EQ(back(b, h, i, d), query_row_exists(p, lengths, b, i) ? q(b, h, i, d) : -7.0);
  const std::vector<std::int64_t> one_count{1};
  EXPECT_THROW(query_row_exists(p, one_count, 1, 0), ProblemError) << "counts of another batch size";
  const std::vector<std::int64_t> too_long{5, 0};
  EXPECT_THROW(pack_sequences(p, q.view(), too_long, PackedRows::Queries), ProblemError);
}

TEST(Varlen, ValidationNamesWhatAPackedBatchCannotTake) {
  Problem p = Problem::of_shape(2, 1, 1, 3, 3, 2, 2);
  p.varlen = true;
  EXPECT_THROW(p.validate(), ProblemError) << "no key lengths";
  p.has_key_lengths = true;
  EXPECT_NO_THROW(p.validate());
  Problem masked = p;
  masked.mask = MaskKind::Boolean;
  EXPECT_THROW(masked.validate(), ProblemError);
  Problem offset = p;
  offset.alignment = Alignment::KeyLengths;
  EXPECT_THROW(offset.validate(), ProblemError);
  Problem paged = p;
  paged.kv_storage = KvStorage::PagedTokenMajor;
  paged.page_size = 1;
  EXPECT_THROW(paged.validate(), ProblemError);
  EXPECT_EQ(parse_problem(p.describe()), p);
  EXPECT_NE(p.describe().find("varlen=1"), std::string::npos);

  HostTensor q({2, 1, 3, 2}), k({2, 1, 3, 2}), v({2, 1, 3, 2});
  const std::vector<std::int64_t> keys{1, 2}, one_count{1}, too_many{4, 0};
  EXPECT_THROW(reference_attention(p, {q.view(), k.view(), v.view(), {}, keys, {}, {}, {}, one_count}), ProblemError);
  EXPECT_THROW(reference_attention(p, {q.view(), k.view(), v.view(), {}, keys, {}, {}, {}, too_many}), ProblemError);
  Problem padded = p;
  padded.varlen = false;
  const std::vector<std::int64_t> counts{1, 1};
  EXPECT_THROW(reference_attention(padded, {q.view(), k.view(), v.view(), {}, keys, {}, {}, {}, counts}), ProblemError)
      << "query lengths on a padded problem";
}

}  // namespace
}  // namespace attncheck::testing
