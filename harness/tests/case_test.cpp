// Fixed key lengths, mask departures and the end-to-end check of a grid case.
#include <gtest/gtest.h>

#include <cmath>
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
