// KV-cache decoding against full causal attention over the whole sequence (ONNX past_key
// semantics: the diagonal offset is the past length P). Expected values: the full computation
// with reference_attention, rows compared with agreement.h's bound (the step and the full run
// block their GEMMs differently, so they may differ in rounding), the present K/V compared exactly
// with the sequence prefix.
#include <gtest/gtest.h>

#include "agreement.h"
#include "attncheck/kv_cache.h"

namespace attncheck::testing {
namespace {

// Slice [from, from + count) of axis 2 as a compact tensor.
HostTensor rows_of(const HostTensor& t, std::int64_t from, std::int64_t count) {
  HostTensor s({t.shape[0], t.shape[1], count, t.shape[3]});
  for (std::int64_t a = 0; a < t.shape[0]; ++a)
    for (std::int64_t b = 0; b < t.shape[1]; ++b)
      for (std::int64_t i = 0; i < count; ++i)
        for (std::int64_t d = 0; d < t.shape[3]; ++d) s(a, b, i, d) = t(a, b, from + i, d);
  return s;
}

void expect_decoding_equals_full(Problem model, const std::vector<std::int64_t>& steps) {
  std::int64_t total = 0;
  for (std::int64_t n : steps) total += n;
  Problem full = model;
  full.q_len = full.k_len = total;
  full.causal = true;
  full.alignment = Alignment::TopLeft;
  std::mt19937_64 rng(31);
  const HostTensor q = random_tensor({full.batch, full.q_heads, total, full.qk_dim}, rng);
  const HostTensor k = random_tensor({full.batch, full.kv_heads, total, full.qk_dim}, rng);
  const HostTensor v = random_tensor({full.batch, full.kv_heads, total, full.v_dim}, rng);
  const AttentionInputs all{q.view(), k.view(), v.view(), {}, {}};
  const AttentionResult expected = reference_attention(full, all);
  const PlainResult plain = plain_attention(full, all);  // for the row scales A_j

  HostTensor past_k, past_v;  // the cache, grown by each step's present output
  std::int64_t past = 0;
  for (std::int64_t n : steps) {
    SCOPED_TRACE(::testing::Message() << "step at P = " << past << " with " << n << " new tokens");
    const Problem step = decode_step_problem(model, past, n);
    const HostTensor q_new = rows_of(q, past, n), k_new = rows_of(k, past, n), v_new = rows_of(v, past, n);
    DecodeInputs in{q_new.view(), {}, {}, k_new.view(), v_new.view(), {}, {}};
    if (past > 0) in.past_k = past_k.view(), in.past_v = past_v.view();
    const DecodeResult r = reference_decode_step(step, in);

    EXPECT_EQ(r.present_k.values, rows_of(k, 0, past + n).values);
    EXPECT_EQ(r.present_v.values, rows_of(v, 0, past + n).values);
    for (std::int64_t b = 0; b < full.batch; ++b)
      for (std::int64_t h = 0; h < full.q_heads; ++h)
        for (std::int64_t i = 0; i < n; ++i) {
          const std::int64_t row = past + i;
          EXPECT_NEAR(r.attention.lse(0, b, h, i), expected.lse(0, b, h, row),
                      kAgreement * (1 + plain.max_dot_abs(0, b, h, row) + std::fabs(expected.lse(0, b, h, row))));
          for (std::int64_t j = 0; j < full.v_dim; ++j)
            EXPECT_NEAR(r.attention.out(b, h, i, j), expected.out(b, h, row, j),
                        kAgreement * plain.row_scale(b, h, row, j))
                << "b=" << b << " h=" << h << " row " << row << " j=" << j;
        }
    past_k = r.present_k;
    past_v = r.present_v;
    past += n;
  }
}

TEST(KvCache, DecodingEqualsFullCausalAttention) {
  Problem model;
  model.batch = 2;
  model.q_heads = 4;
  model.kv_heads = 2;  // GQA: the cache holds kv heads only
  model.qk_dim = 5;
  model.v_dim = 3;
  expect_decoding_equals_full(model, {3, 1, 1, 4, 1, 2, 1});  // a prompt, single tokens, chunks
}

TEST(KvCache, DecodingOneTokenAtATimeFromAnEmptyCache) {
  Problem model;
  model.q_heads = model.kv_heads = 1;
  model.qk_dim = model.v_dim = 4;
  model.softcap = 5.0;
  expect_decoding_equals_full(model, std::vector<std::int64_t>(9, 1));
}

TEST(KvCache, SlidingWindowIsMeasuredFromTheSameDiagonal) {
  Problem model;
  model.q_heads = 2;
  model.kv_heads = 1;
  model.qk_dim = model.v_dim = 3;
  model.window_left = 3;
  expect_decoding_equals_full(model, {5, 1, 3, 1});
}

TEST(KvCache, StepProblemFollowsOnnxPastKeySemantics) {
  // ONNX: with a cache the causal offset is past_len, not T − Sq (past 12, 6 new keys, 4 queries
  // gives offset 12, not 14) — here with queries = new tokens, offset P and k_len P + new.
  Problem model;
  model.q_heads = 8;
  model.kv_heads = 2;
  const Problem step = decode_step_problem(model, 12, 4);
  EXPECT_EQ(step.alignment, Alignment::Offset);
  EXPECT_EQ(step.diagonal_offset, 12);
  EXPECT_EQ(step.q_len, 4);
  EXPECT_EQ(step.k_len, 16);
  EXPECT_TRUE(step.causal);
}

}  // namespace
}  // namespace attncheck::testing
