// ALiBi and attention sinks (problem.h) against independent formulations of the same function:
// ALiBi as the explicit additive bias −slope·|j − p| it is defined to be, a sink as one more key
// of score σ and value 0; plus hand-derived values and the inputs' validation.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <random>

#include "attncheck/backward.h"
#include "attncheck/reference.h"
#include "random_case.h"

namespace attncheck::testing {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

bool same_bits(double a, double b) { return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b); }

ReferenceOptions with_stats() {
  ReferenceOptions o;
  o.row_statistics = true;
  return o;
}

// ---- hand-derived values -------------------------------------------------------------------

// One query, two keys with equal raw scores (q = 0), V = [1, 0]: ALiBi slope 1 with the diagonal
// at key 0 (top-left, i = 0) biases the keys by 0 and −1, so O = 1 / (1 + e^{-1}) and
// LSE = log(1 + e^{-1}).
TEST(Alibi, TwoKeysByHand) {
  Problem p = Problem::of_shape(1, 1, 1, 1, 2, 1, 1);
  p.alibi = AlibiSlopes::PerHead;
  HostTensor q({1, 1, 1, 1}, 0.0), k({1, 1, 2, 1}, 1.0), v({1, 1, 2, 1});
  v(0, 0, 0, 0) = 1.0;
  const std::vector<double> slopes{1.0};
  AttentionInputs in{q.view(), k.view(), v.view(), {}, {}, slopes, {}};
  const AttentionResult r = reference_attention(p, in);
  EXPECT_NEAR(r.out(0, 0, 0, 0), 1.0 / (1.0 + std::exp(-1.0)), 1e-16);
  EXPECT_NEAR(r.lse(0, 0, 0, 0), std::log1p(std::exp(-1.0)), 1e-16);
  // Bottom-right with Lq = 1, Lk = 2 puts the diagonal at key 1: the biases swap, O = e^{-1}/(1 + e^{-1}).
  p.alignment = Alignment::BottomRight;
  EXPECT_NEAR(reference_attention(p, in).out(0, 0, 0, 0), std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-16);
}

// One key of score 0 and value 1 with a sink σ = 0: Z = e^0 + e^0 = 2, O = 1/2, LSE = log 2. A
// key length of 0 leaves the sink alone: O = 0, LSE = σ = 0. A sink of −inf is no sink: O = 1.
TEST(Sinks, OneKeyByHand) {
  Problem p = Problem::of_shape(2, 1, 1, 1, 1, 1, 1);
  p.sinks = true;
  p.has_key_lengths = true;
  HostTensor q({2, 1, 1, 1}, 0.0), k({2, 1, 1, 1}, 1.0), v({2, 1, 1, 1}, 1.0);
  const std::vector<std::int64_t> lengths{1, 0};
  std::vector<double> sinks{0.0};
  AttentionInputs in{q.view(), k.view(), v.view(), {}, lengths, {}, sinks};
  const AttentionResult r = reference_attention(p, in, with_stats());
  EXPECT_EQ(r.out(0, 0, 0, 0), 0.5);
  EXPECT_EQ(r.lse(0, 0, 0, 0), std::log(2.0));
  EXPECT_EQ(r.out(1, 0, 0, 0), 0.0);
  EXPECT_EQ(r.lse(0, 1, 0, 0), 0.0);
  // The sink counts as a key in the row statistics: 2 and 1 (the sink alone is not an empty row).
  EXPECT_EQ(r.stats->allowed_keys(0, 0, 0, 0), 2.0);
  EXPECT_EQ(r.stats->allowed_keys(0, 1, 0, 0), 1.0);
  sinks[0] = kNegInf;
  const AttentionResult none = reference_attention(p, in, with_stats());
  EXPECT_EQ(none.out(0, 0, 0, 0), 1.0);
  EXPECT_EQ(none.lse(0, 1, 0, 0), kNegInf);
  EXPECT_EQ(none.stats->allowed_keys(0, 1, 0, 0), 0.0);
}

// ---- independent formulations --------------------------------------------------------------

std::vector<double> random_values(std::mt19937_64& rng, std::size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> x(n);
  for (double& e : x) e = static_cast<double>(static_cast<float>(u(rng)));  // float32, as the ABI carries them
  return x;
}

// ALiBi equals the additive mask [B, Hq, Lq, Lk] holding −slope·|j − p(b, i)|. The reference adds
// the one value or the other the same way (s + (−x) and s − x are the same IEEE operation), so the
// two agree bitwise, O, LSE and the score stages, over random problems with every other option.
TEST(Alibi, EqualsTheExplicitBiasBitwise) {
  std::mt19937_64 rng(20261202);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    RandomCase c = make_random_case(rng);
    Problem p = c.problem;
    if (p.mask == MaskKind::Additive) continue;  // the explicit form needs the mask slot for ALiBi alone
    const bool boolean = p.mask == MaskKind::Boolean;
    p.alibi = trial % 2 == 0 ? AlibiSlopes::PerHead : AlibiSlopes::PerBatchHead;
    const std::vector<double> slopes = random_values(rng, static_cast<std::size_t>(p.alibi_slope_count()), 0.0, 1.0);
    AttentionInputs in = c.inputs();
    in.alibi_slopes = slopes;

    Problem e = c.problem;
    e.mask = MaskKind::Additive;
    e.mask_batch = p.batch, e.mask_heads = p.q_heads, e.mask_q_len = p.q_len, e.mask_k_len = boolean ? p.mask_k_len : p.k_len;
    HostTensor bias({p.batch, p.q_heads, p.q_len, e.mask_k_len});
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const std::int64_t len = p.has_key_lengths ? c.key_lengths[static_cast<size_t>(b)] : p.k_len;
      for (std::int64_t h = 0; h < p.q_heads; ++h) {
        const double slope = slopes[static_cast<size_t>(p.alibi == AlibiSlopes::PerHead ? h : b * p.q_heads + h)];
        for (std::int64_t i = 0; i < p.q_len; ++i)
          for (std::int64_t j = 0; j < e.mask_k_len; ++j) {
            const bool masked = boolean && in.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h,
                                                   p.mask_q_len == 1 ? 0 : i, j) == 0.0;
            bias(b, h, i, j) = masked ? kNegInf : -slope * static_cast<double>(std::abs(j - p.diagonal_key(i, len)));
          }
      }
    }
    AttentionInputs explicit_in = c.inputs();
    explicit_in.mask = bias.view();
    ReferenceOptions options = c.options;
    options.score_stages = p.q_len * p.k_len <= 400;
    const AttentionResult a = reference_attention(p, in, options), x = reference_attention(e, explicit_in, options);
    const std::string what = fmt::format("trial {}: {}", trial, p.describe());
    for (size_t n = 0; n < a.out.values.size(); ++n)
      ASSERT_TRUE(same_bits(a.out.values[n], x.out.values[n])) << what << ": O at " << n;
    for (size_t n = 0; n < a.lse.values.size(); ++n)
      ASSERT_TRUE(same_bits(a.lse.values[n], x.lse.values[n])) << what << ": LSE at " << n;
    if (a.scores) {
      for (size_t n = 0; n < a.scores->biased.values.size(); ++n)
        ASSERT_TRUE(same_bits(a.scores->biased.values[n], x.scores->biased.values[n])) << what << ": score at " << n;
    }
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

// A sink equals one more key, first so that key lengths keep it, whose raw score is 0 (K = 0),
// whose additive bias is σ_h and whose value is 0, the original keys biased by 0. Not bitwise:
// the sink's term joins Z after the keys' sum, the extra key's at its start. Causal and windows
// are left out (they would measure the diagonal from the shifted keys); so is a mask, whose slot
// the extra key needs. Compared to 1e-14 relative; the gradients too (P from each LSE).
TEST(Sinks, EqualOneExtraKey) {
  std::mt19937_64 rng(20261203);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    Problem stripped = make_random_case(rng).problem;
    stripped.mask = MaskKind::None;
    stripped.mask_batch = stripped.mask_heads = stripped.mask_q_len = stripped.mask_k_len = 1;
    stripped.causal = false;
    stripped.window_left = stripped.window_right = -1;
    stripped.alignment = Alignment::TopLeft;
    stripped.diagonal_offset = 0;
    const RandomCase c = make_random_inputs(stripped, rng);
    Problem p = c.problem;
    p.sinks = true;
    std::vector<double> sinks = random_values(rng, static_cast<std::size_t>(p.q_heads), -4.0, 4.0);
    if (trial % 5 == 0) sinks[0] = kNegInf;  // no sink on that head: the extra key is masked
    const HostTensor q = c.q, k = c.k, v = c.v;  // compact logical copies
    AttentionInputs in{q.view(), k.view(), v.view(), {}, c.key_lengths, {}, sinks};

    Problem e = c.problem;
    e.k_len = p.k_len + 1;
    e.mask = MaskKind::Additive;
    e.mask_batch = 1, e.mask_heads = p.q_heads, e.mask_q_len = 1, e.mask_k_len = e.k_len;
    HostTensor ek({p.batch, p.kv_heads, e.k_len, p.qk_dim}), ev({p.batch, p.kv_heads, e.k_len, p.v_dim});
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t g = 0; g < p.kv_heads; ++g)
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          for (std::int64_t l = 0; l < p.qk_dim; ++l) ek(b, g, j + 1, l) = k(b, g, j, l);
          for (std::int64_t l = 0; l < p.v_dim; ++l) ev(b, g, j + 1, l) = v(b, g, j, l);
        }
    HostTensor bias({1, p.q_heads, 1, e.k_len}, 0.0);
    for (std::int64_t h = 0; h < p.q_heads; ++h) bias(0, h, 0, 0) = sinks[static_cast<size_t>(h)];
    std::vector<std::int64_t> lengths = c.key_lengths;
    for (auto& len : lengths) len += 1;
    const AttentionInputs explicit_in{q.view(), ek.view(), ev.view(), bias.view(), lengths, {}, {}};

    const AttentionResult a = reference_attention(p, in), x = reference_attention(e, explicit_in);
    const std::string what = fmt::format("trial {}: {}", trial, p.describe());
    auto close = [](double u, double w) { return u == w || std::fabs(u - w) <= 1e-14 * std::max(1.0, std::fabs(w)); };
    for (size_t n = 0; n < a.out.values.size(); ++n)
      ASSERT_TRUE(close(a.out.values[n], x.out.values[n])) << what << ": O at " << n << ": " << a.out.values[n] << " vs "
                                                         << x.out.values[n];
    for (size_t n = 0; n < a.lse.values.size(); ++n)
      ASSERT_TRUE(close(a.lse.values[n], x.lse.values[n])) << what << ": LSE at " << n;

    // The backward of both, each at its own O and LSE: dQ equal; dK, dV of the original keys
    // equal to the extra-key problem's keys 1..Lk.
    HostTensor d_out({p.batch, p.q_heads, p.q_len, p.v_dim});
    for (double& g : d_out.values) g = std::uniform_real_distribution<double>(-1, 1)(rng);
    const AttentionGradients ga = reference_attention_backward(p, in, backward_inputs(a, d_out.view()));
    const AttentionGradients gx = reference_attention_backward(e, explicit_in, backward_inputs(x, d_out.view()));
    auto close_grad = [](double u, double w) { return u == w || std::fabs(u - w) <= 1e-12 * std::max(1.0, std::fabs(w)); };
    for (size_t n = 0; n < ga.d_q.values.size(); ++n)
      ASSERT_TRUE(close_grad(ga.d_q.values[n], gx.d_q.values[n])) << what << ": dQ at " << n;
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t g = 0; g < p.kv_heads; ++g)
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          for (std::int64_t l = 0; l < p.qk_dim; ++l)
            ASSERT_TRUE(close_grad(ga.d_k(b, g, j, l), gx.d_k(b, g, j + 1, l))) << what << ": dK";
          for (std::int64_t l = 0; l < p.v_dim; ++l)
            ASSERT_TRUE(close_grad(ga.d_v(b, g, j, l), gx.d_v(b, g, j + 1, l))) << what << ": dV";
        }
    ++checked;
  }
  EXPECT_EQ(checked, 300);
}

// ---- validation ----------------------------------------------------------------------------

TEST(InferenceOptions, InputsAreValidated) {
  Problem p = Problem::of_shape(2, 3, 1, 1, 2, 1, 1);
  HostTensor q({2, 3, 1, 1}, 0.0), k({2, 1, 2, 1}), v({2, 1, 2, 1});
  const std::vector<double> three(3, 0.5), six(6, 0.5);
  auto message = [&](const Problem& problem, std::span<const double> slopes, std::span<const double> sinks) {
    try {
      reference_attention(problem, {q.view(), k.view(), v.view(), {}, {}, slopes, sinks});
    } catch (const ProblemError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  p.alibi = AlibiSlopes::PerBatchHead;
  EXPECT_EQ(message(p, three, {}), "alibi_slopes: has 3 elements, but the problem (alibi=batch-head) expects 6");
  EXPECT_EQ(message(p, six, {}), "no error");
  const std::vector<double> nan_slope{0.5, NAN, 0.5, 0.5, 0.5, 0.5};
  EXPECT_EQ(message(p, nan_slope, {}), "alibi_slopes: element 1 is nan, but slopes must be finite");
  p.alibi = AlibiSlopes::None;
  EXPECT_EQ(message(p, three, {}), "alibi_slopes: has 3 elements, but the problem (alibi=none) expects 0");
  p.sinks = true;
  EXPECT_EQ(message(p, {}, {}), "sinks: has 0 elements, but the problem expects 3 (one per query head)");
  const std::vector<double> bad_sink{0.0, INFINITY, 0.0};
  EXPECT_EQ(message(p, {}, bad_sink), "sinks: element 1 is inf, but a sink logit must be finite or -inf (no sink)");
}

TEST(InferenceOptions, DescribeAndParseRoundTrip) {
  Problem p = Problem::of_shape(2, 4, 2, 3, 5, 8, 8);
  p.alibi = AlibiSlopes::PerBatchHead;
  p.sinks = true;
  EXPECT_EQ(p.describe(), "B=2 Hq=4 Hkv=2 Lq=3 Lk=5 Dk=8 Dv=8 alibi=batch-head sinks=1");
  EXPECT_EQ(parse_problem(p.describe()), p);
  EXPECT_THROW(parse_problem("B=1 alibi=rows"), ProblemError);
}

// Descales (problem.h): two keys by hand. q = 2 (factor 1/4, so Q = 1/2), k = (1, 3) (factor 2,
// so K = (2, 6)), v = (4, 8) (factor 1/2, so V = (2, 4)), scale 1: s = (1, 3),
// p = (1, e²)/(1 + e²), O = (2 + 4e²)/(1 + e²), LSE = log(e + e³).
TEST(Descale, TwoKeysByHand) {
  Problem p = Problem::of_shape(1, 1, 1, 1, 2, 1, 1);
  p.scale = 1.0;
  p.descale = Descale::PerTensor;
  HostTensor q({1, 1, 1, 1}), k({1, 1, 2, 1}), v({1, 1, 2, 1});
  q.values = {2};
  k.values = {1, 3};
  v.values = {4, 8};
  const std::vector<double> dq{0.25}, dk{2}, dv{0.5};
  AttentionInputs in{q.view(), k.view(), v.view(), {}, {}, {}, {}, {}, {}, {}, {}, {}};
  in.q_descale = dq, in.k_descale = dk, in.v_descale = dv;
  const AttentionResult r = reference_attention(p, in);
  const double e2 = std::exp(2.0);
  EXPECT_NEAR(r.out(0, 0, 0, 0), (2 + 4 * e2) / (1 + e2), 1e-15);
  EXPECT_NEAR(r.lse(0, 0, 0, 0), std::log(std::exp(1.0) + std::exp(3.0)), 1e-15);
}

// Per (batch, kv head) factors against the explicit dequantization: each stored value times the
// factor of its batch row and kv head (query head h reads kv head h / (Hq / Hkv)), written here
// element by element and run without descales, gives the same bits.
TEST(Descale, PerHeadEqualsExplicitDequantization) {
  Problem p = Problem::of_shape(2, 4, 2, 3, 5, 4, 3);
  p.causal = true;
  p.descale = Descale::PerHead;
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> code(-28, 28);
  const auto fill = [&](HostTensor& t) {
    for (double& x : t.values) x = code(rng) / 8.0;  // multiples of 1/8 up to 3.5: e4m3 values
  };
  HostTensor q({2, 4, 3, 4}), k({2, 2, 5, 4}), v({2, 2, 5, 3});
  fill(q), fill(k), fill(v);
  std::vector<double> dq, dk, dv;
  for (int e = 0; e < 4; ++e) {
    dq.push_back(0.375 + 0.125 * e);
    dk.push_back(1.5 - 0.25 * e);
    dv.push_back(0.1 + e);  // not a power of two: exact in double all the same
  }
  AttentionInputs in{q.view(), k.view(), v.view(), {}, {}, {}, {}, {}, {}, {}, {}, {}};
  in.q_descale = dq, in.k_descale = dk, in.v_descale = dv;
  const AttentionResult descaled = reference_attention(p, in);

  HostTensor eq = q, ek = k, ev = v;
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t i = 0; i < 3; ++i)
        for (std::int64_t d = 0; d < 4; ++d) eq(b, h, i, d) = q(b, h, i, d) * dq[static_cast<size_t>(b * 2 + h / 2)];
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t g = 0; g < 2; ++g)
      for (std::int64_t j = 0; j < 5; ++j) {
        for (std::int64_t d = 0; d < 4; ++d) ek(b, g, j, d) = k(b, g, j, d) * dk[static_cast<size_t>(b * 2 + g)];
        for (std::int64_t d = 0; d < 3; ++d) ev(b, g, j, d) = v(b, g, j, d) * dv[static_cast<size_t>(b * 2 + g)];
      }
  Problem plain = p;
  plain.descale = Descale::None;
  const AttentionResult expected = reference_attention(plain, {eq.view(), ek.view(), ev.view(), {}, {}, {}, {}, {}, {}, {}, {}, {}});
  for (size_t e = 0; e < expected.out.values.size(); ++e)
    EXPECT_EQ(std::bit_cast<std::uint64_t>(descaled.out.values[e]), std::bit_cast<std::uint64_t>(expected.out.values[e])) << e;
  for (size_t e = 0; e < expected.lse.values.size(); ++e) EXPECT_EQ(descaled.lse.values[e], expected.lse.values[e]) << e;
}

TEST(Descale, RefusesBadFactorsAndCombinations) {
  Problem p = Problem::of_shape(1, 2, 1, 1, 2, 1, 1);
  p.descale = Descale::PerHead;
  HostTensor q({1, 2, 1, 1}), k({1, 1, 2, 1}), v({1, 1, 2, 1});
  const std::vector<double> one{1.0}, zero{0.0};
  AttentionInputs in{q.view(), k.view(), v.view(), {}, {}, {}, {}, {}, {}, {}, {}, {}};
  in.q_descale = one, in.k_descale = one, in.v_descale = zero;
  try {
    (void)reference_attention(p, in);
    ADD_FAILURE() << "a zero descale was accepted";
  } catch (const ProblemError& e) {
    EXPECT_EQ(std::string(e.what()), "v_descale: element 0 is 0, but a descale must be finite and positive");
  }
  in.v_descale = {};
  try {
    (void)reference_attention(p, in);
    ADD_FAILURE() << "a missing descale was accepted";
  } catch (const ProblemError& e) {
    EXPECT_EQ(std::string(e.what()), "v_descale: has 0 elements, but the problem (descale=head) expects 1");
  }
  p.mask = MaskKind::Additive;
  EXPECT_THROW(p.validate(), ProblemError);
  EXPECT_EQ(parse_problem("B=1 Hq=1 Hkv=1 Lq=1 Lk=1 Dk=1 Dv=1 descale=head").descale, Descale::PerHead);
  Problem round_trip = Problem::of_shape(1, 1, 1, 1, 1, 1, 1);
  round_trip.descale = Descale::PerTensor;
  EXPECT_EQ(parse_problem(round_trip.describe()), round_trip);
}

}  // namespace
}  // namespace attncheck::testing
