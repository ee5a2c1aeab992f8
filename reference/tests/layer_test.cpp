// The multi-head attention layer against its definition (layer.h): each head projected by hand
// with plain loops and passed to reference_attention on its own, then concatenated and projected
// by W_O; MQA/GQA against MHA with replicated K/V weights; cross-attention.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "attncheck/layer.h"
#include "plain_attention.h"

namespace attncheck::testing {
namespace {

struct LayerCase {
  LayerProblem layer;
  HostTensor x, x_kv, w_q, w_k, w_v, b_q, b_k, b_v, w_o, b_o, mask;

  LayerCase(const LayerProblem& problem, std::uint64_t seed) : layer(problem) {
    const Problem& p = layer.attention;
    const std::int64_t d = layer.model_dim;
    std::mt19937_64 rng(seed);
    x = random_tensor({1, p.batch, p.q_len, d}, rng);
    if (!layer.self_attention) x_kv = random_tensor({1, p.batch, p.k_len, d}, rng);
    w_q = random_tensor({1, p.q_heads, d, p.qk_dim}, rng, 0.5);
    w_k = random_tensor({1, p.kv_heads, d, p.qk_dim}, rng, 0.5);
    w_v = random_tensor({1, p.kv_heads, d, p.v_dim}, rng);
    if (layer.has_qkv_bias) {
      b_q = random_tensor({1, 1, p.q_heads, p.qk_dim}, rng);
      b_k = random_tensor({1, 1, p.kv_heads, p.qk_dim}, rng);
      b_v = random_tensor({1, 1, p.kv_heads, p.v_dim}, rng);
    }
    w_o = random_tensor({1, 1, p.q_heads * p.v_dim, d}, rng);
    if (layer.has_out_bias) b_o = random_tensor({1, 1, 1, d}, rng);
    if (p.mask != MaskKind::None) {
      mask = HostTensor({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len});
      for (double& m : mask.values) m = std::bernoulli_distribution(0.8)(rng) ? 1.0 : 0.0;
    }
  }
  static View4<const double> maybe(const HostTensor& t) { return t.values.empty() ? View4<const double>{} : t.view(); }
  LayerInputs inputs() const {
    return {x.view(), maybe(x_kv), w_q.view(), w_k.view(), w_v.view(), maybe(b_q), maybe(b_k),
            maybe(b_v), w_o.view(), maybe(b_o), maybe(mask), {}};
  }
};

// Y[i, :] = X[i, :] W + b, as a plain loop over the [L, d_model] slice of batch b.
HostTensor project_by_hand(const HostTensor& x, std::int64_t b, const HostTensor& w, std::int64_t head,
                           const HostTensor& bias) {
  const std::int64_t length = x.shape[2], d = x.shape[3], width = w.shape[3];
  HostTensor y({1, 1, length, width});
  for (std::int64_t i = 0; i < length; ++i)
    for (std::int64_t c = 0; c < width; ++c) {
      double sum = bias.values.empty() ? 0.0 : bias(0, 0, head, c);
      for (std::int64_t l = 0; l < d; ++l) sum += x(0, b, i, l) * w(0, head, l, c);
      y(0, 0, i, c) = sum;
    }
  return y;
}

// The layer by its definition, one single-head reference_attention call per (batch, query head).
// Returns the output and, per element, the scale Σ_c |concat_c|·|W_O(c, n)| + |b_O(n)| of its sum.
std::pair<HostTensor, HostTensor> layer_by_hand(const LayerCase& c) {
  const Problem& p = c.layer.attention;
  const std::int64_t d = c.layer.model_dim;
  const HostTensor& source = c.layer.self_attention ? c.x : c.x_kv;
  HostTensor out({1, p.batch, p.q_len, d}), scale(out.shape);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    HostTensor concat({1, 1, p.q_len, p.q_heads * p.v_dim});
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t g = h / (p.q_heads / p.kv_heads);
      const HostTensor q = project_by_hand(c.x, b, c.w_q, h, c.b_q);
      const HostTensor k = project_by_hand(source, b, c.w_k, g, c.b_k);
      const HostTensor v = project_by_hand(source, b, c.w_v, g, c.b_v);
      Problem head = p;
      head.batch = head.q_heads = head.kv_heads = 1;
      HostTensor mask;
      if (p.mask != MaskKind::None) {  // this (b, h)'s slice of the mask
        head.mask_batch = head.mask_heads = 1;
        mask = HostTensor({1, 1, p.mask_q_len, p.mask_k_len});
        for (std::int64_t i = 0; i < p.mask_q_len; ++i)
          for (std::int64_t j = 0; j < p.mask_k_len; ++j)
            mask(0, 0, i, j) = c.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, i, j);
      }
      const AttentionResult r = reference_attention(
          head, {q.view(), k.view(), v.view(), mask.values.empty() ? View4<const double>{} : mask.view(), {}});
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t j = 0; j < p.v_dim; ++j) concat(0, 0, i, h * p.v_dim + j) = r.out(0, 0, i, j);
    }
    for (std::int64_t i = 0; i < p.q_len; ++i)
      for (std::int64_t n = 0; n < d; ++n) {
        double sum = c.b_o.values.empty() ? 0.0 : c.b_o(0, 0, 0, n);
        double magnitude = std::fabs(sum);
        for (std::int64_t col = 0; col < p.q_heads * p.v_dim; ++col) {
          sum += concat(0, 0, i, col) * c.w_o(0, 0, col, n);
          magnitude += std::fabs(concat(0, 0, i, col) * c.w_o(0, 0, col, n));
        }
        out(0, b, i, n) = sum;
        scale(0, b, i, n) = magnitude;
      }
  }
  return {out, scale};
}

// The layer and the hand computation differ only in summation order: the projections (d_model ≤ 8
// terms) move Q, K, V by a few ulps, which moves logits by ~1e-15 relative and each head's output
// by as much relative to its row scale; the output projection adds its own Hq·Dv-term rounding.
// 1e-13 relative to the magnitude Σ|concat·W_O| + |b_O| is far above that and far below any
// semantic error (a wrong head mapping, a missing bias).
constexpr double kLayerAgreement = 1e-13;

void expect_layer_matches_hand(const LayerCase& c) {
  const LayerResult got = reference_layer(c.layer, c.inputs());
  const auto [want, scale] = layer_by_hand(c);
  ASSERT_EQ(got.out.shape, want.shape);
  for (std::size_t n = 0; n < want.values.size(); ++n)
    EXPECT_NEAR(got.out.values[n], want.values[n], kLayerAgreement * scale.values[n]) << c.layer.describe() << " @" << n;
}

LayerProblem layer_problem(std::int64_t hq, std::int64_t hkv, std::int64_t lq, std::int64_t lk, bool self) {
  LayerProblem l;
  l.attention.batch = 2;
  l.attention.q_heads = hq;
  l.attention.kv_heads = hkv;
  l.attention.q_len = lq;
  l.attention.k_len = lk;
  l.attention.qk_dim = 3;
  l.attention.v_dim = 2;
  l.model_dim = 5;
  l.self_attention = self;
  return l;
}

TEST(Layer, EqualsHandProjectionAndPerHeadAttention) {
  for (const bool bias : {false, true})
    for (const std::int64_t hkv : {4, 2, 1}) {  // MHA, GQA, MQA
      LayerProblem l = layer_problem(4, hkv, 6, 6, true);
      l.has_qkv_bias = l.has_out_bias = bias;
      l.attention.causal = true;
      expect_layer_matches_hand(LayerCase(l, 100 + hkv));
    }
}

TEST(Layer, CrossAttentionProjectsKeysFromTheSecondInput) {
  LayerProblem l = layer_problem(2, 1, 3, 7, false);
  l.has_qkv_bias = true;
  l.attention.mask = MaskKind::Boolean;
  l.attention.mask_heads = 2;
  l.attention.mask_q_len = 3;
  l.attention.mask_k_len = 7;
  const LayerCase c(l, 9);
  expect_layer_matches_hand(c);
  const LayerResult r = reference_layer(c.layer, c.inputs());
  EXPECT_EQ(r.k.shape, (Shape4{2, 1, 7, 3}));  // keys come from X_kv's 7 tokens
}

TEST(Layer, GroupedLayerEqualsMhaWithReplicatedKvWeights) {
  // Query head h of the grouped layer reads kv head g = h / (Hq/Hkv). Giving the MHA layer
  // W_K^(h) = W_K^(g), W_V^(h) = W_V^(g) (and the biases alike) makes every head see the same K and
  // V values through the same operations, so the outputs are identical, bit for bit.
  for (const std::int64_t hkv : {1, 2}) {
    LayerProblem grouped = layer_problem(4, hkv, 5, 5, true);
    grouped.has_qkv_bias = grouped.has_out_bias = true;
    const LayerCase g(grouped, 21);
    LayerProblem mha = grouped;
    mha.attention.kv_heads = 4;
    LayerCase m(mha, 21);
    m.x = g.x, m.w_q = g.w_q, m.b_q = g.b_q, m.w_o = g.w_o, m.b_o = g.b_o;
    const std::int64_t group = 4 / hkv;
    for (std::int64_t h = 0; h < 4; ++h) {
      for (std::int64_t l = 0; l < 5; ++l) {
        for (std::int64_t c = 0; c < 3; ++c) m.w_k(0, h, l, c) = g.w_k(0, h / group, l, c);
        for (std::int64_t c = 0; c < 2; ++c) m.w_v(0, h, l, c) = g.w_v(0, h / group, l, c);
      }
      for (std::int64_t c = 0; c < 3; ++c) m.b_k(0, 0, h, c) = g.b_k(0, 0, h / group, c);
      for (std::int64_t c = 0; c < 2; ++c) m.b_v(0, 0, h, c) = g.b_v(0, 0, h / group, c);
    }
    const LayerResult a = reference_layer(g.layer, g.inputs()), b = reference_layer(m.layer, m.inputs());
    EXPECT_EQ(a.out.values, b.out.values) << "Hkv = " << hkv;
    EXPECT_EQ(a.attention.out.values, b.attention.out.values) << "Hkv = " << hkv;
  }
}

TEST(Layer, DescribeRoundTrips) {
  LayerProblem l = layer_problem(4, 2, 3, 9, false);
  l.has_qkv_bias = true;
  l.has_out_bias = true;
  l.attention.softcap = 30;
  EXPECT_EQ(l.describe(), "B=2 Hq=4 Hkv=2 Lq=3 Lk=9 Dk=3 Dv=2 softcap=30 dmodel=5 cross=1 qkvbias=1 outbias=1");
  EXPECT_EQ(parse_layer_problem(l.describe()), l);
  const LayerProblem self = layer_problem(1, 1, 2, 2, true);
  EXPECT_EQ(parse_layer_problem(self.describe()), self);
  // torch's kdim/vdim: a key input 7 wide, values from their own 11-wide input.
  l.key_dim = 7;
  l.value_dim = 11;
  l.separate_values = true;
  EXPECT_EQ(l.describe(), "B=2 Hq=4 Hkv=2 Lq=3 Lk=9 Dk=3 Dv=2 softcap=30 dmodel=5 cross=1 qkvbias=1 outbias=1 kdim=7 vdim=11 sepv=1");
  EXPECT_EQ(parse_layer_problem(l.describe()), l);
  EXPECT_EQ(l.key_width(), 7);
  EXPECT_EQ(l.value_width(), 11);
}

// What kdim/vdim cannot mean: keys of their own width in self-attention, or a value width for
// values that come from the key input.
TEST(Layer, KeyAndValueWidthsNeedTheirOwnInputs) {
  LayerProblem self = layer_problem(1, 1, 2, 2, true);
  self.key_dim = 3;
  EXPECT_THROW(self.validate(), ProblemError);
  LayerProblem cross = layer_problem(1, 1, 2, 3, false);
  cross.value_dim = 4;
  EXPECT_THROW(cross.validate(), ProblemError);
  cross.separate_values = true;
  EXPECT_NO_THROW(cross.validate());
  EXPECT_EQ(cross.value_width(), 4);
  EXPECT_EQ(cross.key_width(), cross.model_dim);
}

}  // namespace
}  // namespace attncheck::testing
