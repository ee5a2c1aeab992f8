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

// Significand bits p of a binary format (u = 2^-p): integers up to 2^p are exact in it.
int significand_bits(DType dtype) { return -std::ilogb(unit_roundoff(dtype)); }

// q = 0 makes every score 0 and every weight e^0 (tanh(0) = 0). V lies on a grid of multiples of
// 2^-10 in [−1, 1] and n = 2^k ≤ 64 keys. The mean is then exact, and O bitwise the output
// dtype's rounding of mean(V), when every step of the declared arithmetic is (numerics/README.md
// §7.1, with the profile's stages of §2.3):
//  - exp(0) = 1 exactly: only a kernel declaring no exp error of its own (u_E = 0, the library
//    exp). A fast exp with u_E > 0 may give exp(0) = 1 − δ (PyTorch's: 0.99994659); P rounded
//    to f16/bf16 for P·V is then 1 while the row sum over fp32 P is n(1 − δ), and O = mean/(1 − δ)
//    rounds 1 ulp away from the mean for some V.
//  - the row sum: its partial sums are the integers 1..n, exact iff n ≤ 2^p of the row-sum
//    accumulator (fp16: 2048, bf16: 256).
//  - P·V: partial sums are multiples of 2^-10 of magnitude ≤ n, exact iff n·2^10 ≤ 2^p of the
//    P·V accumulator (fp32: n ≤ 2^14; fp16 and bf16 never for n ≥ 2 here), and V must be exact
//    in value_rounding.
//  - a split-KV merge divides each part by its own count, which need not be a power of two.
//  - the division by n = 2^k is exact unless the mean falls below the output's normal range
//    under a declared flush to zero.
// Otherwise the statement is O = mean(V) within the model's bound: the tolerance model judges
// the output against the reference, with structured data (equal weights make errors coherent,
// §3.2).
bool mean_is_exact(const NumericsProfile& profile, const Problem& p, const CaseData& data) {
  const double n = static_cast<double>(p.k_len);
  const bool exact_exp = profile.exp_relative_error == 0;
  const bool row_sum_exact = n <= std::ldexp(1.0, significand_bits(profile.row_sum_dtype()));
  const bool pv_exact = n * 1024 <= std::ldexp(1.0, significand_bits(profile.accumulator));
  bool values_exact = true;
  if (profile.value_rounding)
    for (double x : data.v.values) values_exact = values_exact && round_to(*profile.value_rounding, x) == x;
  const bool no_split = profile.kv_splits <= 1;
  // Flushing is about the mean each output element holds (every row attends to all n keys here,
  // the space is plain): Σ_k V_kj / n of every (batch, kv head, column), exactly computed since
  // its partial sums are multiples of 2^-10 below 2^53.
  bool no_flush = true;
  if (profile.flushes_subnormals)
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t g = 0; g < p.kv_heads; ++g)
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          double sum = 0;
          for (std::int64_t k = 0; k < p.k_len; ++k) sum += data.v(b, g, k, j);
          const double mean = sum / n;
          no_flush = no_flush && (mean == 0 || std::fabs(mean) >= smallest_normal(profile.output));
        }
  return exact_exp && row_sum_exact && pv_exact && values_exact && no_split && no_flush;
}

void uniform_weights_exact(PropertyContext& ctx) {
  ProblemSpace space = ctx.plain_space();
  space.gqa = true;
  space.layouts = true;
  AttentionCase c = ctx.draw_case(space);
  c.problem.k_len = std::int64_t{1} << *rc::gen::inRange(0, 7);
  c.problem.scale = std::nullopt;
  c.problem.softcap = *rc::gen::element(0.0, 30.0);
  c.values = ValueKind::Ties;  // every weight equal: judged as structured data when not exact
  ctx.classify(c);
  ctx.require_supported(c.problem);
  CaseData data = ctx.case_data(c);
  PortableRandom rng(c.seed);
  for (double& x : data.q.values) x = 0.0;
  // round_to keeps a multiple of 2^-10 a multiple of 2^-10 (bf16 drops low bits only above 2^-3).
  for (double& x : data.v.values) x = round_to(c.dtype, static_cast<double>(rng.below(2049) - 1024) / 1024.0);

  if (!mean_is_exact(ctx.profile(c.problem), c.problem, data)) {
    const JudgedRun judged = run_and_bound(ctx, c, std::move(data));
    ctx.expect(compare_attention(c.problem, ctx.profile(c.problem), judged.data.inputs(c.problem), judged.reference, judged.run.out,
                                 judged.run.lse ? &*judged.run.lse : nullptr, ctx.compare_options(DataCharacter::Structured)),
               c, "uniform weights must average V within the declared arithmetic's bound");
    return;
  }
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
  ctx.expect(compare_exact(expected, run.out, ctx.profile(c.problem).output, ExactMode::RoundedExact), c,
             "uniform weights must average V exactly");
}

// V = I (Lk ≤ Dv) turns O into P: O ≥ 0, masked keys exactly +0, rows summing to one.
void identity_values(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  p.v_dim = std::max(p.v_dim, p.k_len);
  c.values = ValueKind::OneHotV;  // judged with deterministic bounds: V is structured
  c.poison_masked = false;
  ctx.classify(c);
  ctx.require_supported(p);
  CaseData data = ctx.case_data(c);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t k = 0; k < p.k_len; ++k)
        for (std::int64_t j = 0; j < p.v_dim; ++j) data.v(b, g, k, j) = k == j ? 1.0 : 0.0;
  JudgedRun judged = run_and_bound(ctx, c, std::move(data));
  ctx.expect(compare_attention(p, ctx.profile(p), judged.data.inputs(p), judged.reference, judged.run.out,
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
  AttentionCase c = ctx.draw_case(ctx.space());
  c.poison_masked = false;
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const CaseData data = ctx.case_data(c);
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
       "equal scores give weights exactly 1/n, so O is the exactly rounded mean of V", false, uniform_weights_exact, {}, false},
      {"identity-values", "normalization",
       "with V = I the output is P: non-negative, masked keys exactly +0, rows summing to one", false, identity_values, {}, false},
      {"convexity", "normalization", "each output is a convex combination of the attended values", false, convexity},
  };
}

}  // namespace attncheck::props
