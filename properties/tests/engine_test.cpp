// The engine's own machinery: case descriptions round-trip, data generation is deterministic,
// and the memory probes find what a misbehaving kernel does.
#include <gtest/gtest.h>

#include "attncheck/case.h"

namespace attncheck {
namespace {

TEST(Case, DescriptionRoundTrips) {
  AttentionCase c;
  c.problem.batch = 2;
  c.problem.q_heads = 6;
  c.problem.kv_heads = 2;
  c.problem.causal = true;
  c.problem.alignment = Alignment::BottomRight;
  c.dtype = DType::BF16;
  c.values = ValueKind::Ties;
  c.sequence_major = true;
  c.seed = 99;
  const AttentionCase back = parse_case(c.describe());
  EXPECT_EQ(back.problem, c.problem);
  EXPECT_EQ(back.describe(), c.describe());
}

TEST(Case, DataIsDeterministicAndRounded) {
  AttentionCase c;
  c.problem.q_len = c.problem.k_len = 5;
  c.problem.qk_dim = c.problem.v_dim = 3;
  c.dtype = DType::F16;
  c.seed = 7;
  const CaseData a = make_case_data(c), b = make_case_data(c);
  EXPECT_EQ(a.q.values, b.q.values);
  for (double x : a.q.values) EXPECT_EQ(round_to(DType::F16, x), x);
  c.seed = 8;
  EXPECT_NE(make_case_data(c).q.values, a.q.values);
}

}  // namespace
}  // namespace attncheck
