// reference_attention_backward (backward.h) against four independent statements of the same
// gradients:
//   1. central finite differences of f = ⟨dO, O⟩ + ⟨dLSE, LSE⟩ through the forward reference,
//      for every element of Q, K, V and the bias (the chain rule itself is under test);
//   2. closed forms of one query and two keys, derived by hand beside each test;
//   3. plain loops (plain_backward.h) on random problems over every option, to 1e-12 of each
//      gradient's own magnitude;
//   4. itself: the same bits for every thread count, row block and instruction set.
// Then what the conventions promise (excluded keys and empty rows pass nothing, NaN padding stays
// out) and the validation messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <functional>
#include <limits>
#include <map>

#include "attncheck/backward.h"
#include "plain_backward.h"
#include "random_case.h"

namespace attncheck::testing {
namespace {

constexpr double kU = 0x1p-53;  // unit roundoff of double
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A random problem with its forward pass done and a random loss: dO (and, in half the cases,
// dLSE) standard normal, dO and O handed over in layouts of their own.
struct GradientCase {
  RandomCase c;
  AttentionResult forward;
  HostTensor d_out, d_lse;
  StridedCopy out_laid, d_out_laid;
  bool has_d_lse = false;

  BackwardInputs backward() const {
    return {out_laid.view, forward.lse.view(), d_out_laid.view, has_d_lse ? d_lse.view() : View4<const double>{}};
  }
  BackwardOptions options() const {
    BackwardOptions o;
    o.bias_gradient = c.problem.mask == MaskKind::Additive;
    o.threads = c.options.threads;
    o.row_block = c.options.row_block;
    return o;
  }
  std::string describe() const {
    return fmt::format("{} [{}{}row_block={} threads={}]", c.problem.describe(), c.layout, has_d_lse ? "dLSE " : "",
                       c.options.row_block, c.options.threads);
  }
};

GradientCase with_loss(RandomCase c, std::mt19937_64& rng) {
  GradientCase g{std::move(c)};
  const Problem& p = g.c.problem;
  ReferenceOptions forward_options = g.c.options;
  forward_options.row_statistics = true;  // the row scales bound the finite differences' rounding
  g.forward = reference_attention(p, g.c.inputs(), forward_options);
  g.d_out = random_tensor(g.forward.out.shape, rng);
  g.has_d_lse = std::bernoulli_distribution(0.5)(rng);
  g.d_lse = random_tensor(g.forward.lse.shape, rng);
  g.out_laid = lay_out_randomly(g.forward.out, rng, "O", g.c.layout);
  g.d_out_laid = lay_out_randomly(g.d_out, rng, "dO", g.c.layout);
  return g;
}

AttentionGradients run_backward(const GradientCase& g) {
  return reference_attention_backward(g.c.problem, g.c.inputs(), g.backward(), g.options());
}

// ---------------------------------------------------------------------------------------------
// 1. Finite differences.
//
// For one input x, fd = (f(x + h) − f(x − h)) / ((x + h) − (x − h)), the denominator being the
// step actually taken after rounding. Its error has two parts:
//  - truncation: fd − f'(x) = h²/6·f'''(ξ). Each derivative of the softmax in one element of Q
//    or K brings down a factor of at most |σ|·max|k| or |σ|·max|q| (≲ 1.5·4 here), through the
//    softcap at most 1/c² more (c ≥ 0.5); |f'''| stays below ~10³ for these problems, so with
//    h = 10⁻⁵·max(1, |x|) the truncation is below 10⁻¹⁰/6·10³ ≈ 2·10⁻⁸.
//  - rounding: each f is computed to within about 8u·F, F = Σ|dO|·A + Σ|dLSE|(1 + |LSE|) with A
//    the forward's row scale Σ_k p_k|V_k| (the forward's error is relative to it, agreement.h;
//    f itself is summed in long double, which adds nothing at this level). Two evaluations over
//    2h give ≲ 8u·F/h ≈ 9·10⁻¹¹·F.
// h ≈ 10⁻⁵ balances the two (the optimum of h²|f'''| + u·F/h is near (u·F/|f'''|)^⅓ ≈ 10⁻⁵·…)
// at ~10⁻¹⁰ in all. The test requires |fd − g| ≤ 10⁻⁷·(1 + |g|) + 10⁻⁹·F: more than 100 times
// the estimate, and still far below what a wrong factor, sign, mask or group sum gives (the
// size of the gradient itself).
// No finite difference crosses a point where f is not differentiable: the masks, causal, window
// and key lengths are fixed, softmax and tanh are smooth, and a bias of −inf is not perturbed
// (its gradient must be exactly 0). Rows with LSE = −inf are left out of ⟨dLSE, LSE⟩: they stay
// empty under any perturbation.

long double loss(const GradientCase& g) {
  ReferenceOptions options;
  options.threads = 1;
  const AttentionResult r = reference_attention(g.c.problem, g.c.inputs(), options);
  long double f = 0;
  for (std::size_t e = 0; e < r.out.values.size(); ++e)
    f += static_cast<long double>(g.d_out.values[e]) * r.out.values[e];
  if (g.has_d_lse)
    for (std::size_t e = 0; e < r.lse.values.size(); ++e)
      if (r.lse.values[e] != -kInf) f += static_cast<long double>(g.d_lse.values[e]) * r.lse.values[e];
  return f;
}

double loss_scale(const GradientCase& g) {
  double f = 0;
  for (std::size_t e = 0; e < g.d_out.values.size(); ++e)
    f += std::fabs(g.d_out.values[e]) * g.forward.stats->row_scale.values[e];
  if (g.has_d_lse)
    for (std::size_t e = 0; e < g.d_lse.values.size(); ++e)
      if (g.forward.lse.values[e] != -kInf)
        f += std::fabs(g.d_lse.values[e]) * (1 + std::fabs(g.forward.lse.values[e]));
  return f;
}

// The storage element behind logical index `at` of a laid-out copy.
double& stored_element(StridedCopy& laid, const Shape4& at) {
  return laid.storage[static_cast<std::size_t>(&laid.view(at[0], at[1], at[2], at[3]) - laid.storage.data())];
}

struct FiniteDifferenceReport {
  double worst_ratio = 0;  // max |fd − g| / tolerance
  std::int64_t checked = 0;
};

// Every element of Q, K, V and (with an additive mask) the bias of one case.
void expect_finite_differences(GradientCase& g, FiniteDifferenceReport& report) {
  const AttentionGradients grads = run_backward(g);
  const double f_scale = loss_scale(g);
  struct Input {
    const char* name;
    StridedCopy* laid;
    const HostTensor* gradient;
  };
  std::vector<Input> inputs{
      {"Q", &g.c.q_laid, &grads.d_q}, {"K", &g.c.k_laid, &grads.d_k}, {"V", &g.c.v_laid, &grads.d_v}};
  if (g.c.problem.mask == MaskKind::Additive) inputs.push_back({"bias", &g.c.mask_laid, &*grads.d_bias});
  int failures = 0;
  for (const Input& input : inputs) {
    const Shape4 shape = input.laid->view.shape;
    for (std::int64_t a = 0; a < shape[0]; ++a)
      for (std::int64_t b = 0; b < shape[1]; ++b)
        for (std::int64_t c = 0; c < shape[2]; ++c)
          for (std::int64_t d = 0; d < shape[3]; ++d) {
            const double analytic = (*input.gradient)(a, b, c, d);
            double& x = stored_element(*input.laid, {a, b, c, d});
            const double x0 = x;
            const std::string where = fmt::format("{}: d{}({}, {}, {}, {})", g.describe(), input.name, a, b, c, d);
            if (x0 == -kInf) {  // an excluded key's bias: nothing flows to it
              EXPECT_EQ(analytic, 0.0) << where;
              continue;
            }
            const double h = 1e-5 * std::max(1.0, std::fabs(x0));
            x = x0 + h;
            const long double f_plus = loss(g);
            x = x0 - h;
            const long double f_minus = loss(g);
            x = x0;
            const double fd = static_cast<double>((f_plus - f_minus) / static_cast<long double>((x0 + h) - (x0 - h)));
            const double tolerance = 1e-7 * (1 + std::fabs(analytic)) + 1e-9 * f_scale;
            report.worst_ratio = std::max(report.worst_ratio, std::fabs(fd - analytic) / tolerance);
            ++report.checked;
            if (failures < 5) {
              EXPECT_NEAR(fd, analytic, tolerance) << where;
              failures += std::fabs(fd - analytic) > tolerance;
            }
          }
  }
}

// A fixed list of option combinations, each with inputs drawn for it: every causal alignment,
// windows on either side, softcap, boolean and additive masks with each broadcast and short
// masks, GQA and MQA, key lengths 0 and 1, the scale negative and 0, and all at once.
struct FiniteDifferenceProblem {
  const char* problem;
  std::vector<std::int64_t> key_lengths;  // with keylens=1
};
const FiniteDifferenceProblem kFiniteDifferenceProblems[] = {
    {"B=1 Hq=1 Hkv=1 Lq=3 Lk=4 Dk=2 Dv=3", {}},
    {"B=2 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=2 Dv=2 causal=1", {}},
    {"B=1 Hq=2 Hkv=1 Lq=4 Lk=3 Dk=3 Dv=1 causal=1 align=bottom-right", {}},
    {"B=1 Hq=3 Hkv=3 Lq=3 Lk=6 Dk=2 Dv=2 causal=1 align=offset offset=2", {}},
    {"B=3 Hq=2 Hkv=2 Lq=3 Lk=4 Dk=2 Dv=2 causal=1 align=key-lengths keylens=1", {0, 1, 4}},
    {"B=3 Hq=2 Hkv=1 Lq=2 Lk=4 Dk=2 Dv=3 keylens=1", {1, 0, 3}},
    {"B=1 Hq=2 Hkv=2 Lq=5 Lk=5 Dk=2 Dv=2 window=1,0", {}},
    {"B=1 Hq=2 Hkv=1 Lq=3 Lk=6 Dk=2 Dv=2 align=bottom-right window=0,2", {}},
    {"B=1 Hq=2 Hkv=2 Lq=3 Lk=4 Dk=3 Dv=2 softcap=1.5", {}},
    {"B=1 Hq=3 Hkv=1 Lq=3 Lk=4 Dk=2 Dv=2 scale=1.2 softcap=0.7", {}},
    {"B=2 Hq=2 Hkv=1 Lq=3 Lk=4 Dk=2 Dv=2 mask=bool:2x1x1x4", {}},
    {"B=1 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=2 Dv=2 mask=bool:1x4x3x3", {}},
    {"B=2 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=2 Dv=2 mask=bias:2x4x3x5", {}},
    {"B=2 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=2 Dv=2 mask=bias:1x1x1x4", {}},
    {"B=2 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=2 Dv=2 mask=bias:1x4x1x5", {}},
    {"B=2 Hq=2 Hkv=2 Lq=3 Lk=4 Dk=2 Dv=2 mask=bias:2x1x3x2", {}},
    {"B=1 Hq=2 Hkv=1 Lq=3 Lk=4 Dk=2 Dv=2 scale=0", {}},
    {"B=1 Hq=2 Hkv=2 Lq=3 Lk=4 Dk=2 Dv=2 scale=-0.8", {}},
    {"B=2 Hq=6 Hkv=2 Lq=4 Lk=5 Dk=2 Dv=3 scale=0.9 softcap=2 causal=1 align=bottom-right window=2,1 "
     "mask=bias:1x6x1x4 keylens=1",
     {5, 3}},
};

TEST(BackwardFiniteDifferences, MatchOnEveryOptionCombination) {
  std::mt19937_64 rng(31);
  FiniteDifferenceReport report;
  for (const FiniteDifferenceProblem& problem : kFiniteDifferenceProblems) {
    RandomCase c = make_random_inputs(parse_problem(problem.problem), rng, 0.0);
    if (c.problem.has_key_lengths) c.key_lengths = problem.key_lengths;
    GradientCase g = with_loss(std::move(c), rng);
    expect_finite_differences(g, report);
  }
  EXPECT_GT(report.checked, 1000);
  std::printf("largest |fd - g| / tolerance: %.3g over %lld elements\n", report.worst_ratio,
              static_cast<long long>(report.checked));
}

TEST(BackwardFiniteDifferences, MatchOnRandomProblems) {
  std::mt19937_64 rng(20261202);
  RandomCaseSizes small;
  small.max_batch = 2;
  small.max_kv_heads = 2;
  small.max_short_len = 4;
  small.min_long_len = 5;
  small.max_long_len = 6;
  small.max_dim = 3;
  small.large_q = 0;  // logits of a few units keep f''' within the bound above
  FiniteDifferenceReport report;
  for (int n = 0; n < 30; ++n) {
    GradientCase g = with_loss(make_random_case(rng, small), rng);
    expect_finite_differences(g, report);
  }
  EXPECT_GT(report.checked, 1000);
  std::printf("largest |fd - g| / tolerance: %.3g over %lld elements\n", report.worst_ratio,
              static_cast<long long>(report.checked));
}

// ---------------------------------------------------------------------------------------------
// 2. One query, two keys, Dk = Dv = 1, σ = 1, loss f = g·O + λ·LSE.
//
// With s_j = q·k_j (then softcap and bias, z_j), p = p₁ = e^{z₁}/(e^{z₁} + e^{z₂}) = logistic(z₁ − z₂)
// and p₂ = 1 − p:
//   O = p v₁ + (1 − p) v₂,  LSE = log(e^{z₁} + e^{z₂})
//   ∂O/∂z₁ = p(1 − p)(v₁ − v₂) = −∂O/∂z₂,  ∂LSE/∂z_j = p_j
//   dz₁ = g p(1 − p)(v₁ − v₂) + λ p,   dz₂ = −g p(1 − p)(v₁ − v₂) + λ(1 − p)
// (FlashAttention's form gives the same: dz_j = p_j(g v_j − g O + λ) and v₁ − O = (1 − p)(v₁ − v₂).)
//   dv₁ = p g,  dv₂ = (1 − p) g;  ds_j = dz_j·(1 − tanh²(s_j / c)) with softcap c, else dz_j
//   dq = ds₁ k₁ + ds₂ k₂,  dk_j = ds_j q,  dbias_j = dz_j

struct TwoKeys {
  Problem problem = parse_problem("B=1 Hq=1 Hkv=1 Lq=1 Lk=2 Dk=1 Dv=1 scale=1");
  double q = 1, k1 = 0, k2 = 0, v1 = 0, v2 = 0, g = 1, lambda = 0;
  std::vector<double> mask;  // 2 values when the problem has a mask

  AttentionGradients run(bool bias_gradient = false) const {
    HostTensor tq({1, 1, 1, 1}, q), tk({1, 1, 2, 1}), tv({1, 1, 2, 1}), tmask({1, 1, 1, 2});
    tk.values = {k1, k2};
    tv.values = {v1, v2};
    if (!mask.empty()) tmask.values = mask;
    const AttentionInputs in{tq.view(), tk.view(), tv.view(),
                             problem.mask == MaskKind::None ? View4<const double>{} : tmask.view(), {}};
    const AttentionResult forward = reference_attention(problem, in);
    const HostTensor d_out({1, 1, 1, 1}, g), d_lse({1, 1, 1, 1}, lambda);
    BackwardOptions options;
    options.bias_gradient = bias_gradient;
    return reference_attention_backward(problem, in, backward_inputs(forward, d_out.view(), d_lse.view()), options);
  }
};

double logistic(double d) { return 1.0 / (1.0 + std::exp(-d)); }

// Rounding bound of the two-key closed forms: the reference's p = e^{z − LSE} is within 6u of
// the true weight (LSE = m + log Z: the log, the sum and Z's one addition; the subtraction; exp's
// ulp), and every later step (dP − D, + λ, × p, × slope, × k, the two-term sums) adds a rounding
// or two, relative to the magnitude of its terms; the closed form's own std::exp, logistic and
// products add as many. 32u times the sum of the terms' magnitudes covers both.
double two_key_bound(double magnitude) { return 32 * kU * magnitude; }

TEST(BackwardTwoTokens, EqualScoresSplitEvenlyAndCancelInDq) {
  // z₁ = z₂ = ½: p = ½; g = 2, v = (3, −1): O = 1, dv_j = p g = 1, dz₁ = ½·2·(3 − 1) = 2, dz₂ = −2,
  // dq = 2·½ − 2·½ = 0, dk₁ = dz₁ q = 2, dk₂ = −2.
  TwoKeys t;
  t.k1 = t.k2 = 0.5;
  t.v1 = 3;
  t.v2 = -1;
  t.g = 2;
  const AttentionGradients r = t.run();
  // Both keys get the same bits of p, and G₁k₁ = −G₂k₂ exactly (k = ½): the chain is exactly 0.
  EXPECT_EQ(r.d_q.values[0], 0.0);
  EXPECT_NEAR(r.d_v.values[0], 1.0, two_key_bound(1));
  EXPECT_NEAR(r.d_v.values[1], 1.0, two_key_bound(1));
  EXPECT_NEAR(r.d_k.values[0], 2.0, two_key_bound(2 * 4));
  EXPECT_NEAR(r.d_k.values[1], -2.0, two_key_bound(2 * 4));
}

TEST(BackwardTwoTokens, DistinctScoresFollowTheLogistic) {
  // z₁ − z₂ = q(k₁ − k₂) = 1: p = logistic(1); values from the closed forms above.
  TwoKeys t;
  t.k1 = 1;
  t.k2 = 0;
  t.v1 = 1;
  t.v2 = -3;
  t.g = 1.5;
  t.lambda = 0.5;
  const AttentionGradients r = t.run();
  const double p = logistic(1.0), spread = p * (1 - p) * (t.v1 - t.v2);
  const double dz1 = t.g * spread + t.lambda * p, dz2 = -t.g * spread + t.lambda * (1 - p);
  const double magnitude = std::fabs(t.g) * (std::fabs(t.v1) + std::fabs(t.v2)) + std::fabs(t.lambda);
  EXPECT_NEAR(r.d_q.values[0], dz1 * t.k1 + dz2 * t.k2, two_key_bound(magnitude * (std::fabs(t.k1) + std::fabs(t.k2))));
  EXPECT_NEAR(r.d_k.values[0], dz1 * t.q, two_key_bound(magnitude));
  EXPECT_NEAR(r.d_k.values[1], dz2 * t.q, two_key_bound(magnitude));
  EXPECT_NEAR(r.d_v.values[0], p * t.g, two_key_bound(t.g));
  EXPECT_NEAR(r.d_v.values[1], (1 - p) * t.g, two_key_bound(t.g));
  // The sum over keys of dz is λ (Σ_j ∂O/∂z_j = 0, Σ_j p_j = 1): shift invariance.
  EXPECT_NEAR(r.d_k.values[0] + r.d_k.values[1], t.lambda * t.q, two_key_bound(2 * magnitude));
}

TEST(BackwardTwoTokens, SoftcapScalesBySlopeAndTheBiasGradientDoesNot) {
  // c = 2, s = (1.5, −0.5), bias β = (0.25, −0.75): z_j = 2 tanh(s_j/2) + β_j, p = logistic(z₁ − z₂);
  // dbias_j = dz_j, and dk_j = ds_j q = dz_j (1 − tanh²(s_j/2)) q: the bias sits after the cap.
  TwoKeys t;
  t.problem.softcap = 2;
  t.problem.mask = MaskKind::Additive;
  t.problem.mask_k_len = 2;
  t.mask = {0.25, -0.75};
  t.q = 1;
  t.k1 = 1.5;
  t.k2 = -0.5;
  t.v1 = 2;
  t.v2 = 0.5;
  t.g = -1;
  t.lambda = 0.25;
  const AttentionGradients r = t.run(true);
  const double t1 = std::tanh(t.k1 / 2), t2 = std::tanh(t.k2 / 2);
  const double p = logistic((2 * t1 + t.mask[0]) - (2 * t2 + t.mask[1])), spread = p * (1 - p) * (t.v1 - t.v2);
  const double dz1 = t.g * spread + t.lambda * p, dz2 = -t.g * spread + t.lambda * (1 - p);
  const double slope1 = 1 - t1 * t1, slope2 = 1 - t2 * t2;
  const double magnitude = std::fabs(t.g) * (std::fabs(t.v1) + std::fabs(t.v2)) + std::fabs(t.lambda);
  ASSERT_TRUE(r.d_bias.has_value());
  EXPECT_NEAR(r.d_bias->values[0], dz1, two_key_bound(magnitude));
  EXPECT_NEAR(r.d_bias->values[1], dz2, two_key_bound(magnitude));
  EXPECT_NEAR(r.d_k.values[0], dz1 * slope1 * t.q, two_key_bound(magnitude));
  EXPECT_NEAR(r.d_k.values[1], dz2 * slope2 * t.q, two_key_bound(magnitude));
  EXPECT_NEAR(r.d_q.values[0], dz1 * slope1 * t.k1 + dz2 * slope2 * t.k2, two_key_bound(magnitude * 2));
  // The slopes (0.60 and 0.94) are far enough from 1 that taking dbias through the cap would fail.
  EXPECT_GT(std::fabs(r.d_bias->values[0] - r.d_k.values[0] / t.q), 1e3 * two_key_bound(magnitude));
}

TEST(BackwardTwoTokens, AMaskedKeyGetsNothingAndTheOtherGetsEverything) {
  // Mask (true, false): p = (1, 0) exactly (LSE = z₁ + log 1 = z₁, e^0 = 1), O = v₁ exactly, so
  // dP₁ − D = g v₁ − g v₁ = 0 and dz₁ = λ exactly, dz₂ = 0. With σ = 1: dq = λ k₁ = 0.75·2 = 1.5,
  // dk₁ = λ q = 0.75·1.25 = 0.9375, dv₁ = g = −2.5, and key 2 gets exactly +0 — though its K and V
  // hold NaN and Inf, which must reach nothing.
  TwoKeys t;
  t.problem.mask = MaskKind::Boolean;
  t.problem.mask_k_len = 2;
  t.mask = {1.0, 0.0};
  t.q = 1.25;
  t.k1 = 2;
  t.k2 = kNaN;
  t.v1 = 3;
  t.v2 = kInf;
  t.g = -2.5;
  t.lambda = 0.75;
  const AttentionGradients r = t.run();
  EXPECT_EQ(r.d_q.values[0], 1.5);
  EXPECT_EQ(r.d_k.values[0], 0.9375);
  EXPECT_EQ(r.d_v.values[0], -2.5);
  EXPECT_EQ(std::bit_cast<std::uint64_t>(r.d_k.values[1]), 0u) << r.d_k.values[1] << " is not +0";
  EXPECT_EQ(std::bit_cast<std::uint64_t>(r.d_v.values[1]), 0u) << r.d_v.values[1] << " is not +0";
}

TEST(BackwardTwoTokens, AnEmptyRowContributesNothingWhateverItsLossHolds) {
  // Both keys masked: LSE = −inf, and dO = NaN, dLSE = Inf must be ignored: every gradient +0.
  TwoKeys t;
  t.problem.mask = MaskKind::Boolean;
  t.problem.mask_k_len = 2;
  t.mask = {0.0, 0.0};
  t.k1 = 1;
  t.k2 = 2;
  t.v1 = 3;
  t.v2 = 4;
  t.g = kNaN;
  t.lambda = kInf;
  const AttentionGradients r = t.run();
  for (const HostTensor* x : {&r.d_q, &r.d_k, &r.d_v})
    for (const double value : x->values) EXPECT_EQ(std::bit_cast<std::uint64_t>(value), 0u) << value;
}

TEST(BackwardTwoTokens, TheLseGradientAloneWeighsTheKeysByP) {
  // g = 0, λ = 1: dz_j = p_j, so dq = p k₁ + (1 − p) k₂ with z₁ − z₂ = 2·(1 − 0.5) = 1, and dv = 0
  // exactly (P·0).
  TwoKeys t;
  t.q = 2;
  t.k1 = 1;
  t.k2 = 0.5;
  t.v1 = 7;
  t.v2 = -7;
  t.g = 0;
  t.lambda = 1;
  const AttentionGradients r = t.run();
  const double p = logistic(1.0);
  EXPECT_NEAR(r.d_q.values[0], p * t.k1 + (1 - p) * t.k2, two_key_bound(1.5));
  EXPECT_NEAR(r.d_k.values[0], p * t.q, two_key_bound(2));
  EXPECT_NEAR(r.d_k.values[1], (1 - p) * t.q, two_key_bound(2));
  EXPECT_EQ(r.d_v.values[0], 0.0);
  EXPECT_EQ(r.d_v.values[1], 0.0);
}

TEST(BackwardTwoTokens, ScaleZeroMakesTheScoresConstant) {
  // σ = 0: s = 0·q·k = 0 for any q and k, so f does not depend on them: dq = dk = 0 exactly; p = ½
  // and dv_j = g/2.
  TwoKeys t;
  t.problem.scale = 0.0;
  t.q = 3;
  t.k1 = -1;
  t.k2 = 2;
  t.v1 = 1;
  t.v2 = 5;
  t.g = 3;
  t.lambda = 0.5;
  const AttentionGradients r = t.run();
  EXPECT_EQ(r.d_q.values[0], 0.0);
  EXPECT_EQ(r.d_k.values[0], 0.0);
  EXPECT_EQ(r.d_k.values[1], 0.0);
  EXPECT_NEAR(r.d_v.values[0], 1.5, two_key_bound(3));
  EXPECT_NEAR(r.d_v.values[1], 1.5, two_key_bound(3));
}

// ---------------------------------------------------------------------------------------------
// 3. Plain loops.
//
// The agreement bound. The reference and the plain loops compute the same real numbers from the
// same O and LSE, in different orders and with different exp and tanh (backward.cpp's own, within
// 1–2 ulp, against libm's). Per allowed key of row i:
//  - z differs by at most ~(Dk + 3)·u·(a_i + |z|) (the dot product's chain, the scale, the cap,
//    the bias sum; a_i = max_j |σ|Σ_l|q_l k_jl|), so p = e^{z − LSE} differs relatively by
//    ~(Dk + 5)·u·R_i with R_i = 1 + a_i + max_j|z_ij| + |LSE_i|;
//  - dz = p(dP − D + dLSE) then differs by at most ~(Dk + Dv + 8)·u·R_i·p(Σ|dO||V_j| + Σ|dO||O| + |dLSE|)
//    = (Dk + Dv + 8)·u·dz_scale, the two dot products' chains included;
//  - ds = dz·slope adds the slope's error, under 10u absolute (t to 2 ulp, 1 − t² one rounding):
//    ds_scale = dz_scale·(slope + 0.01) holds it with 1e-12·0.01 = 10⁻¹⁴ > 10u to spare;
//  - dQ, dK, dV and dBias are sums over at most 40 keys or 9·40 rows of those terms, each
//    summation adding γ_n ≤ 360u of its terms' magnitudes.
// So the difference is below ~400u ≈ 5·10⁻¹⁴ of the matching plain_backward.h scale; the test
// asks for 10⁻¹², 20 times that, while a dropped term, a wrong slope or a wrong group sum is off
// by a good part of the scale itself.
constexpr double kBackwardAgreement = 1e-12;

struct BackwardAgreement {
  double worst_ratio = 0;  // max |ref − plain| / (kBackwardAgreement · scale)
  std::int64_t elements = 0;
};

void expect_gradient_agreement(const std::string& name, const HostTensor& ref, const HostTensor& plain,
                               const HostTensor& scale, const std::string& context, BackwardAgreement& report) {
  ASSERT_EQ(ref.shape, plain.shape) << context << ": " << name;
  int failures = 0;
  for (std::size_t e = 0; e < ref.values.size(); ++e) {
    const double bound = kBackwardAgreement * scale.values[e] + std::numeric_limits<double>::min();
    const double diff = std::fabs(ref.values[e] - plain.values[e]);
    report.worst_ratio = std::max(report.worst_ratio, diff / bound);
    ++report.elements;
    if (diff > bound && failures++ < 3)
      ADD_FAILURE() << context << ": " << name << " element " << e << " is " << ref.values[e] << ", plain loops "
                    << plain.values[e] << " (bound " << bound << ")";
  }
}

void expect_agrees_with_plain(const GradientCase& g, const std::string& context, BackwardAgreement& report) {
  const AttentionGradients ref = run_backward(g);
  const PlainGradients plain = plain_attention_backward(g.c.problem, g.c.inputs(), g.backward());
  expect_gradient_agreement("dQ", ref.d_q, plain.d_q, plain.d_q_scale, context, report);
  expect_gradient_agreement("dK", ref.d_k, plain.d_k, plain.d_k_scale, context, report);
  expect_gradient_agreement("dV", ref.d_v, plain.d_v, plain.d_v_scale, context, report);
  if (g.c.problem.mask == MaskKind::Additive) {
    ASSERT_TRUE(ref.d_bias.has_value()) << context;
    expect_gradient_agreement("dBias", *ref.d_bias, plain.d_bias, plain.d_bias_scale, context, report);
  }
}

TEST(BackwardVsPlain, AgreesOnRandomProblemsOverEveryOption) {
  std::mt19937_64 rng(20261203);
  BackwardAgreement report;
  std::map<std::string, int> seen;  // coverage: the test must not pass vacuously
  std::int64_t empty_rows = 0;
  for (int n = 0; n < 300; ++n) {
    const GradientCase g = with_loss(make_random_case(rng), rng);
    const Problem& p = g.c.problem;
    expect_agrees_with_plain(g, fmt::format("case {}: {}", n, g.describe()), report);

    for (const double lse : g.forward.lse.values) empty_rows += lse == -kInf;
    seen[fmt::format("causal {}", alignment_name(p.alignment))] += p.causal;
    seen[fmt::format("window {}", alignment_name(p.alignment))] += p.has_window();
    seen[fmt::format("mask {}", mask_kind_name(p.mask))] += 1;
    seen["short mask"] += p.mask != MaskKind::None && p.mask_k_len < p.k_len;
    seen["bias broadcast over batch"] += p.mask == MaskKind::Additive && p.mask_batch < p.batch;
    seen["bias broadcast over heads"] += p.mask == MaskKind::Additive && p.mask_heads < p.q_heads;
    seen["bias broadcast over queries"] += p.mask == MaskKind::Additive && p.mask_q_len < p.q_len;
    seen["softcap"] += p.softcap > 0;
    seen["custom scale"] += p.scale.has_value();
    seen["GQA"] += p.kv_heads > 1 && p.group_size() > 1;
    seen["MQA"] += p.kv_heads == 1 && p.q_heads > 1;
    seen["Dk != Dv"] += p.qk_dim != p.v_dim;
    seen["key length 0"] += std::count(g.c.key_lengths.begin(), g.c.key_lengths.end(), 0) > 0;
    seen["key length 1"] += std::count(g.c.key_lengths.begin(), g.c.key_lengths.end(), 1) > 0 || p.k_len == 1;
    seen["row_block < Lq"] += g.c.options.row_block < p.q_len;
    seen["dLSE"] += g.has_d_lse;
    seen["sequence-major"] += g.c.layout.find("BLHD") != std::string::npos;
    seen["gap layout"] += g.c.layout.find("gap") != std::string::npos;
  }
  for (const auto& [what, count] : seen) EXPECT_GT(count, 0) << "no random problem covered: " << what;
  EXPECT_GT(empty_rows, 100) << "empty rows must be well represented";
  std::printf("largest |ref - plain| / (1e-12 scale): %.3g over %lld gradient elements (%lld empty rows)\n",
              report.worst_ratio, static_cast<long long>(report.elements), static_cast<long long>(empty_rows));
}

TEST(BackwardVsPlain, AgreesOnEdgeCases) {
  // Scale 0 (dQ = dK = 0), one key, key lengths 0 and 1 in one batch, one query row, MQA with a
  // bias broadcast everywhere, every key of a long row behind a short mask.
  const char* const problems[] = {
      "B=2 Hq=4 Hkv=2 Lq=5 Lk=6 Dk=3 Dv=2 scale=0 mask=bias:2x4x5x6",
      "B=2 Hq=2 Hkv=1 Lq=4 Lk=1 Dk=2 Dv=3 causal=1 align=bottom-right",
      "B=3 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=2 Dv=2 keylens=1 causal=1 align=key-lengths mask=bias:1x1x1x5",
      "B=1 Hq=8 Hkv=1 Lq=1 Lk=33 Dk=4 Dv=4 mask=bias:1x1x1x1 softcap=1",
      "B=2 Hq=6 Hkv=3 Lq=37 Lk=29 Dk=5 Dv=3 window=3,2 align=offset offset=4 mask=bias:1x6x37x20",
  };
  std::mt19937_64 rng(5);
  BackwardAgreement report;
  for (const char* text : problems) {
    RandomCase c = make_random_inputs(parse_problem(text), rng);
    if (c.problem.has_key_lengths) c.key_lengths = {0, 1, 5};
    c.options.row_block = 4;
    c.options.threads = 2;
    const GradientCase g = with_loss(std::move(c), rng);
    expect_agrees_with_plain(g, g.describe(), report);
    if (!g.c.problem.scale || *g.c.problem.scale != 0) continue;
    const AttentionGradients r = run_backward(g);
    for (const HostTensor* x : {&r.d_q, &r.d_k})
      for (const double value : x->values) EXPECT_EQ(value, 0.0) << "scale 0: " << g.describe();
  }
  EXPECT_GT(report.elements, 1000);
}

// ---------------------------------------------------------------------------------------------
// 4. Reproducibility: the expected value of each run is the baseline build's single-threaded run
// with the default row block; the claim under test is equality, so no tolerance enters.

std::string first_difference(std::string_view name, const HostTensor& a, const HostTensor& b) {
  if (a.shape != b.shape) return fmt::format("{}: shape {} vs {}", name, shape_string(a.shape), shape_string(b.shape));
  for (std::size_t e = 0; e < a.values.size(); ++e)
    if (std::bit_cast<std::uint64_t>(a.values[e]) != std::bit_cast<std::uint64_t>(b.values[e]))
      return fmt::format("{}: element {} is {:a} vs {:a}", name, e, a.values[e], b.values[e]);
  return {};
}

std::string first_difference(const AttentionGradients& a, const AttentionGradients& b) {
  std::string d = first_difference("dQ", a.d_q, b.d_q);
  if (d.empty()) d = first_difference("dK", a.d_k, b.d_k);
  if (d.empty()) d = first_difference("dV", a.d_v, b.d_v);
  if (d.empty() && a.d_bias.has_value() != b.d_bias.has_value()) d = "dBias: present in one run only";
  if (d.empty() && a.d_bias) d = first_difference("dBias", *a.d_bias, *b.d_bias);
  return d;
}

TEST(BackwardReproducibility, EveryThreadCountRowBlockAndIsaGivesTheSameBits) {
  std::mt19937_64 rng(20261204);
  for (int trial = 0; trial < 100; ++trial) {
    const GradientCase g = with_loss(make_random_case(rng), rng);
    BackwardOptions options = g.options();
    options.isa = ReferenceIsa::Baseline;
    options.threads = 1;
    options.row_block = 128;
    const AttentionGradients expected = reference_attention_backward(g.c.problem, g.c.inputs(), g.backward(), options);
    for (const ReferenceIsa isa : supported_reference_isas())
      for (const int threads : {1, 2, 3})
        for (const std::int64_t row_block : {1, 7, 128}) {
          options.isa = isa;
          options.threads = threads;
          options.row_block = row_block;
          const AttentionGradients got = reference_attention_backward(g.c.problem, g.c.inputs(), g.backward(), options);
          ASSERT_EQ(first_difference(got, expected), "")
              << g.describe() << " with isa " << to_string(isa) << ", " << threads << " threads, row block "
              << row_block;
        }
  }
}

// ---------------------------------------------------------------------------------------------
// The conventions of backward.h.

TEST(BackwardConventions, NonFinitePaddingAndTheLossOfEmptyRowsReachNothing) {
  // Keys past each batch row's key length, and keys a boolean padding mask hides from every row
  // (which lie inside the rows' key ranges), hold NaN and ±Inf in K and V; the dO and dLSE of the
  // rows that see no key hold NaN. With softcap, the slope 1 − tanh² of a hidden key's NaN score
  // is NaN too. The gradients must be those of the same problem with zeros
  // there, bit for bit, and the padded keys' dK and dV exactly +0.
  const Problem p =
      parse_problem("B=2 Hq=4 Hkv=2 Lq=5 Lk=7 Dk=3 Dv=2 softcap=3 keylens=1 causal=1 align=key-lengths "
                    "mask=bool:2x1x1x7");
  std::mt19937_64 rng(17);
  RandomCase clean = make_random_inputs(p, rng, 0.0);
  clean.key_lengths = {6, 3};
  const double hidden[2][7] = {{1, 0, 1, 1, 0, 1, 1}, {1, 1, 0, 1, 1, 1, 1}};  // 0: hidden from every row
  RandomCase poisoned = make_random_inputs(p, rng, 0.0);
  poisoned.key_lengths = clean.key_lengths;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t j = 0; j < p.k_len; ++j) {
      stored_element(clean.mask_laid, {b, 0, 0, j}) = hidden[b][j];
      stored_element(poisoned.mask_laid, {b, 0, 0, j}) = hidden[b][j];
    }
  const double poison[] = {kNaN, kInf, -kInf};
  auto is_padding = [&](std::int64_t b, std::int64_t j) {
    return j >= clean.key_lengths[static_cast<std::size_t>(b)] || hidden[b][j] == 0;
  };
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.kv_heads; ++h)
      for (std::int64_t j = 0; j < p.k_len; ++j) {
        const bool padded = is_padding(b, j);
        for (std::int64_t l = 0; l < p.qk_dim; ++l) {
          stored_element(clean.k_laid, {b, h, j, l}) = padded ? 0.0 : clean.k(b, h, j, l);
          stored_element(poisoned.k_laid, {b, h, j, l}) = padded ? poison[(j + l) % 3] : clean.k(b, h, j, l);
        }
        for (std::int64_t c = 0; c < p.v_dim; ++c) {
          stored_element(clean.v_laid, {b, h, j, c}) = padded ? 0.0 : clean.v(b, h, j, c);
          stored_element(poisoned.v_laid, {b, h, j, c}) = padded ? poison[(j + c + 1) % 3] : clean.v(b, h, j, c);
        }
      }
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t l = 0; l < p.qk_dim; ++l) stored_element(poisoned.q_laid, {b, h, i, l}) = clean.q(b, h, i, l);

  const AttentionResult forward = reference_attention(p, clean.inputs());
  const HostTensor d_out = random_tensor(forward.out.shape, rng), d_lse = random_tensor(forward.lse.shape, rng);
  HostTensor poisoned_d_out = d_out, poisoned_d_lse = d_lse;
  std::int64_t empty_rows = 0;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        if (forward.lse(0, b, h, i) != -kInf) continue;
        ++empty_rows;
        poisoned_d_lse(0, b, h, i) = kNaN;
        for (std::int64_t c = 0; c < p.v_dim; ++c) poisoned_d_out(b, h, i, c) = kNaN;
      }
  ASSERT_GT(empty_rows, 0) << "causal with key lengths 6 and 3 over 5 queries leaves rows empty";

  const AttentionGradients expected =
      reference_attention_backward(p, clean.inputs(), backward_inputs(forward, d_out.view(), d_lse.view()));
  const AttentionGradients got = reference_attention_backward(
      p, poisoned.inputs(), backward_inputs(forward, poisoned_d_out.view(), poisoned_d_lse.view()));
  EXPECT_EQ(first_difference(got, expected), "");
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.kv_heads; ++h)
      for (std::int64_t j = 0; j < p.k_len; ++j) {
        if (!is_padding(b, j)) continue;
        for (std::int64_t l = 0; l < p.qk_dim; ++l) EXPECT_EQ(std::bit_cast<std::uint64_t>(got.d_k(b, h, j, l)), 0u);
        for (std::int64_t c = 0; c < p.v_dim; ++c) EXPECT_EQ(std::bit_cast<std::uint64_t>(got.d_v(b, h, j, c)), 0u);
      }
}

TEST(BackwardConventions, ANanRowPoisonsItsOwnGradientsOnly) {
  // A NaN in one query row makes that row's O and LSE NaN (reference.h); its dQ row and the dK and
  // dV of the keys it attends are NaN, and nothing else is: another kv head and the other batch
  // row stay finite.
  const Problem p = parse_problem("B=2 Hq=2 Hkv=2 Lq=3 Lk=4 Dk=2 Dv=2");
  std::mt19937_64 rng(23);
  RandomCase c = make_random_inputs(p, rng, 0.0);
  stored_element(c.q_laid, {0, 0, 1, 0}) = kNaN;
  const AttentionResult forward = reference_attention(p, c.inputs());
  const HostTensor d_out = random_tensor(forward.out.shape, rng);
  const AttentionGradients r = reference_attention_backward(p, c.inputs(), backward_inputs(forward, d_out.view()));
  for (std::int64_t i = 0; i < p.q_len; ++i)
    for (std::int64_t l = 0; l < p.qk_dim; ++l) EXPECT_EQ(std::isnan(r.d_q(0, 0, i, l)), i == 1) << i << ", " << l;
  for (std::int64_t j = 0; j < p.k_len; ++j) {
    EXPECT_TRUE(std::isnan(r.d_k(0, 0, j, 0)) && std::isnan(r.d_v(0, 0, j, 0))) << "key " << j;
    EXPECT_TRUE(std::isfinite(r.d_k(0, 1, j, 0)) && std::isfinite(r.d_k(1, 0, j, 0))) << "key " << j;
  }
}

// ---------------------------------------------------------------------------------------------
// Validation: the message is the interface (it names the tensor, the dimension, what was
// expected and what was given).

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ProblemError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(BackwardValidation, ErrorsNameTheTensorAndTheDimension) {
  const Problem p = parse_problem("B=2 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=2 Dv=3 mask=bool:1x1x1x5");
  const HostTensor q({2, 4, 3, 2}), k({2, 2, 5, 2}), v({2, 2, 5, 3}), mask({1, 1, 1, 5}, 1.0);
  const HostTensor out({2, 4, 3, 3}), lse({1, 2, 4, 3}), wrong_out({2, 4, 3, 4}), wrong_lse({2, 2, 4, 3});
  const AttentionInputs in{q.view(), k.view(), v.view(), mask.view(), {}};
  const BackwardInputs good{out.view(), lse.view(), out.view(), lse.view()};
  auto backward_error = [&](const AttentionInputs& inputs, const BackwardInputs& backward,
                            BackwardOptions options = {}) {
    return error_of([&] { reference_attention_backward(p, inputs, backward, options); });
  };
  EXPECT_EQ(backward_error(in, good), "(no error)");
  EXPECT_EQ(backward_error({q.view(), v.view(), v.view(), mask.view(), {}}, good),
            "K: dim 3 (head dim) is 3, but the problem expects 2 (shape [2, 2, 5, 3] vs [2, 2, 5, 2])");
  EXPECT_EQ(backward_error(in, {{}, lse.view(), out.view(), {}}), "O: is missing (no data)");
  EXPECT_EQ(backward_error(in, {out.view(), wrong_lse.view(), out.view(), {}}),
            "LSE: dim 0 (unit) is 2, but the problem expects 1 (shape [2, 2, 4, 3] vs [1, 2, 4, 3])");
  EXPECT_EQ(backward_error(in, {out.view(), lse.view(), wrong_out.view(), {}}),
            "dO: dim 3 (value dim) is 4, but the problem expects 3 (shape [2, 4, 3, 4] vs [2, 4, 3, 3])");
  EXPECT_EQ(backward_error(in, {out.view(), lse.view(), {}, {}}), "dO: is missing (no data)");
  EXPECT_EQ(backward_error(in, {out.view(), lse.view(), out.view(), out.view()}),
            "dLSE: dim 0 (unit) is 2, but the problem expects 1 (shape [2, 4, 3, 3] vs [1, 2, 4, 3])");
  BackwardOptions bias;
  bias.bias_gradient = true;
  EXPECT_EQ(backward_error(in, good, bias),
            "dBias: is asked for, but the problem's mask kind is bool (only an additive mask has a gradient)");
  BackwardOptions no_rows;
  no_rows.row_block = 0;
  EXPECT_EQ(backward_error(in, good, no_rows), "row_block: is 0, but must be at least 1");
}

}  // namespace
}  // namespace attncheck::testing
