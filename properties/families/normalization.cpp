// Normalization: softmax weights are non-negative and sum to one along keys. Three consequences a
// kernel must honour: equal scores average V exactly (numerics/README.md §7.1), V = I exposes P
// itself (§7.2: every masked key exactly +0), and every output is a convex combination of the
// values.
#include <bit>
#include <cmath>
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {

// q = 0 makes every score 0 and every weight exactly 1 (exp(0) = 1, tanh(0) = 0). With V on a
// grid of multiples of 2^-10 in [−1, 1] and n = 2^k ≤ 2^13 keys, every partial sum and the final
// division by n are exact in fp32, so O must be the output dtype's rounding of mean(V), bitwise.
void uniform_weights_exact(PropertyContext& ctx) {
  ProblemSpace space = ProblemSpace::plain();
  space.gqa = true;
  space.layouts = true;
  AttentionCase c = *gen_case(ctx.dtype(), space);
  c.problem.k_len = std::int64_t{1} << *rc::gen::inRange(0, 7);
  c.problem.scale = std::nullopt;
  c.problem.softcap = *rc::gen::element(0.0, 30.0);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  CaseData data = make_case_data(c);
  PortableRandom rng(c.seed);
  for (double& x : data.q.values) x = 0.0;
  // round_to keeps a multiple of 2^-10 a multiple of 2^-10 (bf16 drops low bits only above 2^-3).
  for (double& x : data.v.values) x = round_to(c.dtype, static_cast<double>(rng.below(2049) - 1024) / 1024.0);
  const BackendRun run = ctx.run(c, data);

  const Problem& p = c.problem;
  HostTensor expected(run.out.shape);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t j = 0; j < p.v_dim; ++j) {
        double sum = 0;  // exact: at most 64 multiples of 2^-10, |sum| ≤ 64
        for (std::int64_t k = 0; k < p.k_len; ++k) sum += data.v(b, p.kv_head_of(h), k, j);
        for (std::int64_t i = 0; i < p.q_len; ++i) expected(b, h, i, j) = sum / static_cast<double>(p.k_len);
      }
  ctx.expect(compare_exact(expected, run.out, ctx.profile().output, ExactMode::RoundedExact), c,
             "uniform weights must average V exactly");
}

// V = I (Lk ≤ Dv) turns O into P: O ≥ 0, masked keys exactly +0, rows summing to one.
void identity_values(PropertyContext& ctx) {
  AttentionCase c = *gen_case(ctx.dtype(), ProblemSpace{});
  Problem& p = c.problem;
  p.v_dim = std::max(p.v_dim, p.k_len);
  c.values = ValueKind::OneHotV;  // judged with deterministic bounds: V is structured
  c.poison_masked = false;
  ctx.classify(c);
  ctx.require_supported(p);
  CaseData data = make_case_data(c);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t k = 0; k < p.k_len; ++k)
        for (std::int64_t j = 0; j < p.v_dim; ++j) data.v(b, g, k, j) = k == j ? 1.0 : 0.0;
  JudgedRun judged = run_and_bound(ctx, c, std::move(data));
  ctx.expect(compare_attention(p, ctx.profile(), judged.data.inputs(p), judged.reference, judged.run.out,
                               judged.run.lse ? &*judged.run.lse : nullptr,
                               ctx.compare_options(DataCharacter::Structured)),
             c, "O = P with V = I");
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        if (judged.reference.lse(0, b, h, i) == -INFINITY) continue;  // empty row: the convention was judged above
        double sum = 0, bound = 0;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          const double o = judged.run.out(b, h, i, j);
          if (!(o >= 0)) ctx.fail(c, fmt::format("P[{}, {}, {}, key {}] = {} is negative or NaN", b, h, i, j, o));
          if (judged.reference.out(b, h, i, j) == 0.0 && (o != 0.0 || std::signbit(o)))
            ctx.fail(c, fmt::format("masked key {} of row [{}, {}, {}] has weight {} instead of exactly +0", j, b, h, i, o));
          sum += o;
          bound += judged.tau(b, h, i, j);
        }
        // Σ_j P_j = 1 exactly in the reference; each P_j is within τ_j of it.
        if (std::fabs(sum - 1.0) > bound)
          ctx.fail(c, fmt::format("row [{}, {}, {}] sums to {} (|Σ − 1| = {:.3g} > Σ τ = {:.3g})", b, h, i, sum,
                                  std::fabs(sum - 1.0), bound));
      }
}

// Each O_j is a weighted mean of the attended V_kj, so it lies in [min_k V_kj, max_k V_kj]
// (widened by τ_j for the kernel's rounding).
void convexity(PropertyContext& ctx) {
  AttentionCase c = *gen_case(ctx.dtype(), ProblemSpace{});
  c.poison_masked = false;
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const CaseData data = make_case_data(c);
  ReferenceOptions options;
  options.probabilities = true;
  const AttentionResult weights = reference_attention(c.problem, data.inputs(c.problem), options);
  JudgedRun judged = run_and_bound(ctx, c, data);
  const Problem& p = c.problem;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        if (weights.lse(0, b, h, i) == -INFINITY) continue;
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          double lo = INFINITY, hi = -INFINITY;
          for (std::int64_t k = 0; k < p.k_len; ++k)
            if ((*weights.probabilities)(b, h, i, k) > 0) {
              lo = std::min(lo, data.v(b, p.kv_head_of(h), k, j));
              hi = std::max(hi, data.v(b, p.kv_head_of(h), k, j));
            }
          const double o = judged.run.out(b, h, i, j), tau = judged.tau(b, h, i, j);
          if (!(o >= lo - tau && o <= hi + tau))
            ctx.fail(c, fmt::format("O[{}, {}, {}, {}] = {} lies outside the attended values' range [{}, {}] (τ = {:.3g})",
                                    b, h, i, j, o, lo, hi, tau));
        }
      }
}

}  // namespace

std::vector<PropertyDef> normalization_properties() {
  return {
      {"uniform-weights-exact", "normalization",
       "equal scores give weights exactly 1/n, so O is the exactly rounded mean of V", false, uniform_weights_exact},
      {"identity-values", "normalization",
       "with V = I the output is P: non-negative, masked keys exactly +0, rows summing to one", false, identity_values},
      {"convexity", "normalization", "each output is a convex combination of the attended values", false, convexity},
  };
}

}  // namespace attncheck::props
