// Causality and caches: under a causal mask a query never sees the future, so changing later
// tokens cannot change earlier outputs; keys no query may see (padding beyond the key length or
// the mask) contribute nothing whatever they hold; and decoding one token against a cache is the
// last row of the full causal computation.
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {

std::int64_t offset_of(const Problem& p) {
  switch (p.alignment) {
    case Alignment::TopLeft: return 0;
    case Alignment::BottomRight: return p.k_len - p.q_len;
    case Alignment::Offset: return p.diagonal_offset;
    case Alignment::KeyLengths: break;
  }
  return 0;
}

// Rows 0..t see keys ≤ t + offset only, so rewriting queries after t and keys after t + offset
// must leave those rows as they were: bitwise for a deterministic kernel (the same arithmetic
// on the same bits; masked keys contribute exact zeros), else within τ + τ′. The two runs are
// different problems, so where the reference is exactly zero (an empty row) +0 and −0 are the
// same value (numerics/README.md §7.5): a zero's sign may follow data the row never sees.
void causal_prefix(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.key_lengths = false;
  AttentionCase c = ctx.draw_case(space);
  Problem& p = c.problem;
  p.causal = true;
  if (p.alignment == Alignment::KeyLengths) p.alignment = Alignment::TopLeft;
  ctx.classify(c);
  ctx.require_supported(p);
  const std::int64_t t = *rc::gen::inRange<std::int64_t>(0, p.q_len);
  const std::int64_t last_seen = t + offset_of(p);
  const JudgedRun before = run_and_bound(ctx, c);
  CaseData changed = before.data;
  PortableRandom rng(c.seed + 19);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = t + 1; i < p.q_len; ++i)
        for (std::int64_t l = 0; l < p.qk_dim; ++l) changed.q(b, h, i, l) = round_to(c.dtype, rng.normal());
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t k = std::max<std::int64_t>(0, last_seen + 1); k < p.k_len; ++k) {
        for (std::int64_t l = 0; l < p.qk_dim; ++l) changed.k(b, g, k, l) = round_to(c.dtype, 4 * rng.normal());
        for (std::int64_t l = 0; l < p.v_dim; ++l) changed.v(b, g, k, l) = round_to(c.dtype, 4 * rng.normal());
      }
  }
  const JudgedRun after = run_and_bound(ctx, c, std::move(changed));
  if (ctx.profile(c.problem).deterministic) {
    auto prefix = [&](const HostTensor& o) {
      HostTensor rows({p.batch, p.q_heads, t + 1, p.v_dim});
      for (std::int64_t b = 0; b < p.batch; ++b)
        for (std::int64_t h = 0; h < p.q_heads; ++h)
          for (std::int64_t i = 0; i <= t; ++i)
            for (std::int64_t j = 0; j < p.v_dim; ++j) rows(b, h, i, j) = o(b, h, i, j);
      return rows;
    };
    const HostTensor reference = prefix(before.reference.out);
    ctx.expect(compare_exact(prefix(before.run.out), prefix(after.run.out), ctx.profile(c.problem).output, ExactMode::Bitwise,
                             &reference),
               c, fmt::format("changing tokens after query {} (keys after {}) changed an earlier row", t, last_seen));
    return;
  }
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i <= t; ++i)
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          const double x = before.run.out(b, h, i, j), y = after.run.out(b, h, i, j);
          const bool same = std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y) ||
                            (x == 0 && y == 0 && before.reference.out(b, h, i, j) == 0);
          const double bound = before.tau(b, h, i, j) + after.tau(b, h, i, j);
          if (!(same || std::fabs(x - y) <= bound))
            ctx.fail(c, fmt::format("changing tokens after query {} (keys after {}) changed O[{}, {}, {}, {}]: {} → {}", t,
                                    last_seen, b, h, i, j, x, y));
        }
}

// Keys beyond every query's reach — past key_lengths[b], or past a short mask — must not matter
// even when they hold NaN and the dtype's largest values (a kernel that weights them by 0 gets
// 0·NaN = NaN). Appending such keys leaves O unchanged.
void padding_invariance(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  p.has_key_lengths = true;
  if (p.alignment == Alignment::BottomRight) p.alignment = Alignment::TopLeft;  // its diagonal moves with Lk
  c.poison_masked = true;
  ctx.classify(c);
  ctx.require_supported(p);
  const JudgedRun original = run_and_bound(ctx, c);

  AttentionCase padded = c;
  const std::int64_t extra = *rc::gen::inRange<std::int64_t>(1, 40);
  padded.problem.k_len = p.k_len + extra;
  ctx.require_supported(padded.problem);
  CaseData data = original.data;
  const std::array<double, 3> poison = ctx.poison_values(padded.problem);  // the padded keys' path decides
  auto extend = [&](const HostTensor& t) {
    HostTensor e({t.shape[0], t.shape[1], t.shape[2] + extra, t.shape[3]});
    for (std::int64_t a = 0; a < e.shape[0]; ++a)
      for (std::int64_t b = 0; b < e.shape[1]; ++b)
        for (std::int64_t k = 0; k < e.shape[2]; ++k)
          for (std::int64_t l = 0; l < e.shape[3]; ++l)
            e(a, b, k, l) = k < t.shape[2] ? t(a, b, k, l) : poison[(k + l) % 3];
    return e;
  };
  data.k = extend(original.data.k);
  data.v = extend(original.data.v);
  const JudgedRun longer = run_and_bound(ctx, padded, std::move(data));
  ctx.expect(compare_pair(original.run.out, original.tau, longer.run.out, longer.tau), c,
             fmt::format("appending {} unreachable keys filled with {}, {} and {} changed the output", extra, poison[0],
                         poison[1], poison[2]));
}

// Decoding: one query against a cache of L − 1 past tokens plus itself (Lq = 1, diagonal offset
// L − 1) is the last row of causal attention over all L tokens.
void kv_cache_decode(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.mask = space.key_lengths = space.causal = false;
  AttentionCase c = ctx.draw_case(space);
  Problem& p = c.problem;
  p.causal = true;
  p.k_len = std::max<std::int64_t>(p.k_len, 2);
  p.q_len = p.k_len;
  ctx.classify(c);
  ctx.require_supported(p);
  const JudgedRun full = run_and_bound(ctx, c);

  AttentionCase step = c;
  step.problem.q_len = 1;
  step.problem.alignment = Alignment::Offset;
  step.problem.diagonal_offset = p.k_len - 1;
  ctx.require_supported(step.problem);
  CaseData data = full.data;
  data.q = HostTensor({p.batch, p.q_heads, 1, p.qk_dim});
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t l = 0; l < p.qk_dim; ++l) data.q(b, h, 0, l) = full.data.q(b, h, p.q_len - 1, l);
  const JudgedRun decoded = run_and_bound(ctx, step, std::move(data));
  auto last_row = [&](const HostTensor& t) {
    HostTensor r({p.batch, p.q_heads, 1, p.v_dim});
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t h = 0; h < p.q_heads; ++h)
        for (std::int64_t j = 0; j < p.v_dim; ++j) r(b, h, 0, j) = t(b, h, t.shape[2] - 1, j);
    return r;
  };
  ctx.expect(compare_pair(last_row(full.run.out), last_row(full.tau), decoded.run.out, decoded.tau), c,
             "decoding the last token against the cache differs from the last row of the full causal pass");
}

}  // namespace

std::vector<PropertyDef> causality_properties() {
  return {
      {"causal-prefix", "causality", "a causal query never sees later tokens, so changing them changes nothing before",
       false, causal_prefix},
      {"padding-invariance", "causality", "unreachable keys contribute nothing, whatever values they hold", false,
       padding_invariance},
      {"kv-cache-decode", "causality", "decoding against a KV cache equals the last row of the full causal pass", false,
       kv_cache_decode, {}, false},
  };
}

}  // namespace attncheck::props
