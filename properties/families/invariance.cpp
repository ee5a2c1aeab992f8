// Invariances of the softmax-weighted mean: it does not care in which order keys arrive (with
// their values and mask columns), queries are independent rows, softmax ignores a constant added
// to a row's scores, the output is linear in V, and a scale may move into Q.
#include <bit>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "common.h"

namespace attncheck::props {
namespace {

std::vector<std::int64_t> random_permutation(std::int64_t n, std::uint64_t seed) {
  std::vector<std::int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  PortableRandom rng(seed);
  for (std::int64_t i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.below(i + 1))]);
  return order;
}

// Key order is irrelevant without position-dependent masks: permuting K, V and the mask's key
// columns together leaves O unchanged (within τ + τ′: tiles and rescales change).
void key_permutation(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.causal = space.window = space.key_lengths = false;
  AttentionCase c = ctx.draw_case(space);
  if (c.problem.mask != MaskKind::None) c.problem.mask_k_len = c.problem.k_len;
  c.poison_masked = false;
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun original = run_and_bound(ctx, c);
  const auto order = random_permutation(c.problem.k_len, c.seed + 7);
  CaseData permuted = original.data;
  auto permute_keys = [&](const HostTensor& from, HostTensor& to) {
    for (std::int64_t a = 0; a < from.shape[0]; ++a)
      for (std::int64_t b = 0; b < from.shape[1]; ++b)
        for (std::int64_t k = 0; k < from.shape[2]; ++k)
          for (std::int64_t l = 0; l < from.shape[3]; ++l) to(a, b, k, l) = from(a, b, order[static_cast<size_t>(k)], l);
  };
  permute_keys(original.data.k, permuted.k);
  permute_keys(original.data.v, permuted.v);
  if (c.problem.mask != MaskKind::None) {
    const HostTensor& m = original.data.mask;
    for (std::int64_t a = 0; a < m.shape[0]; ++a)
      for (std::int64_t b = 0; b < m.shape[1]; ++b)
        for (std::int64_t i = 0; i < m.shape[2]; ++i)
          for (std::int64_t k = 0; k < m.shape[3]; ++k) permuted.mask(a, b, i, k) = m(a, b, i, order[static_cast<size_t>(k)]);
  }
  const JudgedRun shuffled = run_and_bound(ctx, c, std::move(permuted));
  ctx.expect(compare_pair(original.run.out, original.tau, shuffled.run.out, shuffled.tau), c,
             "permuting keys and values together changed the output");
}

// Query rows are independent: permuting Q's rows (and the mask's rows) permutes O's rows.
void query_permutation(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.causal = space.window = false;
  AttentionCase c = ctx.draw_case(space);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun original = run_and_bound(ctx, c);
  const auto order = random_permutation(c.problem.q_len, c.seed + 11);
  CaseData permuted = original.data;
  for (std::int64_t b = 0; b < c.problem.batch; ++b)
    for (std::int64_t h = 0; h < c.problem.q_heads; ++h)
      for (std::int64_t i = 0; i < c.problem.q_len; ++i)
        for (std::int64_t l = 0; l < c.problem.qk_dim; ++l)
          permuted.q(b, h, i, l) = original.data.q(b, h, order[static_cast<size_t>(i)], l);
  if (c.problem.mask != MaskKind::None && c.problem.mask_q_len == c.problem.q_len) {
    const HostTensor& m = original.data.mask;
    for (std::int64_t a = 0; a < m.shape[0]; ++a)
      for (std::int64_t b = 0; b < m.shape[1]; ++b)
        for (std::int64_t i = 0; i < m.shape[2]; ++i)
          for (std::int64_t k = 0; k < m.shape[3]; ++k) permuted.mask(a, b, i, k) = m(a, b, order[static_cast<size_t>(i)], k);
  }
  const JudgedRun shuffled = run_and_bound(ctx, c, std::move(permuted));
  auto unpermute = [&](const HostTensor& t) {  // row i of the permuted run belongs at row order[i]
    HostTensor u(t.shape);
    for (std::int64_t b = 0; b < t.shape[0]; ++b)
      for (std::int64_t h = 0; h < t.shape[1]; ++h)
        for (std::int64_t i = 0; i < t.shape[2]; ++i)
          for (std::int64_t j = 0; j < t.shape[3]; ++j) u(b, h, order[static_cast<size_t>(i)], j) = t(b, h, i, j);
    return u;
  };
  ctx.expect(compare_pair(original.run.out, original.tau, unpermute(shuffled.run.out), unpermute(shuffled.tau)), c,
             "permuting queries did not permute the outputs");
}

// softmax(s + c) = softmax(s): a per-row constant added through an additive bias leaves O
// unchanged; τ′ grows with |s| + |c|, as the kernel's logit error does.
void shift_invariance(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.mask = false;
  AttentionCase c = ctx.draw_case(space);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun plain = run_and_bound(ctx, c);

  AttentionCase shifted = c;
  Problem& p = shifted.problem;
  p.mask = MaskKind::Additive;
  p.mask_batch = p.batch;
  p.mask_heads = p.q_heads;
  p.mask_q_len = p.q_len;
  p.mask_k_len = p.k_len;
  ctx.require_supported(p);
  CaseData data = plain.data;
  data.mask = HostTensor({p.batch, p.q_heads, p.q_len, p.k_len});
  PortableRandom rng(c.seed + 13);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const double shift = static_cast<double>(rng.below(129) - 64) / 4.0;  // in [−16, 16], exact in every dtype
        for (std::int64_t k = 0; k < p.k_len; ++k) data.mask(b, h, i, k) = shift;
      }
  const JudgedRun moved = run_and_bound(ctx, shifted, std::move(data));
  ctx.expect(compare_pair(plain.run.out, plain.tau, moved.run.out, moved.tau), c,
             "adding a constant to every score of a row changed the output");
}

// O is linear in V: O(αV₁ + βV₂) = αO(V₁) + βO(V₂). Values on a grid of 2^-4 and α, β in
// {±1, 2, 1/2} keep αV₁ + βV₂ exact in every dtype, so the identity is exact in the inputs.
// A deterministic kernel also satisfies f(2V) = 2f(V) bitwise away from subnormals
// (numerics/README.md §7.4): doubling is exact in a binary format for every value whose
// magnitude, and twice it, lie in the normal range. V enters every rounding of the P·V path —
// its own rounding to value_rounding, each product p_k·V_kj and partial sum in the accumulator,
// the division and the output conversion — so an element is exempt wherever any of these can
// land below the normal range of the format it is rounded in: the output (|O_j| < ν_O), and the
// accumulator or value_rounding (some product of an attended key, p_k|V_kj| < 2ν, or |O_j| < 2ν).
// The factor 2 leaves room for the kernel's own weights, which differ from the reference's by
// the logit error (a relative e^{±Δ}, far below a factor 2 for any kernel τ can pass), and the
// products of unnormalised weights e^{s_k − m} = Z·p_k ≥ p_k are larger, never smaller. A
// declared flush to zero changes only results in the same ranges.
void linearity_in_v(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  c.values = ValueKind::Grid;
  c.poison_masked = false;
  const double alpha = *rc::gen::element(1.0, 2.0, 0.5, -1.0), beta = *rc::gen::element(1.0, -1.0, 0.5, 2.0);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const CaseData first = ctx.case_data(c);
  AttentionCase other = c;
  other.seed = c.seed + 17;
  CaseData second = first;
  second.v = ctx.case_data(other).v;
  CaseData combined = first;
  for (size_t n = 0; n < combined.v.values.size(); ++n) combined.v.values[n] = alpha * first.v.values[n] + beta * second.v.values[n];

  const JudgedRun r1 = run_and_bound(ctx, c, first);
  const JudgedRun r2 = run_and_bound(ctx, c, second);
  const JudgedRun r3 = run_and_bound(ctx, c, combined);
  HostTensor expected(r1.run.out.shape), tau(r1.run.out.shape);
  for (size_t n = 0; n < expected.values.size(); ++n) {
    expected.values[n] = alpha * r1.run.out.values[n] + beta * r2.run.out.values[n];
    tau.values[n] = std::fabs(alpha) * r1.tau.values[n] + std::fabs(beta) * r2.tau.values[n];
  }
  ctx.expect(compare_pair(r3.run.out, r3.tau, expected, tau), c,
             fmt::format("O({}·V₁ + {}·V₂) differs from {}·O(V₁) + {}·O(V₂)", alpha, beta, alpha, beta));

  if (!ctx.profile(c.problem).deterministic) return;
  CaseData doubled = first;
  for (double& x : doubled.v.values) x *= 2;
  const BackendRun twice = ctx.run(c, doubled);
  const NumericsProfile& profile = ctx.profile(c.problem);
  const double output_normal = smallest_normal(profile.output);
  double inner_normal = smallest_normal(profile.accumulator);
  if (profile.value_rounding) inner_normal = std::max(inner_normal, smallest_normal(*profile.value_rounding));
  ReferenceOptions weights_only;
  weights_only.probabilities = true;
  const AttentionResult weights = reference_attention(c.problem, first.inputs(c.problem), weights_only);
  const Problem& p = c.problem;
  // Whether some attended key's product with V lands below 2ν in the accumulator (see above).
  auto inner_subnormal = [&](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
    for (std::int64_t k = 0; k < p.k_len; ++k) {
      const double weight = (*weights.probabilities)(b, h, i, k), v = first.v(b, p.kv_head_of(h), k, j);
      if (weight > 0 && v != 0 && weight * std::fabs(v) < 2 * inner_normal) return true;
    }
    return false;
  };
  for (size_t n = 0; n < twice.out.values.size(); ++n) {
    const double once = r1.run.out.values[n];
    if (!std::isfinite(once) || std::fabs(once) < std::max(output_normal, 2 * inner_normal)) continue;
    const auto flat = static_cast<std::int64_t>(n);
    const std::int64_t j = flat % p.v_dim, i = flat / p.v_dim % p.q_len, h = flat / (p.v_dim * p.q_len) % p.q_heads,
                       b = flat / (p.v_dim * p.q_len * p.q_heads);
    if (inner_subnormal(b, h, i, j)) continue;
    if (std::bit_cast<std::uint64_t>(2 * once) != std::bit_cast<std::uint64_t>(twice.out.values[n]))
      ctx.fail(c, fmt::format("f(2V) = {} but 2·f(V) = {} at flat index {} (a deterministic kernel scales exactly by 2)",
                              twice.out.values[n], 2 * once, n));
  }
}

// attention(Q, K, V; s) = attention(sQ, K, V; 1): with s a power of two, sQ is exact.
void scale_equivalence(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  const double s = *rc::gen::element(0.5, 0.25, 2.0, 0.125);
  c.problem.scale = s;
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun scaled = run_and_bound(ctx, c);
  AttentionCase folded = c;
  folded.problem.scale = 1.0;
  ctx.require_supported(folded.problem);
  CaseData data = scaled.data;
  for (double& x : data.q.values) x *= s;
  const JudgedRun moved = run_and_bound(ctx, folded, std::move(data));
  ctx.expect(compare_pair(scaled.run.out, scaled.tau, moved.run.out, moved.tau), c,
             fmt::format("scale {} applied by the kernel differs from the same scale folded into Q", s));
}

}  // namespace

std::vector<PropertyDef> invariance_properties() {
  return {
      {"key-permutation", "invariance", "without positional masks the order of keys is irrelevant", false, key_permutation},
      {"query-permutation", "invariance", "query rows are independent: permuting them permutes the outputs", false,
       query_permutation},
      {"shift-invariance", "invariance", "softmax ignores a constant added to every score of a row", false, shift_invariance},
      {"linearity-in-v", "invariance", "the output is a fixed linear map of V", false, linearity_in_v},
      {"scale-equivalence", "invariance", "the softmax scale may equally be folded into Q", false, scale_equivalence},
  };
}

}  // namespace attncheck::props
