// Independence: attention mixes information along keys only. Heads do not see each other's
// queries, kv groups do not see each other's keys, batch elements do not see each other at all,
// and a GQA kernel is exactly MHA over repeated K/V under the mapping h → h / (Hq / Hkv).
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {

// Perturbing query head h0 (or kv group g0) may change only head h0 (or the heads of group g0).
// The untouched heads run the same arithmetic on the same bits, so a deterministic kernel must
// reproduce them bitwise; otherwise they must agree within τ + τ′.
void head_independence(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  if (p.q_heads == 1) {  // one head has nothing to be independent of
    p.q_heads = p.kv_heads = 2;
    if (p.mask_heads != 1) p.mask_heads = 2;
  }
  const bool perturb_kv = p.kv_heads > 1 && *rc::gen::element(false, true);
  const std::int64_t target = *rc::gen::inRange<std::int64_t>(0, perturb_kv ? p.kv_heads : p.q_heads);
  ctx.classify(c);
  ctx.require_supported(p);
  const CaseData data = ctx.case_data(c);
  CaseData changed = data;
  PortableRandom rng(c.seed + 1);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    if (perturb_kv) {
      for (std::int64_t k = 0; k < p.k_len; ++k) {
        for (std::int64_t l = 0; l < p.qk_dim; ++l) changed.k(b, target, k, l) = round_to(c.dtype, rng.normal());
        for (std::int64_t l = 0; l < p.v_dim; ++l) changed.v(b, target, k, l) = round_to(c.dtype, rng.normal());
      }
    } else {
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t l = 0; l < p.qk_dim; ++l) changed.q(b, target, i, l) = round_to(c.dtype, rng.normal());
    }
  }
  const JudgedRun before = run_and_bound(ctx, c, data);
  const JudgedRun after = run_and_bound(ctx, c, changed);
  auto untouched = [&](std::int64_t h) { return perturb_kv ? p.kv_head_of(h) != target : h != target; };
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      if (!untouched(h)) continue;
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          const double x = before.run.out(b, h, i, j), y = after.run.out(b, h, i, j);
          const bool same = std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y);
          const double bound = before.tau(b, h, i, j) + after.tau(b, h, i, j);
          const bool ok = ctx.profile(c.problem).deterministic ? same : (same || std::fabs(x - y) <= bound);
          if (!ok)
            ctx.fail(c, fmt::format("changing {} {} changed head {} at [{}, {}, {}, {}]: {} → {}{}",
                                    perturb_kv ? "kv group" : "query head", target, h, b, h, i, j, x, y,
                                    ctx.profile(c.problem).deterministic ? " (the backend declares determinism: must be bitwise)"
                                                                : fmt::format(" (τ + τ′ = {:.3g})", bound)));
        }
    }
}

// Batch element b of a batched call equals the same problem run alone with B = 1.
void batch_independence(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  p.batch = std::max<std::int64_t>(p.batch, 2);
  if (p.mask_batch != 1) p.mask_batch = p.batch;
  ctx.classify(c);
  ctx.require_supported(p);
  const JudgedRun whole = run_and_bound(ctx, c);
  const std::int64_t b0 = *rc::gen::inRange<std::int64_t>(0, p.batch);

  AttentionCase single = c;
  single.problem.batch = 1;
  if (single.problem.mask_batch != 1) single.problem.mask_batch = 1;
  ctx.require_supported(single.problem);
  CaseData part;
  auto slice = [b0](const HostTensor& t) {
    HostTensor s({1, t.shape[1], t.shape[2], t.shape[3]});
    const std::int64_t from = t.shape[0] == 1 ? 0 : b0;
    for (std::int64_t h = 0; h < t.shape[1]; ++h)
      for (std::int64_t i = 0; i < t.shape[2]; ++i)
        for (std::int64_t j = 0; j < t.shape[3]; ++j) s(0, h, i, j) = t(from, h, i, j);
    return s;
  };
  part.q = slice(whole.data.q);
  part.k = slice(whole.data.k);
  part.v = slice(whole.data.v);
  if (p.mask != MaskKind::None) part.mask = slice(whole.data.mask);
  if (p.has_key_lengths) part.key_lengths = {whole.data.key_lengths[static_cast<size_t>(b0)]};
  const JudgedRun alone = run_and_bound(ctx, single, std::move(part));
  ctx.expect(compare_pair(slice(whole.run.out), slice(whole.tau), alone.run.out, alone.tau), c,
             fmt::format("batch element {} differs from the same problem run alone", b0));
}

// GQA(q, k, v) = MHA(q, repeat(k), repeat(v)) with query head h reading kv head h / (Hq / Hkv)
// (ONNX's repeat-interleave order). A mapping h % Hkv agrees only when Hkv or the ratio is 1,
// which is why the generator draws ratios 2, 3 and 12 with Hkv ≥ 2.
void gqa_equivalence(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  ensure_grouped(p);
  ctx.classify(c);
  ctx.require_supported(p);
  const JudgedRun grouped = run_and_bound(ctx, c);

  AttentionCase mha = c;
  mha.problem.kv_heads = p.q_heads;
  ctx.require_supported(mha.problem);
  CaseData repeated = grouped.data;
  repeated.k = repeat_kv_heads(p, grouped.data.k);
  repeated.v = repeat_kv_heads(p, grouped.data.v);
  const JudgedRun expanded = run_and_bound(ctx, mha, std::move(repeated));
  ctx.expect(compare_pair(grouped.run.out, grouped.tau, expanded.run.out, expanded.tau), c,
             fmt::format("GQA (Hq={}, Hkv={}) differs from MHA over repeated K/V", p.q_heads, p.kv_heads));
}

}  // namespace

std::vector<PropertyDef> independence_properties() {
  return {
      {"head-independence", "independence",
       "a query head sees only its own queries and its kv group's keys: perturbing one changes no other head", false,
       head_independence},
      {"batch-independence", "independence", "batch elements never interact: a batch of N equals N batches of one", false,
       batch_independence},
      {"gqa-equivalence", "independence",
       "grouped-query attention is multi-head attention over K/V repeated as h / (Hq/Hkv)", false, gqa_equivalence},
  };
}

}  // namespace attncheck::props
