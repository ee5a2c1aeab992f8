// The layer entry point (forward_layer) of every CPU backend that has one, against
// reference_layer, judged by compare_layer (numerics/layer_tolerance.h: the core τ carried
// through the backend's own projections and W_O). Inputs are standard normal, already fp32.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/layer.h"
#include "attncheck/layer_tolerance.h"
#include "harness.h"

namespace attncheck::test {
namespace {

struct LayerCase {
  const char* name;
  LayerProblem problem;
  std::vector<std::int64_t> key_lengths;
};

std::vector<LayerCase> layer_cases() {
  std::vector<LayerCase> cases;
  {
    LayerProblem lp;
    Problem& p = lp.attention;
    p.batch = 2, p.q_heads = 4, p.kv_heads = 4, p.q_len = 13, p.k_len = 13, p.qk_dim = 8, p.v_dim = 8, p.causal = true;
    lp.model_dim = 16, lp.has_qkv_bias = true, lp.has_out_bias = true;
    cases.push_back({"SelfAttentionCausalWithBiases", lp, {}});
  }
  {
    LayerProblem lp;
    Problem& p = lp.attention;
    p.batch = 2, p.q_heads = 6, p.kv_heads = 2, p.q_len = 7, p.k_len = 40, p.qk_dim = 16, p.v_dim = 8;
    p.has_key_lengths = true;
    lp.model_dim = 16, lp.self_attention = false;
    cases.push_back({"CrossAttentionGqaKeyLengths", lp, {40, 0}});
  }
  {
    LayerProblem lp;
    Problem& p = lp.attention;
    p.batch = 1, p.q_heads = 3, p.kv_heads = 1, p.q_len = 70, p.k_len = 70, p.qk_dim = 16, p.v_dim = 24;
    p.window_left = 9, p.window_right = 2;
    lp.model_dim = 16, lp.has_out_bias = true;
    cases.push_back({"SelfAttentionMqaWindow", lp, {}});
  }
  return cases;
}

HostTensor host(const std::vector<double>& values, const Shape4& shape) {
  HostTensor t(shape);
  t.values = values;
  return t;
}

TEST(Layer, MatchesReferenceLayer) {
  for (const std::string name : {"cpu-naive", "cpu-flash"}) {  // this folder's CPU backends
    Backend backend = open_backend(name);
    if (!backend.has_layer()) continue;
    const auto profile = backend.profile(DType::F32);
    ASSERT_TRUE(profile.has_value());
    std::uint64_t seed = 7;
    for (LayerCase lc : layer_cases()) {
      SCOPED_TRACE(name + " " + lc.name);
      Problem& p = lc.problem.attention;
      p.scale = round_to(DType::F32, p.effective_scale());  // the fp32 scale both backends apply
      const std::int64_t B = p.batch, Hq = p.q_heads, Hkv = p.kv_heads, Lq = p.q_len, Lk = p.k_len;
      const std::int64_t Dk = p.qk_dim, Dv = p.v_dim, dm = lc.problem.model_dim;
      const bool cross = !lc.problem.self_attention, qkv_bias = lc.problem.has_qkv_bias;
      const bool out_bias = lc.problem.has_out_bias;
      auto values = [&](std::int64_t n) { return random_values(static_cast<std::size_t>(n), DType::F32, seed++, 1.0); };
      const auto x = values(B * Lq * dm), xkv = cross ? values(B * Lk * dm) : std::vector<double>{};
      // Weights scaled by 1/sqrt(d_model) so the heads stay of order one, as in a trained layer.
      auto weights = [&](std::int64_t n) {
        return random_values(static_cast<std::size_t>(n), DType::F32, seed++, 1.0 / std::sqrt(static_cast<double>(dm)));
      };
      const auto wq = weights(Hq * dm * Dk), wk = weights(Hkv * dm * Dk), wv = weights(Hkv * dm * Dv);
      const auto wo = weights(Hq * Dv * dm);
      const auto bq = values(Hq * Dk), bk = values(Hkv * Dk), bv = values(Hkv * Dv), bo = values(dm);

      // The reference layer, in double, on the same values (layer.h: 4-d views, leading 1s).
      const HostTensor hx = host(x, {1, B, Lq, dm}), hxkv = cross ? host(xkv, {1, B, Lk, dm}) : HostTensor{};
      const HostTensor hwq = host(wq, {1, Hq, dm, Dk}), hwk = host(wk, {1, Hkv, dm, Dk}), hwv = host(wv, {1, Hkv, dm, Dv});
      const HostTensor hwo = host(wo, {1, 1, Hq * Dv, dm});
      const HostTensor hbq = host(bq, {1, 1, Hq, Dk}), hbk = host(bk, {1, 1, Hkv, Dk}), hbv = host(bv, {1, 1, Hkv, Dv});
      const HostTensor hbo = host(bo, {1, 1, 1, dm});
      LayerInputs in;
      in.x = hx.view(), in.w_q = hwq.view(), in.w_k = hwk.view(), in.w_v = hwv.view(), in.w_o = hwo.view();
      if (cross) in.x_kv = hxkv.view();
      if (qkv_bias) in.b_q = hbq.view(), in.b_k = hbk.view(), in.b_v = hbv.view();
      if (out_bias) in.b_o = hbo.view();
      if (p.has_key_lengths) in.key_lengths = lc.key_lengths;
      ReferenceOptions options;
      options.row_statistics = true;
      options.probabilities = true;  // compare_layer needs P for the projection terms
      const LayerResult ref = reference_layer(lc.problem, in, options);

      // The backend, on the same values in fp32.
      StoredTensor sx = store(x, {B, Lq, dm}, DType::F32);
      StoredTensor sxkv = cross ? store(xkv, {B, Lk, dm}, DType::F32) : StoredTensor{};
      StoredTensor swq = store(wq, {Hq, dm, Dk}, DType::F32), swk = store(wk, {Hkv, dm, Dk}, DType::F32);
      StoredTensor swv = store(wv, {Hkv, dm, Dv}, DType::F32), swo = store(wo, {Hq * Dv, dm}, DType::F32);
      StoredTensor sbq = store(bq, {Hq, Dk}, DType::F32), sbk = store(bk, {Hkv, Dk}, DType::F32);
      StoredTensor sbv = store(bv, {Hkv, Dv}, DType::F32), sbo = store(bo, {dm}, DType::F32);
      StoredTensor sout = store(std::vector<double>(static_cast<std::size_t>(B * Lq * dm), std::nan("")), {B, Lq, dm}, DType::F32);
      std::vector<std::int64_t> kl = lc.key_lengths, kl_shape{B};
      DLTensor tkl{};
      tkl.data = kl.data(), tkl.device = {kDLCPU, 0}, tkl.ndim = 1, tkl.dtype = {kDLInt, 64, 1}, tkl.shape = kl_shape.data();
      attncheck_layer_tensors t{};
      t.x = &sx.tensor;
      t.x_kv = cross ? &sxkv.tensor : nullptr;
      t.w_q = &swq.tensor, t.w_k = &swk.tensor, t.w_v = &swv.tensor, t.w_o = &swo.tensor;
      if (qkv_bias) t.b_q = &sbq.tensor, t.b_k = &sbk.tensor, t.b_v = &sbv.tensor;
      if (out_bias) t.b_o = &sbo.tensor;
      t.key_lengths = p.has_key_lengths ? &tkl : nullptr;
      t.out = &sout.tensor;
      backend.forward_layer(lc.problem, t);

      HostTensor out({1, B, Lq, dm});
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < Lq; ++i)
          for (std::int64_t n = 0; n < dm; ++n) out(0, b, i, n) = sout.get(b, i, n);
      const Verdict v = compare_layer(lc.problem, *profile, DataCharacter::GenericRandom, in, ref, out);
      EXPECT_TRUE(v.passed) << lc.problem.describe() << ": " << v.failure << " | " << v.summary();
    }
  }
}

}  // namespace
}  // namespace attncheck::test
