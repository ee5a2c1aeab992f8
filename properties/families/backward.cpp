// Backward: a backward pass returns the gradients of the function its forward computes. For a
// scalar loss f with dO = ∂f/∂O (and dLSE = ∂f/∂LSE), with P the softmax weights, D_i = dO_i·O_i
// and dS_ij = P_ij (dO_i·V_j − D_i + dLSE_i) (reference/README.md, "The backward pass"):
//   dV_j = Σ_i P_ij dO_i,   dQ_i = σ Σ_j dS_ij K_j,   dK_j = σ Σ_i dS_ij Q_i,   dBias_ij = dS_ij
// (through softcap, dS_ij is multiplied by 1 − tanh²(r_ij / c)). The gradients are judged against
// reference_attention_backward of exactly the bits the kernel was handed, with τ from
// gradient_tolerance (numerics/README.md §10), and related to each other through the identities
// these formulas imply. A backend without a backward pass skips every one of them.
#include <bit>
#include <cmath>
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {

constexpr double kDoubleUnit = 0x1p-53;  // u of double, round to nearest

// γ_n = n·u / (1 − n·u) (Higham, Accuracy and Stability, Lemma 3.1): a sum of n + 1 doubles in
// any order is within γ_n · Σ|x| of the exact sum.
double gamma_double(std::int64_t n) {
  const double nu = static_cast<double>(n) * kDoubleUnit;
  return nu / (1 - nu);
}

// Split-KV and ring attention hand the backward a dLSE: drawn, sometimes, where the path accepts it.
bool draw_d_lse(const BackwardProfile& backward) { return backward.accepts_dlse && *rc::gen::element(false, true); }

std::string with_d_lse_note(bool d_lse) { return d_lse ? " (with dLSE)" : ""; }

bool bitwise_equal(double a, double b) { return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b); }

// The gradients of the case's data, run once: what most properties start from.
struct Prepared {
  CaseData data;
  AttentionResult forward;
  BackwardData backward;
};
Prepared prepare(PropertyContext& ctx, const AttentionCase& c, bool with_d_lse) {
  Prepared p{ctx.case_data(c), {}, {}};
  p.forward = forward_reference(c.problem, p.data);
  p.backward = backward_data_for(ctx, c, p.forward, with_d_lse);
  return p;
}

// 1. The backward pass computes a function of the bits it is handed (Q, K, V, the mask, O, LSE,
// dO, dLSE): its gradients must equal the exact ones within τ, over every Problem option and
// value kind the forward is checked on.
void backward_agreement(PropertyContext& ctx) {
  const AttentionCase c = ctx.draw_case(ctx.space(),
                                        {ValueKind::Gaussian, ValueKind::Grid, ValueKind::Ties, ValueKind::DuplicateKeys,
                                         ValueKind::OneHotV, ValueKind::LargeLogits, ValueKind::Diffuse,
                                         ValueKind::Peaked, ValueKind::ConstantV, ValueKind::NonNegativeV});
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(c.problem);
  const bool d_lse = draw_d_lse(backward);
  const JudgedBackward j = run_backward_and_bound(ctx, c, d_lse, wants_d_bias(c.problem, backward));
  ctx.expect(judge_gradients(j), c, "agreement of the gradients with the reference" + with_d_lse_note(d_lse));
}

// 2. Softmax is shift invariant, so its Jacobian annihilates constants: Σ_j dS_ij = Σ_j P_ij dP_ij
// − D_i Σ_j P_ij = dO_i·O_i − D_i = 0 for every row (without softcap, whose 1 − tanh² weights
// the terms unequally, and without dLSE, which adds dLSE_i · Σ_j P_ij = dLSE_i). Hence
// Σ_j dK_j = σ Σ_i (Σ_j dS_ij) Q_i = 0 for every (batch, kv head, column), GQA groups included.
// Each dK_j is within τ_j of the exact one, so the kernel's sum is within Σ_j τ_j of 0, and the
// sum formed here in double adds at most γ_{Lk−1}(2^-53) · Σ_j |dK_j|.
void key_gradients_sum_to_zero(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.softcap = false;
  const AttentionCase c = ctx.draw_case(space);
  ctx.classify(c);
  ctx.backward_profile(c.problem);  // declines what the backward pass does not take
  const JudgedBackward j = run_backward_and_bound(ctx, c, false, false);
  const Problem& p = c.problem;
  const HostTensor& dk = j.run.gradients.d_k;
  const HostTensor& tau = j.tau.d_k;
  // The sums of magnitudes and of bounds are themselves formed in double: dividing by 1 − γ
  // turns the computed sums into upper bounds of the exact ones.
  const double gamma = gamma_double(p.k_len - 1);
  GradientVerdict v;
  v.passed = true;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t d = 0; d < p.qk_dim; ++d) {
        double sum = 0, magnitude = 0, tau_sum = 0;
        bool attended_non_finite = false;
        for (std::int64_t k = 0; k < p.k_len; ++k) {
          // A non-finite dK_j says nothing about the sum: against a finite exact value it is a
          // failure of its own (before the sum's bound, which it would make infinite); where an
          // attended NaN or Inf input makes the exact dK_j non-finite, the column has no sum to judge.
          if (!std::isfinite(j.reference.d_k(b, g, k, d))) attended_non_finite = true;
          else if (!std::isfinite(dk(b, g, k, d))) {
            v.passed = false;
            v.failure = fmt::format("dK[{}, {}, {}, {}] = {} against a finite exact value {}", b, g, k, d, dk(b, g, k, d),
                                    j.reference.d_k(b, g, k, d));
            ctx.expect(v, c, "the key gradients sum to zero");
          }
          sum += dk(b, g, k, d);
          magnitude += std::fabs(dk(b, g, k, d));
          tau_sum += tau(b, g, k, d);
        }
        if (attended_non_finite) continue;
        const double bound = (tau_sum + gamma * magnitude) / (1 - gamma);
        const std::string where = fmt::format("Σ_j dK[{}, {}, j, {}]", b, g, d);
        if (!std::isfinite(bound)) {
          v.passed = false;
          v.failure = fmt::format("refused: the bound of {} is infinite (a term of τ overflows)", where);
          ctx.expect(v, c, "the key gradients sum to zero");
        }
        const double ratio = std::isfinite(sum) ? (bound > 0 ? std::fabs(sum) / bound : (sum != 0 ? INFINITY : 0)) : INFINITY;
        if (v.worst.empty() || ratio > v.max_ratio) {
          v.max_ratio = v.ratio_k = ratio;
          v.worst = where;
          if (ratio > 1)
            v.failure = fmt::format("{} = {:.6g}, but softmax's shift invariance makes it 0: the bound Σ_j τ_j + γ·Σ_j |dK_j| "
                                    "is {:.3g} (Σ_j τ_j = {:.3g})",
                                    where, sum, bound, tau_sum);
        }
      }
  v.passed = v.max_ratio <= 1;
  if (v.passed) v.failure.clear();
  ctx.expect(v, c, "the key gradients sum to zero");
}

// 3. Adding one vector s to every key adds σ q_i·s to every score of row i: without softcap (which
// is not shift invariant) softmax ignores it, so P, O, dP, D and dS are unchanged (the LSE moves
// by σ q_i·s). Then dQ_i = σ Σ_j dS_ij (K_j + s) = dQ_i + σ s Σ_j dS_ij = dQ_i, since Σ_j dS_ij = 0
// without dLSE (see 2; with it dQ moves by σ s dLSE_i); dK, dV and dBias are unchanged as well.
// The values lie on the grid of multiples of 2^-4 in [−2, 2] and s on that grid in [−1, 1], so
// K + s is exact in every dtype: the kernel receives exactly the shifted keys. Each run is handed
// O and LSE of its own forward and the same dO; the two agree within τ + τ′.
void key_shift_leaves_dq(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.softcap = false;
  const AttentionCase c = ctx.draw_case(space, {ValueKind::Grid});
  const Problem& p = c.problem;
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(p);
  const bool d_bias = wants_d_bias(p, backward);
  const Prepared original = prepare(ctx, c, false);
  PortableRandom rng(c.seed + 23);
  std::vector<double> shift(static_cast<size_t>(p.qk_dim));
  for (double& s : shift) s = static_cast<double>(rng.below(33) - 16) / 16;  // a multiple of 2^-4 in [−1, 1]
  CaseData shifted = original.data;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t k = 0; k < p.k_len; ++k)
        for (std::int64_t d = 0; d < p.qk_dim; ++d) {
          double& x = shifted.k(b, g, k, d);
          // Poisoned keys (NaN, ±max) are reachable by no query: rounded, whatever they become.
          if (std::isfinite(x)) x = round_to(c.dtype, x + shift[static_cast<size_t>(d)]);
        }
  const AttentionResult shifted_forward = forward_reference(p, shifted);
  BackwardData shifted_backward = backward_data_for(ctx, c, shifted_forward, false);
  shifted_backward.d_out = original.backward.d_out;  // the same loss gradient
  const JudgedBackward before = run_backward_and_bound(ctx, c, original.data, original.backward, d_bias);
  const JudgedBackward after = run_backward_and_bound(ctx, c, std::move(shifted), std::move(shifted_backward), d_bias);
  ctx.expect(compare_gradient_pair(before.run.gradients, before.tau, after.run.gradients, after.tau), c,
             fmt::format("adding the vector ({}) to every key changed the gradients",
                         fmt::join(shift.begin(), shift.begin() + std::min<std::int64_t>(p.qk_dim, 4), ", ")) +
                 (p.qk_dim > 4 ? " (first 4 columns shown)" : ""));
}

// Elementwise sums of two backward runs' gradients, formed in double, with τ1 + τ2 and the sum's
// own rounding: |fl(x + y) − (x + y)| ≤ u |x + y| ≤ 2u |fl(x + y)|.
void add_gradients(const HostTensor& a, const HostTensor& tau_a, const HostTensor& b, const HostTensor& tau_b, HostTensor& sum,
                   HostTensor& tau) {
  sum = HostTensor(a.shape);
  tau = HostTensor(a.shape);
  for (size_t n = 0; n < a.values.size(); ++n) {
    sum.values[n] = a.values[n] + b.values[n];
    // The sum's own rounding in double: a non-finite kernel value adds none (the pair comparison
    // judges it as a disagreement, not as a bound it cannot evaluate).
    const double rounding = std::isfinite(sum.values[n]) ? 2 * kDoubleUnit * std::fabs(sum.values[n]) : 0.0;
    tau.values[n] = tau_a.values[n] + tau_b.values[n] + rounding;
  }
}

// 4. For fixed Q, K, V, O and LSE the gradients are linear in (dO, dLSE): D_i, dP and hence dS are
// linear in them, and so are dV = Pᵀ dO, dQ, dK and dBias. dO is split into two parts of disjoint
// support, so dO = dO1 + dO2 exactly in the dtype; dLSE, when drawn, goes wholly with the first
// (an absent dLSE is 0). Each run is within its τ of its exact gradients, whose sum is the whole
// one's: G(dO) and G(dO1) + G(dO2) agree within τ + τ1 + τ2.
void gradients_linear_in_dout(PropertyContext& ctx) {
  const AttentionCase c = ctx.draw_case(ctx.space());
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(c.problem);
  const bool d_lse = draw_d_lse(backward);
  const bool d_bias = wants_d_bias(c.problem, backward);
  const Prepared whole = prepare(ctx, c, d_lse);
  BackwardData first = whole.backward, second = whole.backward;
  second.d_lse.reset();
  PortableRandom rng(c.seed + 29);
  for (size_t n = 0; n < whole.backward.d_out.values.size(); ++n) (rng.below(2) == 0 ? first : second).d_out.values[n] = 0;
  const JudgedBackward all = run_backward_and_bound(ctx, c, whole.data, whole.backward, d_bias);
  const JudgedBackward one = run_backward_and_bound(ctx, c, whole.data, std::move(first), d_bias);
  const JudgedBackward two = run_backward_and_bound(ctx, c, whole.data, std::move(second), d_bias);
  AttentionGradients sum;
  GradientBounds tau;
  add_gradients(one.run.gradients.d_q, one.tau.d_q, two.run.gradients.d_q, two.tau.d_q, sum.d_q, tau.d_q);
  add_gradients(one.run.gradients.d_k, one.tau.d_k, two.run.gradients.d_k, two.tau.d_k, sum.d_k, tau.d_k);
  add_gradients(one.run.gradients.d_v, one.tau.d_v, two.run.gradients.d_v, two.tau.d_v, sum.d_v, tau.d_v);
  if (d_bias && one.run.gradients.d_bias && two.run.gradients.d_bias && one.tau.d_bias && two.tau.d_bias) {
    sum.d_bias.emplace();
    tau.d_bias.emplace();
    add_gradients(*one.run.gradients.d_bias, *one.tau.d_bias, *two.run.gradients.d_bias, *two.tau.d_bias, *sum.d_bias,
                  *tau.d_bias);
  }
  ctx.expect(compare_gradient_pair(all.run.gradients, all.tau, sum, tau), c,
             "the gradients of dO differ from the sum of the gradients of its two disjoint parts" + with_d_lse_note(d_lse));
}

// 5. An excluded key has dS = 0 in every row (the reference's convention, and the function's: the
// output does not depend on it), so a key that no query may see — forbidden by the mask in every
// row, beyond the key length, outside every window — gets dK = dV = 0 exactly, whatever its K
// and V hold (NaN among them). A row with no allowed key has O = 0 whatever Q holds: its dQ row
// is 0 exactly. A bias of −inf is not a variable of the output: its dBias is 0. Zero of either
// sign counts: the statement is about values. The case always has a mask, with a run of keys
// forbidden in every row and, sometimes, a query row with every key forbidden.
void unreachable_keys_get_zero_gradient(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  if (p.mask == MaskKind::None) {
    p.mask = *rc::gen::element(MaskKind::Boolean, MaskKind::Additive);
    p.mask_batch = p.mask_heads = 1;
    p.mask_q_len = p.q_len;
    p.mask_k_len = p.k_len;
  }
  const std::int64_t forbid_begin = *rc::gen::inRange<std::int64_t>(0, p.mask_k_len);
  const std::int64_t forbid_end = *rc::gen::inRange<std::int64_t>(forbid_begin + 1, p.mask_k_len + 1);
  const std::optional<std::int64_t> empty_row =
      p.mask_q_len == p.q_len && *rc::gen::element(false, true)
          ? std::optional<std::int64_t>(*rc::gen::inRange<std::int64_t>(0, p.q_len))
          : std::nullopt;
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(p);
  const bool d_lse = draw_d_lse(backward);
  const bool d_bias = wants_d_bias(p, backward);
  CaseData data = ctx.case_data(c);
  forbid_in_mask(p, data, [](std::int64_t) { return true; }, forbid_begin, forbid_end);
  if (empty_row) forbid_in_mask(p, data, [row = *empty_row](std::int64_t i) { return i == row; }, 0, p.mask_k_len);
  const AttentionResult forward = forward_reference(p, data);
  const BackwardData handed = backward_data_for(ctx, c, forward, d_lse);
  const BackwardRun run = ctx.run_backward(c, data, handed, d_bias);
  const AttentionGradients& g = run.gradients;
  const std::string note = with_d_lse_note(d_lse);
  const AttentionInputs inputs = data.inputs(p);

  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t kv = 0; kv < p.kv_heads; ++kv)
      for (std::int64_t k = 0; k < p.k_len; ++k) {
        bool reachable = false;
        for (std::int64_t h = kv * p.group_size(); h < (kv + 1) * p.group_size() && !reachable; ++h)
          for (std::int64_t i = 0; i < p.q_len && !reachable; ++i) reachable = attncheck::key_allowed(p, inputs, b, h, i, k);
        if (reachable) continue;
        for (std::int64_t d = 0; d < p.qk_dim; ++d)
          if (g.d_k(b, kv, k, d) != 0)
            ctx.fail(c, fmt::format("key {} of batch {}, kv head {} is seen by no query, yet dK[{}, {}, {}, {}] = {}{}", k, b,
                                    kv, b, kv, k, d, g.d_k(b, kv, k, d), note),
                     FailureKind::Gradient);
        for (std::int64_t d = 0; d < p.v_dim; ++d)
          if (g.d_v(b, kv, k, d) != 0)
            ctx.fail(c, fmt::format("key {} of batch {}, kv head {} is seen by no query, yet dV[{}, {}, {}, {}] = {}{}", k, b,
                                    kv, b, kv, k, d, g.d_v(b, kv, k, d), note),
                     FailureKind::Gradient);
      }
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        bool empty = true;
        for (std::int64_t k = 0; k < p.k_len && empty; ++k) empty = !attncheck::key_allowed(p, inputs, b, h, i, k);
        if (!empty) continue;
        for (std::int64_t d = 0; d < p.qk_dim; ++d)
          if (g.d_q(b, h, i, d) != 0)
            ctx.fail(c, fmt::format("query row {} of batch {}, head {} has no allowed key, yet dQ[{}, {}, {}, {}] = {}{}", i, b,
                                    h, b, h, i, d, g.d_q(b, h, i, d), note),
                     FailureKind::Gradient);
      }
  if (d_bias && g.d_bias) {
    const HostTensor& m = data.mask;
    for (std::int64_t a = 0; a < m.shape[0]; ++a)
      for (std::int64_t h = 0; h < m.shape[1]; ++h)
        for (std::int64_t i = 0; i < m.shape[2]; ++i)
          for (std::int64_t k = 0; k < m.shape[3]; ++k)
            if (m(a, h, i, k) == -INFINITY && (*g.d_bias)(a, h, i, k) != 0)
              ctx.fail(c, fmt::format("the bias at [{}, {}, {}, {}] is −inf, yet dBias there is {}{}", a, h, i, k,
                                      (*g.d_bias)(a, h, i, k), note),
                       FailureKind::Gradient);
  }
}

// Sums a tensor over the query heads of each kv group ([B, Hq, …] → [B, Hkv, …]), with τ summed
// alike plus the double sum's own rounding γ_{G−1} · Σ|x| (G query heads per group).
void sum_over_groups(const Problem& p, const HostTensor& t, const HostTensor& tau, HostTensor& sum, HostTensor& sum_tau) {
  const Shape4 s{t.shape[0], p.kv_heads, t.shape[2], t.shape[3]};
  sum = HostTensor(s);
  sum_tau = HostTensor(s);
  const double gamma = gamma_double(p.group_size() - 1);
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t g = 0; g < s[1]; ++g)
      for (std::int64_t k = 0; k < s[2]; ++k)
        for (std::int64_t d = 0; d < s[3]; ++d) {
          double total = 0, magnitude = 0, bound = 0;
          for (std::int64_t h = g * p.group_size(); h < (g + 1) * p.group_size(); ++h) {
            total += t(b, h, k, d);
            // A non-finite kernel value is judged by the pair comparison itself, not made into a bound.
            if (std::isfinite(t(b, h, k, d))) magnitude += std::fabs(t(b, h, k, d));
            bound += tau(b, h, k, d);
          }
          sum(b, g, k, d) = total;
          sum_tau(b, g, k, d) = (bound + gamma * magnitude) / (1 - gamma);
        }
}

// 6. GQA is MHA over K/V repeated per group (query head h reads kv head h / (Hq/Hkv)): a kv head
// read by G query heads is G copies of one variable, so its gradient is the sum of the copies'
// (the chain rule through the repetition). The GQA run's dQ equals the MHA run's, and its dK, dV
// equal the MHA run's summed over each group's heads, within τ_gqa + Σ τ_mha (both handed the same
// O, LSE, dO and dLSE: the two forwards are the same function).
void gqa_backward_is_summed_mha(PropertyContext& ctx) {
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  ensure_grouped(p);
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(p);
  AttentionCase mha = c;
  mha.problem.kv_heads = p.q_heads;
  const BackwardProfile mha_backward = ctx.backward_profile(mha.problem);
  const bool d_lse = draw_d_lse(backward) && mha_backward.accepts_dlse;
  const bool d_bias = wants_d_bias(p, backward) && wants_d_bias(mha.problem, mha_backward);
  const Prepared grouped_case = prepare(ctx, c, d_lse);
  CaseData repeated = grouped_case.data;
  repeated.k = repeat_kv_heads(p, grouped_case.data.k);
  repeated.v = repeat_kv_heads(p, grouped_case.data.v);
  const JudgedBackward grouped = run_backward_and_bound(ctx, c, grouped_case.data, grouped_case.backward, d_bias);
  const JudgedBackward expanded = run_backward_and_bound(ctx, mha, std::move(repeated), grouped_case.backward, d_bias);
  AttentionGradients summed;
  GradientBounds tau;
  summed.d_q = expanded.run.gradients.d_q;
  tau.d_q = expanded.tau.d_q;
  sum_over_groups(p, expanded.run.gradients.d_k, expanded.tau.d_k, summed.d_k, tau.d_k);
  sum_over_groups(p, expanded.run.gradients.d_v, expanded.tau.d_v, summed.d_v, tau.d_v);
  summed.d_bias = expanded.run.gradients.d_bias;  // the mask's shape is the same for both problems
  tau.d_bias = expanded.tau.d_bias;
  ctx.expect(compare_gradient_pair(grouped.run.gradients, grouped.tau, summed, tau), c,
             fmt::format("the GQA (Hq={}, Hkv={}) gradients differ from the MHA ones over repeated K/V summed per group{}",
                         p.q_heads, p.kv_heads, with_d_lse_note(d_lse)));
}

// dQ with one query row left out (set to 0 with τ 0 on both sides), and no other gradient.
AttentionGradients dq_without_row(const HostTensor& d_q, std::int64_t b, std::int64_t h, std::int64_t i) {
  AttentionGradients g;
  g.d_q = d_q;
  for (std::int64_t d = 0; d < d_q.shape[3]; ++d) g.d_q(b, h, i, d) = 0;
  return g;
}
GradientBounds tau_without_row(const HostTensor& tau, std::int64_t b, std::int64_t h, std::int64_t i) {
  GradientBounds t;
  t.d_q = tau;
  for (std::int64_t d = 0; d < tau.shape[3]; ++d) t.d_q(b, h, i, d) = 0;
  return t;
}

// 7. dQ_i = σ Σ_j dS_ij K_j, and dS_ij reads row i's dO_i, dLSE_i, O_i and LSE_i only: changing
// dO (and dLSE) at one query row changes no other row of dQ (dK and dV sum over rows and may
// change). The other rows agree within τ + τ′. Bitwise equality is not required even of a
// deterministic kernel: determinism promises equal bits for equal inputs, and a kernel may form
// dS·K with a product whose rounding of one row depends on the others (a Strassen-like scheme).
void query_rows_independent_in_backward(PropertyContext& ctx) {
  const AttentionCase c = ctx.draw_case(ctx.space());
  const Problem& p = c.problem;
  const std::int64_t b0 = *rc::gen::inRange<std::int64_t>(0, p.batch);
  const std::int64_t h0 = *rc::gen::inRange<std::int64_t>(0, p.q_heads);
  const std::int64_t i0 = *rc::gen::inRange<std::int64_t>(0, p.q_len);
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(p);
  const bool d_lse = draw_d_lse(backward);
  const Prepared original = prepare(ctx, c, d_lse);
  BackwardData changed = original.backward;
  PortableRandom rng(c.seed + 31);
  for (std::int64_t d = 0; d < p.v_dim; ++d) changed.d_out(b0, h0, i0, d) = round_to(c.dtype, 2 * rng.normal());
  if (changed.d_lse) (*changed.d_lse)(0, b0, h0, i0) = round_to(DType::F32, 2 * rng.normal());
  const JudgedBackward before = run_backward_and_bound(ctx, c, original.data, original.backward, false);
  const JudgedBackward after = run_backward_and_bound(ctx, c, original.data, std::move(changed), false);
  ctx.expect(compare_gradient_pair(dq_without_row(before.run.gradients.d_q, b0, h0, i0),
                                   tau_without_row(before.tau.d_q, b0, h0, i0),
                                   dq_without_row(after.run.gradients.d_q, b0, h0, i0),
                                   tau_without_row(after.tau.d_q, b0, h0, i0)),
             c, fmt::format("changing dO{} of query row [{}, {}, {}] changed another row of dQ", d_lse ? " and dLSE" : "", b0,
                            h0, i0));
}

// The first element where two tensors' bits differ, as "dK[0, 1, 2, 3]: x vs y"; empty if none.
std::string first_difference(std::string_view name, const HostTensor& a, const HostTensor& b) {
  const Shape4& s = a.shape;
  for (std::int64_t i0 = 0; i0 < s[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < s[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < s[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < s[3]; ++i3)
          if (!bitwise_equal(a(i0, i1, i2, i3), b(i0, i1, i2, i3)))
            return fmt::format("{}[{}, {}, {}, {}]: {} vs {}", name, i0, i1, i2, i3, b(i0, i1, i2, i3), a(i0, i1, i2, i3));
  return {};
}

// 8. A backward pass declared deterministic (per path: get_backward_profile) promises equal bits
// for equal inputs, the promise that makes training runs reproducible: repeated calls on the same
// inputs return bitwise-equal dQ, dK, dV and dBias.
void backward_determinism(PropertyContext& ctx) {
  const AttentionCase c = ctx.draw_case(ctx.space());
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(c.problem);
  // skip_reason sees the forward profile only: the backward's promise is declined per case.
  if (!backward.deterministic) ctx.decline("this problem's backward pass is not declared deterministic");
  const bool d_lse = draw_d_lse(backward);
  const bool d_bias = wants_d_bias(c.problem, backward);
  const Prepared prepared = prepare(ctx, c, d_lse);
  const BackwardRun first = ctx.run_backward(c, prepared.data, prepared.backward, d_bias);
  for (int repeat = 1; repeat <= 3; ++repeat) {
    const BackwardRun again = ctx.run_backward(c, prepared.data, prepared.backward, d_bias);
    std::string difference = first_difference("dQ", first.gradients.d_q, again.gradients.d_q);
    if (difference.empty()) difference = first_difference("dK", first.gradients.d_k, again.gradients.d_k);
    if (difference.empty()) difference = first_difference("dV", first.gradients.d_v, again.gradients.d_v);
    if (difference.empty() && first.gradients.d_bias && again.gradients.d_bias)
      difference = first_difference("dBias", *first.gradients.d_bias, *again.gradients.d_bias);
    if (!difference.empty())
      ctx.fail(c, fmt::format("backward run {} differs from run 0 at {}{}", repeat, difference, with_d_lse_note(d_lse)));
  }
}

enum class HardInput { LargeLogits, MaskedTiles, SubnormalValues, SubnormalDout };

// The first non-finite element of `actual` where `reference` is finite, as "dV[0, 1, 2, 3] = nan".
std::string first_nonfinite(std::string_view name, const HostTensor& actual, const HostTensor& reference) {
  for (size_t n = 0; n < actual.values.size() && n < reference.values.size(); ++n)
    if (!std::isfinite(actual.values[n]) && std::isfinite(reference.values[n])) {
      const Shape4& s = actual.shape;
      const auto flat = static_cast<std::int64_t>(n);
      return fmt::format("{}[{}, {}, {}, {}] = {}", name, flat / (s[1] * s[2] * s[3]), flat / (s[2] * s[3]) % s[1],
                         flat / s[3] % s[2], flat % s[3], actual.values[n]);
    }
  return {};
}

// 9. The hard inputs of the forward are hard for the backward too: huge logits (P recomputed as
// exp(s − lse) stays in [0, 1]; exp(s) / exp(lse) overflows), whole key tiles masked inside live
// rows (no (−inf) − (−inf) in a tile's recomputed P), and subnormal V or dO (dP, dS or dV in the
// subnormal range). Gradients of finite data are finite and agree with the reference within τ.
void backward_robustness(PropertyContext& ctx) {
  const HardInput hard = *rc::gen::element(HardInput::LargeLogits, HardInput::MaskedTiles, HardInput::SubnormalValues,
                                           HardInput::SubnormalDout);
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  switch (hard) {
    case HardInput::LargeLogits: c.values = ValueKind::LargeLogits; break;  // |s| ≈ 1e3
    case HardInput::MaskedTiles:
      mask_whole_key_tiles(p);  // as the forward's robustness draws it
      break;
    case HardInput::SubnormalValues:
    case HardInput::SubnormalDout: break;
  }
  ctx.classify(c);
  const BackwardProfile backward = ctx.backward_profile(p);
  const bool d_lse = draw_d_lse(backward);
  const bool d_bias = wants_d_bias(p, backward);
  const double tiny = smallest_normal(c.dtype) / 8;  // scaled into the dtype's subnormal range, re-rounded
  CaseData data = ctx.case_data(c);
  if (hard == HardInput::SubnormalValues)
    for (double& x : data.v.values)
      if (std::isfinite(x)) x = round_to(c.dtype, x * tiny);
  const AttentionResult forward = forward_reference(p, data);
  BackwardData handed = backward_data_for(ctx, c, forward, d_lse);
  if (hard == HardInput::SubnormalDout)
    for (double& x : handed.d_out.values) x = round_to(c.dtype, x * tiny);
  const JudgedBackward j = run_backward_and_bound(ctx, c, std::move(data), std::move(handed), d_bias);
  const AttentionGradients& g = j.run.gradients;
  std::string nonfinite = first_nonfinite("dQ", g.d_q, j.reference.d_q);
  if (nonfinite.empty()) nonfinite = first_nonfinite("dK", g.d_k, j.reference.d_k);
  if (nonfinite.empty()) nonfinite = first_nonfinite("dV", g.d_v, j.reference.d_v);
  if (nonfinite.empty() && g.d_bias && j.reference.d_bias) nonfinite = first_nonfinite("dBias", *g.d_bias, *j.reference.d_bias);
  if (!nonfinite.empty())
    ctx.fail(c, fmt::format("{} where the reference gradient is finite{}", nonfinite, with_d_lse_note(d_lse)),
             FailureKind::Gradient);
  ctx.expect(judge_gradients(j), c, "agreement of the gradients on hard inputs" + with_d_lse_note(d_lse));
}

PropertyDef backward_property(std::string name, std::string why, std::function<void(PropertyContext&)> body) {
  PropertyDef def;
  def.name = std::move(name);
  def.family = "backward";
  def.why = std::move(why);
  def.body = std::move(body);
  def.needs_backward = true;
  return def;
}

}  // namespace

std::vector<PropertyDef> backward_properties() {
  return {
      backward_property("backward-agreement",
                        "the backward pass is a function of the bits it is handed: dQ, dK, dV (and dBias) equal the "
                        "double-precision gradients within τ",
                        backward_agreement),
      backward_property("key-gradients-sum-to-zero",
                        "softmax ignores a constant added to a row, so without softcap and dLSE the key gradients of "
                        "every column sum to zero",
                        key_gradients_sum_to_zero),
      backward_property("key-shift-leaves-dq",
                        "adding one vector to every key shifts each row's scores by a constant: without softcap and dLSE "
                        "dQ (and dK, dV) do not change",
                        key_shift_leaves_dq),
      backward_property("gradients-linear-in-dout",
                        "the gradients are linear in dO: those of dO equal the sum of those of two parts adding up to it",
                        gradients_linear_in_dout),
      backward_property("unreachable-keys-get-zero-gradient",
                        "a key no query sees gets dK = dV = 0 exactly, and a row with no allowed key gets dQ = 0",
                        unreachable_keys_get_zero_gradient),
      backward_property("gqa-backward-is-summed-mha",
                        "a kv head read by a group of query heads is copies of one variable: its gradients are the MHA "
                        "gradients summed over the group",
                        gqa_backward_is_summed_mha),
      backward_property("query-rows-independent-in-backward",
                        "a row of dQ reads its own row of dO only: changing dO at one query row changes no other row of dQ",
                        query_rows_independent_in_backward),
      backward_property("backward-determinism",
                        "a backward pass declared deterministic returns bitwise-equal gradients on every run",
                        backward_determinism),
      backward_property("backward-robustness",
                        "huge logits, masked tiles inside live rows and subnormal inputs still have finite gradients "
                        "within τ of the reference",
                        backward_robustness),
  };
}

}  // namespace attncheck::props
