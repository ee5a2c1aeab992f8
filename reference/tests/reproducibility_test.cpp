// The reference's bits do not depend on how it is run (reference/README.md, "Reproducibility"):
// every instruction set this CPU offers, any thread count and any row block give byte-identical
// O, LSE, P, score stages and row statistics, for random problems over every Problem option, and
// for the layer. The expected value of each run is the baseline build's single-threaded run:
// the claim under test is equality, so no tolerance enters.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#include <cstring>
#include <fmt/format.h>

#include "attncheck/layer.h"
#include "kernels/fixed_order.h"
#include "random_case.h"

namespace attncheck::testing {
namespace {

// "" when a and b hold the same bits, else where they first differ.
std::string first_difference(std::string_view name, const HostTensor& a, const HostTensor& b) {
  if (a.shape != b.shape) return fmt::format("{}: shape {} vs {}", name, shape_string(a.shape), shape_string(b.shape));
  for (size_t e = 0; e < a.values.size(); ++e)
    if (std::bit_cast<std::uint64_t>(a.values[e]) != std::bit_cast<std::uint64_t>(b.values[e]))
      return fmt::format("{}: element {} is {:a} vs {:a}", name, e, a.values[e], b.values[e]);
  return {};
}

std::string first_difference(const AttentionResult& a, const AttentionResult& b) {
  std::string d = first_difference("O", a.out, b.out);
  if (d.empty()) d = first_difference("LSE", a.lse, b.lse);
  if (d.empty() && a.probabilities) d = first_difference("P", *a.probabilities, *b.probabilities);
  if (d.empty() && a.scores) {
    d = first_difference("raw scores", a.scores->raw, b.scores->raw);
    if (d.empty()) d = first_difference("capped scores", a.scores->capped, b.scores->capped);
    if (d.empty()) d = first_difference("biased scores", a.scores->biased, b.scores->biased);
  }
  if (d.empty() && a.stats) {
    const RowStatistics &x = *a.stats, &y = *b.stats;
    const std::pair<const char*, std::pair<const HostTensor*, const HostTensor*>> fields[] = {
        {"n", {&x.allowed_keys, &y.allowed_keys}},       {"M", {&x.max_abs_score, &y.max_abs_score}},
        {"m", {&x.max_score, &y.max_score}},             {"max a", {&x.max_dot_abs, &y.max_dot_abs}},
        {"A", {&x.row_scale, &y.row_scale}},             {"W", {&x.spread, &y.spread}},
        {"C", {&x.centered, &y.centered}},               {"Ca", {&x.centered_dot, &y.centered_dot}},
        {"Cs", {&x.centered_score, &y.centered_score}}, {"T", {&x.fp16_tail, &y.fp16_tail}},
        {"T8", {&x.e4m3_tail, &y.e4m3_tail}}};
    for (const auto& [field, tensors] : fields)
      if (d.empty()) d = first_difference(field, *tensors.first, *tensors.second);
  }
  return d;
}

struct RunConfig {
  ReferenceIsa isa;
  int threads;
  std::int64_t row_block;
};

std::vector<RunConfig> run_configs() {
  std::vector<RunConfig> configs;
  for (const ReferenceIsa isa : supported_reference_isas())
    for (const auto& [threads, row_block] : {std::pair{1, std::int64_t{128}}, {3, 1}, {2, 5}})
      configs.push_back({isa, threads, row_block});
  return configs;
}

TEST(Reproducibility, EveryIsaThreadCountAndRowBlockGivesTheSameBits) {
  std::mt19937_64 rng(20261201);
  const std::vector<RunConfig> configs = run_configs();
  for (int trial = 0; trial < 150; ++trial) {
    RandomCase c = make_random_case(rng);
    ReferenceOptions options = c.options;
    options.row_statistics = options.probabilities = options.score_stages = true;
    options.isa = ReferenceIsa::Baseline;
    options.threads = 1;
    options.row_block = 128;
    const AttentionResult expected = reference_attention(c.problem, c.inputs(), options);
    for (const RunConfig& config : configs) {
      options.isa = config.isa;
      options.threads = config.threads;
      options.row_block = config.row_block;
      const AttentionResult got = reference_attention(c.problem, c.inputs(), options);
      const std::string difference = first_difference(got, expected);
      ASSERT_EQ(difference, "") << c.problem.describe() << " (" << c.layout << ") with isa " << to_string(config.isa)
                                << ", " << config.threads << " threads, row block " << config.row_block;
    }
  }
}

// Score stages widen every row block to all keys; O and LSE must not notice (the extra keys weigh
// +0, kernels/fixed_order.h).
TEST(Reproducibility, AskingForScoreStagesChangesNoOutputBit) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 100; ++trial) {
    RandomCase c = make_random_case(rng);
    ReferenceOptions plain = c.options;
    plain.probabilities = plain.score_stages = false;
    ReferenceOptions staged = plain;
    staged.score_stages = true;
    const AttentionResult a = reference_attention(c.problem, c.inputs(), plain);
    const AttentionResult b = reference_attention(c.problem, c.inputs(), staged);
    ASSERT_EQ(first_difference("O", a.out, b.out), "") << c.problem.describe();
    ASSERT_EQ(first_difference("LSE", a.lse, b.lse), "") << c.problem.describe();
  }
}

TEST(Reproducibility, LayerIsTheSameOnEveryIsa) {
  std::mt19937_64 rng(11);
  LayerProblem layer;
  layer.attention = parse_problem("B=2 Hq=4 Hkv=2 Lq=5 Lk=7 Dk=6 Dv=3 causal=1 align=bottom-right");
  layer.model_dim = 9;
  layer.self_attention = false;
  layer.has_qkv_bias = layer.has_out_bias = true;
  const Problem& p = layer.attention;
  const HostTensor x = random_tensor({1, p.batch, p.q_len, 9}, rng), x_kv = random_tensor({1, p.batch, p.k_len, 9}, rng);
  const HostTensor w_q = random_tensor({1, p.q_heads, 9, p.qk_dim}, rng), w_k = random_tensor({1, p.kv_heads, 9, p.qk_dim}, rng);
  const HostTensor w_v = random_tensor({1, p.kv_heads, 9, p.v_dim}, rng), w_o = random_tensor({1, 1, p.q_heads * p.v_dim, 9}, rng);
  const HostTensor b_q = random_tensor({1, 1, p.q_heads, p.qk_dim}, rng), b_k = random_tensor({1, 1, p.kv_heads, p.qk_dim}, rng);
  const HostTensor b_v = random_tensor({1, 1, p.kv_heads, p.v_dim}, rng), b_o = random_tensor({1, 1, 1, 9}, rng);
  const LayerInputs inputs{x.view(),   x_kv.view(), w_q.view(), w_k.view(), w_v.view(), b_q.view(),
                           b_k.view(), b_v.view(),  w_o.view(), b_o.view(), {},         {}};
  ReferenceOptions options;
  options.isa = ReferenceIsa::Baseline;
  const LayerResult expected = reference_layer(layer, inputs, options);
  for (const ReferenceIsa isa : supported_reference_isas()) {
    options.isa = isa;
    const LayerResult got = reference_layer(layer, inputs, options);
    EXPECT_EQ(first_difference("layer out", got.out, expected.out), "") << to_string(isa);
    EXPECT_EQ(first_difference("projected K", got.k, expected.k), "") << to_string(isa);
    EXPECT_EQ(first_difference("attention O", got.attention.out, expected.attention.out), "") << to_string(isa);
  }
}

// The backward pass sums dK and dV over row blocks by continuing the chains of one block in the
// next (kernels/fixed_order.h, product_continued): a product split anywhere along its depth,
// across the kernels' depth blocks of 256 too, must give the bits of the unsplit product, on
// every ISA, at sizes that leave partial register tiles on every side.
TEST(Reproducibility, AContinuedProductIsTheUnsplitProduct) {
  std::mt19937_64 rng(3);
  const std::int64_t m = 13, n = 11, k = 600;
  const HostTensor a = random_tensor({1, 1, m, k}, rng), b = random_tensor({1, 1, k, n}, rng);
  const detail::FixedOrderKernels& baseline = detail::fixed_order_kernels(ReferenceIsa::Baseline);
  HostTensor whole({1, 1, m, n});
  baseline.product(m, n, k, a.values.data(), k, b.values.data(), n, whole.values.data(), n);
  for (const ReferenceIsa isa : supported_reference_isas()) {
    const detail::FixedOrderKernels& kernels = detail::fixed_order_kernels(isa);
    for (const std::int64_t split : {std::int64_t{0}, std::int64_t{1}, std::int64_t{7}, std::int64_t{256},
                                     std::int64_t{300}, std::int64_t{599}}) {
      HostTensor pieces({1, 1, m, n}, 42.0);  // the first piece overwrites: it starts every chain at +0
      kernels.product(m, n, split, a.values.data(), k, b.values.data(), n, pieces.values.data(), n);
      kernels.product_continued(m, n, k - split, a.values.data() + split, k, b.values.data() + split * n, n,
                                pieces.values.data(), n);
      EXPECT_EQ(first_difference("C", pieces, whole), "") << to_string(isa) << ", split at depth " << split;
    }
  }
}

#if defined(__SSE__)
// A host running with flush-to-zero and denormals-are-zero (MXCSR bits 15 and 6, as some
// inference engines set them) gets the same bits: with one key, O = V exactly, here a subnormal.
TEST(Reproducibility, FlushToZeroInTheCallingThreadChangesNothing) {
  const Problem p = parse_problem("B=1 Hq=1 Hkv=1 Lq=1 Lk=1 Dk=1 Dv=2");
  HostTensor q({1, 1, 1, 1}), k({1, 1, 1, 1}), v({1, 1, 1, 2});
  q.values = {1.0};
  k.values = {1.0};
  v.values = {1e-310, -3e-315};  // subnormal doubles
  ReferenceOptions options;
  options.threads = 1;
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040);
  const AttentionResult result = reference_attention(p, {q.view(), k.view(), v.view(), {}, {}}, options);
  const unsigned during = _mm_getcsr();
  _mm_setcsr(saved);
  EXPECT_EQ(during, saved | 0x8040) << "the caller's environment is restored";
  EXPECT_EQ(result.out.values[0], 1e-310);
  EXPECT_EQ(result.out.values[1], -3e-315);
}
#endif

TEST(Reproducibility, AnIsaThisCpuLacksIsRefusedByName) {
  const std::vector<ReferenceIsa> supported = supported_reference_isas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front(), ReferenceIsa::Baseline);
  for (const ReferenceIsa isa : {ReferenceIsa::Avx2, ReferenceIsa::Avx512}) {
    if (std::find(supported.begin(), supported.end(), isa) != supported.end()) continue;
    const Problem p = parse_problem("B=1 Hq=1 Hkv=1 Lq=1 Lk=1 Dk=1 Dv=1");
    const HostTensor t({1, 1, 1, 1});
    ReferenceOptions options;
    options.isa = isa;
    try {
      reference_attention(p, {t.view(), t.view(), t.view(), {}, {}}, options);
      ADD_FAILURE() << to_string(isa) << " ran on a CPU said to lack it";
    } catch (const ProblemError& e) {
      EXPECT_NE(std::string(e.what()).find("this CPU has no"), std::string::npos) << e.what();
    }
  }
  for (const ReferenceIsa isa : {ReferenceIsa::Automatic, ReferenceIsa::Baseline, ReferenceIsa::Avx2, ReferenceIsa::Avx512})
    EXPECT_EQ(parse_reference_isa(to_string(isa)), isa);
  EXPECT_EQ(parse_reference_isa("sse9"), std::nullopt);
}

}  // namespace
}  // namespace attncheck::testing
