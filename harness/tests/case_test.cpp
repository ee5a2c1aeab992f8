// Fixed key lengths, mask departures, the backward data of a case and the end-to-end check of a
// grid case.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attncheck/case.h"
#include "attncheck/check.h"

namespace attncheck {
namespace {

AttentionCase with_lengths() {
  AttentionCase c;
  c.problem = Problem::of_shape(3, 2, 2, 4, 9, 8, 8);
  c.problem.has_key_lengths = true;
  c.seed = 11;
  return c;
}

TEST(FixedKeyLengths, ReplaceTheDrawAndLeaveEveryOtherValueAsDrawn) {
  AttentionCase fixed = with_lengths();
  fixed.key_lengths = {9, 0, 4};
  const CaseData drawn = make_case_data(with_lengths()), d = make_case_data(fixed);
  EXPECT_EQ(d.key_lengths, fixed.key_lengths);
  EXPECT_EQ(d.q.values, drawn.q.values);
  EXPECT_EQ(d.v.values, drawn.v.values);
}

TEST(FixedKeyLengths, PoisonFollowsThem) {
  AttentionCase c = with_lengths();
  c.key_lengths = {9, 0, 4};
  c.poison_masked = true;
  const CaseData d = make_case_data(c);
  EXPECT_FALSE(std::isnan(d.k(2, 0, 3, 0)) || std::fabs(d.k(2, 0, 3, 0)) == largest_finite(DType::F32));
  for (std::int64_t j = 4; j < 9; ++j) {
    // poison[(j + l) % 3] with l = 0: NaN, +max, −max in turn (case.cpp).
    const double k = d.k(2, 1, j, 0);
    EXPECT_TRUE(std::isnan(k) || std::fabs(k) == largest_finite(DType::F32)) << "key " << j << " holds " << k;
  }
}

TEST(FixedKeyLengths, RoundTripThroughTheCaseText) {
  AttentionCase c = with_lengths();
  c.key_lengths = {9, 0, 4};
  const std::string text = c.describe();
  EXPECT_NE(text.find(" lengths=9,0,4 "), std::string::npos) << text;
  EXPECT_EQ(parse_case(text).key_lengths, c.key_lengths);
  EXPECT_EQ(parse_case(text).describe(), text);
  EXPECT_EQ(with_lengths().describe().find("lengths="), std::string::npos);
  EXPECT_THROW(parse_case("B=1 Lk=4 keylens=1 lengths=1,,2"), ProblemError);
  EXPECT_THROW(parse_case("B=1 Lk=4 keylens=1 lengths=-1"), ProblemError);
}

TEST(FixedKeyLengths, ThatDoNotFitTheProblemAreRefused) {
  AttentionCase c = with_lengths();
  c.key_lengths = {9, 0};
  EXPECT_THROW(make_case_data(c), ProblemError);  // B = 3
  c.key_lengths = {9, 0, 10};
  EXPECT_THROW(make_case_data(c), ProblemError);  // Lk = 9
  c.key_lengths = {9, 0, 4};
  c.problem.has_key_lengths = false;
  EXPECT_THROW(make_case_data(c), ProblemError);  // would be ignored
}

TEST(FixedKeyLengths, ReachALayerCase) {
  LayerCase c;
  c.problem.attention = Problem::of_shape(2, 2, 2, 3, 5, 4, 4);
  c.problem.attention.has_key_lengths = true;
  c.problem.model_dim = 8;
  c.problem.self_attention = false;  // Lk = 5 keys projected from X_kv, Lq = 3 queries from X
  c.key_lengths = {0, 5};
  const LayerCaseData d = make_layer_case_data(c);
  EXPECT_EQ(d.key_lengths, c.key_lengths);
  const LayerInputs in = d.inputs(c.problem);
  EXPECT_EQ(std::vector<std::int64_t>(in.key_lengths.begin(), in.key_lengths.end()), c.key_lengths);
  EXPECT_NE(c.describe().find(" lengths=0,5 "), std::string::npos) << c.describe();
}

// ALiBi's closed-form slopes (Press et al. 2022, §3; the BLOOM extension beyond a power of two),
// hand-derived for Hq = 6: n = 4, heads 0-3 get 2^(−8(h+1)/4) = 2^-2, 2^-4, 2^-6, 2^-8, heads 4
// and 5 every other slope of 8 heads, 2^(−4(2k+1)/4) = 2^-1, 2^-3. Drawn for one case in two.
CaseData alibi_case_data(Problem problem, AlibiSlopes slopes, std::uint64_t seed) {
  AttentionCase c;
  c.problem = problem;
  c.problem.alibi = slopes;
  c.seed = seed;
  return make_case_data(c);
}

TEST(AlibiSlopes, HalfThePerHeadCasesTakeTheClosedFormAndTheOthersAreJittered) {
  const std::vector<double> closed_form{0x1p-2, 0x1p-4, 0x1p-6, 0x1p-8, 0x1p-1, 0x1p-3};
  int closed = 0, jittered = 0;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    const CaseData d = alibi_case_data(Problem::of_shape(1, 6, 6, 2, 3, 4, 4), AlibiSlopes::PerHead, seed);
    ASSERT_EQ(d.alibi_slopes.size(), 6u);
    if (d.alibi_slopes == closed_form) {
      ++closed;
      continue;
    }
    ++jittered;
    // Jittered: 2^(−8(h+1)/Hq)·(1/2 + U), so within [1/2, 3/2) of the geometric slope.
    for (std::size_t h = 0; h < 6; ++h) {
      const double geometric = std::exp2(-8.0 * static_cast<double>(h + 1) / 6.0);
      EXPECT_GE(d.alibi_slopes[h], 0.5 * geometric * (1 - 0x1p-23));
      EXPECT_LT(d.alibi_slopes[h], 1.5 * geometric * (1 + 0x1p-23));
    }
  }
  EXPECT_GT(closed, 8);
  EXPECT_GT(jittered, 8);
}

TEST(AlibiSlopes, PerBatchSlopesAreAlwaysJittered) {
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    const CaseData d = alibi_case_data(Problem::of_shape(2, 4, 4, 2, 3, 4, 4), AlibiSlopes::PerBatchHead, seed);
    ASSERT_EQ(d.alibi_slopes.size(), 8u);
    // Rows of the closed form would repeat; jittered rows differ (a kernel reading batch 0's row
    // for every batch must be seen).
    EXPECT_NE(std::vector<double>(d.alibi_slopes.begin(), d.alibi_slopes.begin() + 4),
              std::vector<double>(d.alibi_slopes.begin() + 4, d.alibi_slopes.end()));
  }
}

TEST(ForbidInMask, EmptiesRowsOfABooleanMaskAndRangesOfAnAdditiveOne) {
  AttentionCase c;
  c.problem = with_mask(Problem::of_shape(1, 2, 2, 6, 8, 4, 4), MaskKind::Boolean, 1, 2, 6, 8);
  CaseData d = make_case_data(c);
  forbid_in_mask(c.problem, d, [](std::int64_t i) { return i == 2; }, 0, 8);
  for (std::int64_t j = 0; j < 8; ++j) EXPECT_EQ(d.mask(0, 1, 2, j), 0.0);

  c.problem.mask = MaskKind::Additive;
  d = make_case_data(c);
  const double kept = d.mask(0, 0, 0, 5);
  forbid_in_mask(c.problem, d, [](std::int64_t) { return true; }, 2, 5);
  for (std::int64_t i = 0; i < 6; ++i)
    for (std::int64_t j = 2; j < 5; ++j) EXPECT_EQ(d.mask(0, 0, i, j), -INFINITY);
  EXPECT_EQ(d.mask(0, 0, 0, 5), kept);

  c.problem.mask = MaskKind::None;
  EXPECT_THROW(forbid_in_mask(c.problem, d, [](std::int64_t) { return true; }, 0, 1), ProblemError);
}

// A case with an empty row: batch 1 has key length 0, so its rows have no allowed key.
AttentionCase backward_case(DType dtype) {
  AttentionCase c;
  c.problem = Problem::of_shape(2, 2, 1, 5, 7, 4, 6);
  c.problem.has_key_lengths = true;
  c.key_lengths = {7, 0};
  c.dtype = dtype;
  c.seed = 29;
  return c;
}

struct BackwardDataOf {
  AttentionCase c;
  AttentionResult reference;
  explicit BackwardDataOf(const AttentionCase& of) : c(of) {
    const CaseData data = make_case_data(c);
    reference = reference_attention(c.problem, data.inputs(c.problem));
  }
  BackwardData make(DType output, bool with_d_lse) const { return make_backward_data(c, reference, output, with_d_lse); }
};

bool same_bits(const HostTensor& a, const HostTensor& b) {
  return a.shape == b.shape && std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(double)) == 0;
}

TEST(MakeBackwardData, TheSameCaseGivesTheSameBitsAndAnotherSeedOtherGradients) {
  const BackwardDataOf of(backward_case(DType::BF16));
  const BackwardData a = of.make(DType::F32, true), b = of.make(DType::F32, true);
  EXPECT_TRUE(same_bits(a.out, b.out));
  EXPECT_TRUE(same_bits(a.lse, b.lse));
  EXPECT_TRUE(same_bits(a.d_out, b.d_out));
  ASSERT_TRUE(a.d_lse && b.d_lse);
  EXPECT_TRUE(same_bits(*a.d_lse, *b.d_lse));
  AttentionCase other = of.c;
  other.seed += 1;
  EXPECT_NE(make_backward_data(other, of.reference, DType::F32, true).d_out.values, a.d_out.values);
}

TEST(MakeBackwardData, GradientsAreValuesOfTheirDtypesFromAStreamApartFromTheInputs) {
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    const BackwardDataOf of(backward_case(dtype));
    const BackwardData d = of.make(dtype, true);
    EXPECT_EQ(d.d_out.shape, (Shape4{2, 2, 5, 6}));
    for (const double x : d.d_out.values) ASSERT_EQ(round_to(dtype, x), x) << "dO holds " << x << ", not a " << dtype_name(dtype);
    ASSERT_TRUE(d.d_lse.has_value());
    EXPECT_EQ(d.d_lse->shape, (Shape4{1, 2, 2, 5}));
    for (const double x : d.d_lse->values) ASSERT_EQ(round_to(DType::F32, x), x) << "dLSE holds " << x;
    // Not the forward's stream: make_case_data draws Q first from PortableRandom(seed), so dO drawn
    // from that stream would repeat Q's leading values.
    PortableRandom forward_stream(of.c.seed);
    EXPECT_NE(d.d_out.values[0], round_to(dtype, forward_stream.normal()));
  }
}

// dO ~ N(0, 1): over n = 120 draws (rounded to float32, which moves each by 2^-24 relative at
// most) the sample mean has standard deviation 1/sqrt(n) ≈ 0.091 and the sample variance
// sqrt(2/(n − 1)) ≈ 0.13; six of each bound them, which a normal sample exceeds for about one
// seed in 10^8 and a wrong draw does not meet (uniform [0, 1): mean 0.5, variance 1/12).
TEST(MakeBackwardData, OutputGradientsAreStandardNormal) {
  const BackwardDataOf of(backward_case(DType::F32));
  const std::vector<double>& x = of.make(DType::F32, false).d_out.values;
  ASSERT_EQ(x.size(), 120u);
  double mean = 0, square = 0;
  for (const double v : x) mean += v / static_cast<double>(x.size());
  for (const double v : x) square += (v - mean) * (v - mean) / static_cast<double>(x.size() - 1);
  EXPECT_LT(std::fabs(mean), 6 * 0.0913);
  EXPECT_LT(std::fabs(square - 1), 6 * 0.130);
}

TEST(MakeBackwardData, TheLseGradientIsOptionalAndDrawnAfterTheOutputGradient) {
  const BackwardDataOf of(backward_case(DType::F32));
  const BackwardData without = of.make(DType::F32, false), with = of.make(DType::F32, true);
  EXPECT_FALSE(without.d_lse.has_value());
  EXPECT_TRUE(same_bits(without.d_out, with.d_out));
  EXPECT_TRUE(without.exact_inputs(of.reference).d_lse.empty());
}

TEST(MakeBackwardData, OutputAndLseAreTheReferencesRoundedWithTheEmptyRowsKept) {
  const BackwardDataOf of(backward_case(DType::F16));
  const BackwardData d = of.make(DType::F16, false);
  ASSERT_EQ(d.out.shape, of.reference.out.shape);
  ASSERT_EQ(d.lse.shape, (Shape4{1, 2, 2, 5}));
  std::int64_t changed = 0;
  for (size_t n = 0; n < d.out.values.size(); ++n) {
    EXPECT_EQ(d.out.values[n], round_to(DType::F16, of.reference.out.values[n])) << "O element " << n;
    changed += d.out.values[n] != of.reference.out.values[n];
  }
  EXPECT_GT(changed, 0) << "no O element was rounded: the check above would pass unrounded values";
  for (size_t n = 0; n < d.lse.values.size(); ++n)
    EXPECT_EQ(d.lse.values[n], round_to(DType::F32, of.reference.lse.values[n])) << "LSE element " << n;
  // Batch 1 has no key (key length 0): the reference's O = 0 and LSE = −inf (reference.h).
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 5; ++i) {
      EXPECT_EQ(d.lse(0, 1, h, i), -std::numeric_limits<double>::infinity());
      for (std::int64_t l = 0; l < 6; ++l) EXPECT_EQ(d.out(1, h, i, l), 0.0);
    }
}

TEST(MakeBackwardData, ExactInputsAreTheReferencesOutputsWithTheseGradients) {
  const BackwardDataOf of(backward_case(DType::BF16));
  const BackwardData d = of.make(DType::BF16, true);
  const BackwardInputs exact = d.exact_inputs(of.reference);
  EXPECT_EQ(exact.out.data, of.reference.out.values.data());
  EXPECT_EQ(exact.lse.data, of.reference.lse.values.data());
  EXPECT_EQ(exact.d_out.data, d.d_out.values.data());
  EXPECT_EQ(exact.d_lse.data, d.d_lse->values.data());
  EXPECT_NO_THROW(validate_backward_inputs(of.c.problem, make_case_data(of.c).inputs(of.c.problem), exact));
}

TEST(MakeBackwardData, AReferenceOfAnotherProblemIsRefusedNamingTheTensor) {
  const BackwardDataOf of(backward_case(DType::F32));
  AttentionCase longer = of.c;
  longer.problem.q_len = 6;
  try {
    (void)make_backward_data(longer, of.reference, DType::F32, false);
    FAIL() << "a reference of Lq = 5 was taken for Lq = 6";
  } catch (const ProblemError& e) {
    EXPECT_NE(std::string(e.what()).find("the reference's O is [2, 2, 5, 6]"), std::string::npos) << e.what();
  }
}

TEST(CheckCase, ACorrectBackendPassesThroughEveryProbe) {
  Backend backend = open_backend("cpu-naive");
  GridCase g;
  g.name = "Small";
  g.c.problem = with_fp32_parameters(with_causal(Problem::of_shape(1, 2, 1, 5, 7, 8, 8), Alignment::BottomRight));
  g.options.row_padding = 3;
  g.options.byte_offset = 64;
  const CaseCheck check = check_case(backend, g);
  EXPECT_FALSE(check.declined.has_value());
  EXPECT_TRUE(check.passed()) << check.report();
  EXPECT_EQ(check.report(), check.verdict.summary());
}

TEST(CheckCase, ADtypeTheBackendDoesNotTakeIsDeclinedNotFailed) {
  Backend backend = open_backend("cpu-naive");  // fp32 only
  GridCase g;
  g.c.problem = Problem::of_shape(1, 1, 1, 2, 2, 4, 4);
  const CaseCheck check = check_case(backend, g.in(DType::F16));
  ASSERT_TRUE(check.declined.has_value());
  EXPECT_EQ(*check.declined, "cpu-naive does not take f16 inputs");
  EXPECT_FALSE(check.passed());
}

TEST(CheckCase, AWrongBackendFailsWithTheComparatorsReason) {
  Backend mutant = open_backend("mutant-scale-one-over-d");
  GridCase g;
  g.c.problem = with_fp32_parameters(Problem::of_shape(1, 2, 2, 9, 17, 16, 16));
  const CaseCheck check = check_case(mutant, g);
  EXPECT_FALSE(check.passed());
  EXPECT_FALSE(check.verdict.passed);
  EXPECT_NE(check.report().find(check.verdict.failure), std::string::npos) << check.report();
}

TEST(InDtypes, NamesEveryCaseWithItsDtypeDtypeMajor) {
  GridCase a, b;
  a.name = "Mha", b.name = "Mqa";
  const std::vector<GridCase> grid = in_dtypes({a, b}, {DType::F32, DType::BF16});
  ASSERT_EQ(grid.size(), 4u);
  EXPECT_EQ(grid[0].name, "MhaF32");
  EXPECT_EQ(grid[1].name, "MqaF32");
  EXPECT_EQ(grid[2].name, "MhaBf16");
  EXPECT_EQ(grid[3].c.dtype, DType::BF16);
}

}  // namespace
}  // namespace attncheck

namespace attncheck {
namespace {

AttentionCase paged_case(KvStorage storage, std::int64_t page, std::vector<std::int64_t> lengths, bool share) {
  AttentionCase c;
  c.problem = Problem::of_shape(static_cast<std::int64_t>(lengths.size()), 4, 2, 3, 4 * page, 8, 8);
  c.problem.has_key_lengths = true;
  c.problem.kv_storage = storage;
  c.problem.page_size = page;
  c.key_lengths = std::move(lengths);
  c.shared_prefix = share;
  c.seed = 11;
  return c;
}

// make_case_data's arrangement (case.h): ⌈length / page⌉ pages per sequence, batch 0's full
// pages shared with prefix=1, a quarter more unused pages (at least one) that unused slots name,
// and K and V the gather of what the table reaches.
TEST(PagedCase, ThePoolHoldsTheUsedPagesAndSpareOnesAndKIsItsGather) {
  const AttentionCase c = paged_case(KvStorage::PagedTokenMajor, 4, {10, 0, 16}, true);
  const CaseData d = make_case_data(c);
  // Used pages: 3, 0, 4; batch 0 has 2 full pages and batch 1 none, so nothing is shared
  // (min over sequences of their full pages is 0): 7 owned, 1 + 7 / 4 = 2 spare.
  EXPECT_EQ(d.pages.k_pages.shape, (Shape4{9, 4, 2, 8}));
  const auto& t = d.pages.block_table;
  ASSERT_EQ(t.size(), 12u);
  std::vector<std::int32_t> used{t[0], t[1], t[2], t[8], t[9], t[10], t[11]};
  std::sort(used.begin(), used.end());
  EXPECT_EQ(std::adjacent_find(used.begin(), used.end()), used.end()) << "two used slots share a page";
  for (std::int32_t unused : {t[3], t[4], t[5], t[6], t[7]})
    EXPECT_FALSE(std::binary_search(used.begin(), used.end(), unused)) << "an unused slot names a page in use";
  const GatheredKv kv = gather_paged_kv(c.problem, d.pages.view(), d.key_lengths);
  for (std::int64_t j = 0; j < 10; ++j) EXPECT_EQ(kv.k(0, 1, j, 3), d.k(0, 1, j, 3));
  validate_inputs(c.problem, d.inputs(c.problem));  // the reference's own check of the gather

  // Another shuffle permutes the pool: the reachable keys keep their values.
  AttentionCase other = c;
  other.page_shuffle = 5;
  const CaseData e = make_case_data(other);
  EXPECT_NE(e.pages.block_table, d.pages.block_table);
  for (std::int64_t j = 0; j < 16; ++j) EXPECT_EQ(e.k(2, 0, j, 5), d.k(2, 0, j, 5));
  EXPECT_EQ(parse_case(other.describe()).page_shuffle, 5u);
}

TEST(PagedCase, APrefixOfFullPagesIsSharedWithBatchZero) {
  const AttentionCase c = paged_case(KvStorage::PagedHeadMajor, 4, {12, 9, 16}, true);
  const CaseData d = make_case_data(c);
  const auto& t = d.pages.block_table;  // full pages: 3, 2, 4 → the first 2 are batch 0's
  EXPECT_EQ(t[4], t[0]);
  EXPECT_EQ(t[5], t[1]);
  EXPECT_EQ(t[8], t[0]);
  EXPECT_NE(t[6], t[2]);
  for (std::int64_t j = 0; j < 8; ++j) EXPECT_EQ(d.k(1, 1, j, 2), d.k(0, 1, j, 2));
  EXPECT_TRUE(parse_case(c.describe()).shared_prefix);
}

// A kernel must not follow an unused slot (backend.h, ABI 2.4): with every unused entry −1, as
// vLLM pads its tables, cpu-flash still passes every probe, in both layouts, with padded rows.
TEST(PagedCase, UnusedSlotsNamingNoPageAreNeverFollowed) {
  Backend backend = open_backend("cpu-flash");
  for (const KvStorage storage : {KvStorage::PagedTokenMajor, KvStorage::PagedHeadMajor}) {
    AttentionCase c = paged_case(storage, 16, {20, 0, 64, 33}, false);
    c.poison_masked = true;
    CaseData d = make_case_data(c);
    for (std::int64_t b = 0; b < c.problem.batch; ++b)
      for (std::int64_t s = c.problem.pages_used(d.key_lengths[static_cast<size_t>(b)]); s < 4; ++s)
        d.pages.block_table[static_cast<size_t>(b * 4 + s)] = -1;
    RunOptions options;
    options.row_padding = 3;
    options.byte_offset = 64;
    const CaseCheck check = check_case(backend, c, d, options);
    EXPECT_TRUE(check.passed()) << kv_storage_name(storage) << ": " << check.report();
  }
  // A used slot naming no page is the caller's error, refused with the tensor named.
  AttentionCase c = paged_case(KvStorage::PagedTokenMajor, 16, {20}, false);
  CaseData d = make_case_data(c);
  d.pages.block_table[1] = 99;
  EXPECT_THROW(check_case(backend, c, d), ProblemError);
}

// A packed batch (problem.h, ABI 2.5): query counts come from their own stream, so Q, K and V
// are the padded case's; fixed counts replace the draw and round-trip through the case text.
TEST(VarlenCase, QueryCountsAreDrawnApartAndFixedOnesRoundTrip) {
  AttentionCase c;
  c.problem = Problem::of_shape(6, 2, 1, 9, 11, 4, 4);
  c.problem.has_key_lengths = true;
  c.problem.causal = true;
  c.problem.alignment = Alignment::BottomRight;
  c.seed = 41;
  AttentionCase padded = c;
  c.problem.varlen = true;
  const CaseData d = make_case_data(c), e = make_case_data(padded);
  ASSERT_EQ(d.query_lengths.size(), 6u);
  for (std::int64_t n : d.query_lengths) EXPECT_TRUE(n >= 0 && n <= 9) << n;
  EXPECT_EQ(d.q.values, e.q.values);
  EXPECT_EQ(d.k.values, e.k.values);
  EXPECT_EQ(d.key_lengths, e.key_lengths);
  EXPECT_TRUE(e.query_lengths.empty());
  validate_inputs(c.problem, d.inputs(c.problem));

  c.query_lengths = {0, 1, 9, 4, 2, 3};
  const AttentionCase back = parse_case(c.describe());
  EXPECT_EQ(back.query_lengths, c.query_lengths);
  EXPECT_TRUE(back.problem.varlen);
  EXPECT_EQ(make_case_data(back).query_lengths, c.query_lengths);
  c.query_lengths = {10, 0, 0, 0, 0, 0};
  EXPECT_THROW(make_case_data(c), ProblemError) << "10 queries past Lq = 9";
  padded.query_lengths = {1, 1, 1, 1, 1, 1};
  EXPECT_THROW(make_case_data(padded), ProblemError) << "query counts on a padded problem";
  AttentionCase blhd = back;
  blhd.sequence_major = true;
  EXPECT_THROW(make_case_data(blhd), ProblemError) << "a packed batch has one layout";
  AttentionCase poisoned = back;
  poisoned.poison_masked = true;
  EXPECT_THROW(make_case_data(poisoned), ProblemError) << "no key past a packed sequence is handed over";
}

// cpu-flash on packed batches through every probe of the harness: sequences of 0 and 1 tokens,
// both alignments, row padding and a byte offset on the packed tensors; and cpu-naive, which does
// not declare the option, declines them.
TEST(VarlenCase, CpuFlashPassesPackedBatchesThroughEveryProbe) {
  Backend flash = open_backend("cpu-flash");
  for (const Alignment alignment : {Alignment::TopLeft, Alignment::BottomRight}) {
    AttentionCase c;
    c.problem = Problem::of_shape(5, 4, 2, 70, 130, 16, 8);
    c.problem.has_key_lengths = true;
    c.problem.causal = true;
    c.problem.alignment = alignment;
    c.problem.sinks = true;
    c.problem.varlen = true;
    c.key_lengths = {130, 0, 1, 64, 77};
    c.query_lengths = {70, 3, 0, 1, 65};
    c.seed = 9;
    RunOptions options;
    options.row_padding = 3;
    options.byte_offset = 64;
    const CaseCheck check = check_case(flash, c, make_case_data(c), options);
    EXPECT_TRUE(check.passed()) << alignment_name(alignment) << ": " << check.report();
  }
  AttentionCase c;
  c.problem = Problem::of_shape(2, 1, 1, 3, 3, 2, 2);
  c.problem.has_key_lengths = true;
  c.problem.varlen = true;
  Backend naive = open_backend("cpu-naive");
  const auto reason = naive.unsupported_reason(c.problem, DType::F32);
  ASSERT_TRUE(reason.has_value());
  EXPECT_NE(reason->find("packed variable-length batches"), std::string::npos) << *reason;
}

}  // namespace
}  // namespace attncheck
