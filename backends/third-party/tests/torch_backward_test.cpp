// The torch adapters' backward pass on cases whose gradients are derived by hand, before anything
// is said about torch's: an adapter that lays out a gradient, maps a head, builds a mask or reads
// dO wrongly fails here. Also the declarations the adapters make (dlse, dbias, blocks) and the
// refusals that follow from them, and the determinism the profiles declare.
//
// The two-key closed form (every case here has Lk = 2). For query row i with scores
// s_i0, s_i1 (s = σ q·k + bias) the weights are p_i = 1 / (1 + exp(s_i1 − s_i0)) and 1 − p_i, so
//   O_i = p_i V_0 + (1 − p_i) V_1,
//   dV_0 = Σ_i p_i dO_i,   dV_1 = Σ_i (1 − p_i) dO_i,
//   dP_ij = dO_i · V_j,    D_i = dO_i · O_i = p_i dP_i0 + (1 − p_i) dP_i1,
//   dS_i0 = p_i (dP_i0 − D_i) = p_i (1 − p_i) (dP_i0 − dP_i1) =: g_i,   dS_i1 = −g_i,
//   dQ_i = σ (dS_i0 K_0 + dS_i1 K_1) = σ g_i (K_0 − K_1),
//   dK_0 = σ Σ_i g_i Q_i,  dK_1 = −dK_0,
//   dbias_ij = dS_ij, summed over the axes the mask broadcasts along.
// A row that sees key 0 alone (causal, top-left, row 0) has p = 1 and g = 0. With GQA the sums
// over i run over the rows of every query head of the group.
//
// Comparison: the closed forms are evaluated in double from the exact inputs; torch computes in
// float32 with its exp (20 ulp declared for the flash kernel, numerics/README.md). Every gradient
// element here is a sum of at most 8 terms, each of magnitude at most 4, each within 32 · 2^-23
// relative of its exact value (the exp, the lse and about ten roundings), so within 8 · 4 · 32 ·
// 2^-23 < 1.3e-4 of the closed form; kClosedFormBound is that bound. It bounds this adapter's unit
// test only: torch's gradients are judged by gradient_tolerance (numerics/) in the measurement.
// A layout, head, mask or sign error moves an element by more than 0.01 in every case below.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "torch_backward_call.h"

namespace attncheck::torch_test {
namespace {

constexpr double kClosedFormBound = 1.3e-4;

struct Adapter {
  const char* name;
  const char* path;
};
const Adapter kAdapters[] = {{"torch-sdpa", ATTNCHECK_PLUGIN_TORCH_SDPA},
                             {"torch-flash-cpu", ATTNCHECK_PLUGIN_TORCH_FLASH_CPU},
                             {"torch-math", ATTNCHECK_PLUGIN_TORCH_MATH}};

HostTensor tensor(Shape4 shape, std::vector<double> values) {
  HostTensor t(shape);
  t.values = std::move(values);
  return t;
}

double dot2(const HostTensor& a, std::int64_t h, std::int64_t i, const HostTensor& b, std::int64_t hb, std::int64_t j) {
  return a(0, h, i, 0) * b(0, hb, j, 0) + a(0, h, i, 1) * b(0, hb, j, 1);
}

/// The closed-form gradients above for B = 1, Lk = 2, Dk = Dv = 2, Hq query heads over one kv
/// head (Hq = 1: MHA), `bias` [1, 1, Lq, 2] (or empty), `causal` top-left.
AttentionGradients closed_form(const Problem& p, const HostTensor& q, const HostTensor& k, const HostTensor& v,
                               const HostTensor* bias, const HostTensor& dout) {
  const double sigma = *p.scale;
  AttentionGradients g{HostTensor(Shape4{1, p.q_heads, p.q_len, 2}), HostTensor(Shape4{1, 1, 2, 2}),
                       HostTensor(Shape4{1, 1, 2, 2}), std::nullopt};
  if (bias != nullptr) g.d_bias = HostTensor(Shape4{1, 1, p.q_len, 2});
  for (std::int64_t h = 0; h < p.q_heads; ++h) {
    for (std::int64_t i = 0; i < p.q_len; ++i) {
      const double s0 = sigma * dot2(q, h, i, k, 0, 0) + (bias != nullptr ? (*bias)(0, 0, i, 0) : 0.0);
      const double s1 = sigma * dot2(q, h, i, k, 0, 1) + (bias != nullptr ? (*bias)(0, 0, i, 1) : 0.0);
      const bool sees_key_1 = !p.causal || i >= 1;
      const double pi = sees_key_1 ? 1.0 / (1.0 + std::exp(s1 - s0)) : 1.0;
      const double dp0 = dot2(dout, h, i, v, 0, 0), dp1 = dot2(dout, h, i, v, 0, 1);
      const double gi = pi * (1.0 - pi) * (dp0 - dp1);
      for (int d = 0; d < 2; ++d) {
        g.d_v(0, 0, 0, d) += pi * dout(0, h, i, d);
        g.d_v(0, 0, 1, d) += (1.0 - pi) * dout(0, h, i, d);
        g.d_q(0, h, i, d) = sigma * gi * (k(0, 0, 0, d) - k(0, 0, 1, d));
        g.d_k(0, 0, 0, d) += sigma * gi * q(0, h, i, d);
        g.d_k(0, 0, 1, d) -= sigma * gi * q(0, h, i, d);
      }
      if (g.d_bias) {
        (*g.d_bias)(0, 0, i, 0) += gi;
        (*g.d_bias)(0, 0, i, 1) -= gi;
      }
    }
  }
  return g;
}

void expect_near_closed_form(const HostTensor& got, const HostTensor& expected, const std::string& what) {
  ASSERT_EQ(got.shape, expected.shape) << what;
  for (std::size_t e = 0; e < got.values.size(); ++e)
    EXPECT_NEAR(got.values[e], expected.values[e], kClosedFormBound) << what << " element " << e;
}

// Two query tokens, two keys, one head: Q, K, V, dO small exact values, scale 0.5.
const HostTensor kQ = tensor({1, 1, 2, 2}, {1, 2, -1, 0.5});
const HostTensor kK = tensor({1, 1, 2, 2}, {0.5, -1, 1, 1});
const HostTensor kV = tensor({1, 1, 2, 2}, {1, 2, 3, -1});
const HostTensor kDout = tensor({1, 1, 2, 2}, {1, -1, 0.5, 2});

Problem two_tokens() {
  Problem p = Problem::of_shape(1, 1, 1, 2, 2, 2, 2);
  p.scale = 0.5;
  return p;
}

void check_closed_form(const Adapter& adapter, const Problem& p, const HostTensor& q, const HostTensor* bias,
                       const HostTensor& dout, bool want_d_bias) {
  SCOPED_TRACE(adapter.name);
  Backend backend = load_backend_library(adapter.path);
  BackwardCallInputs in{&q, &kK, &kV, bias, {}, &dout};
  const AttentionGradients got = run_backward(backend, p, DType::F32, in, want_d_bias);
  const AttentionGradients expected = closed_form(p, q, kK, kV, bias, dout);
  expect_near_closed_form(got.d_q, expected.d_q, "dQ");
  expect_near_closed_form(got.d_k, expected.d_k, "dK");
  expect_near_closed_form(got.d_v, expected.d_v, "dV");
  if (want_d_bias) {
    ASSERT_TRUE(got.d_bias.has_value());
    expect_near_closed_form(*got.d_bias, *expected.d_bias, "dBias");
  }
}

TEST(TorchBackwardClosedForm, TwoTokens) {
  for (const Adapter& a : kAdapters) check_closed_form(a, two_tokens(), kQ, nullptr, kDout, false);
}

TEST(TorchBackwardClosedForm, TwoTokensCausal) {
  // Row 0 sees key 0 alone: dQ_0 = 0, its dO_0 goes to dV_0 whole.
  Problem p = two_tokens();
  p.causal = true;
  for (const Adapter& a : kAdapters) check_closed_form(a, p, kQ, nullptr, kDout, false);
}

TEST(TorchBackwardClosedForm, TwoTokensAdditiveMaskAndItsGradient) {
  Problem p = two_tokens();
  p.mask = MaskKind::Additive;
  p.mask_q_len = 2, p.mask_k_len = 2;
  const HostTensor bias = tensor({1, 1, 2, 2}, {0.5, -0.25, 1, 0});
  // Every adapter takes the bias; torch-math alone gives its gradient (the backward profiles).
  for (const Adapter& a : kAdapters) check_closed_form(a, p, kQ, &bias, kDout, std::string(a.name) == "torch-math");
}

TEST(TorchBackwardClosedForm, GroupedQueryHeadsSumIntoTheirKvHead) {
  // Two query heads over one kv head: dK and dV are the sums of both heads' terms.
  Problem p = Problem::of_shape(1, 2, 1, 2, 2, 2, 2);
  p.scale = 0.5;
  const HostTensor q = tensor({1, 2, 2, 2}, {1, 2, -1, 0.5, 0, 1, 2, -1});
  const HostTensor dout = tensor({1, 2, 2, 2}, {1, -1, 0.5, 2, -1, 0.5, 1, 1});
  for (const Adapter& a : kAdapters) check_closed_form(a, p, q, nullptr, dout, false);
}

// --- the declarations and what follows from them -------------------------------------------------

TEST(TorchBackwardProfile, WhatEachEntryPointDifferentiates) {
  const Problem square = two_tokens();
  Problem wide_v = two_tokens();
  wide_v.v_dim = 3;
  for (const Adapter& a : kAdapters) {
    SCOPED_TRACE(a.name);
    Backend backend = load_backend_library(a.path);
    ASSERT_TRUE(backend.has_backward());
    for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
      const std::optional<BackwardProfile> pr = backend.backward_profile(square, dtype);
      ASSERT_TRUE(pr.has_value());
      EXPECT_FALSE(pr->accepts_dlse);  // no entry point has a differentiable lse
      EXPECT_EQ(pr->writes_dbias, std::string(a.name) == "torch-math");
      EXPECT_EQ(pr->gradient_dtype(dtype), dtype);
      EXPECT_TRUE(pr->deterministic);
      // The flash kernel tiles 32 query rows (Lq < 192) by 512 keys; the math path does not tile.
      const bool flash = std::string(a.name) != "torch-math";
      EXPECT_EQ(pr->query_block, flash ? 32 : 0);
      EXPECT_EQ(pr->key_block, flash ? 512 : 0);
    }
  }
  // torch-sdpa takes the math path for Dk != Dv, backward too.
  Backend sdpa = load_backend_library(ATTNCHECK_PLUGIN_TORCH_SDPA);
  EXPECT_EQ(sdpa.backward_profile(wide_v, DType::F32)->key_block, 0);
  Problem long_q = Problem::of_shape(1, 1, 1, 800, 8, 2, 2);
  EXPECT_EQ(sdpa.backward_profile(long_q, DType::F32)->query_block, 256);
  long_q.q_len = 200;
  EXPECT_EQ(sdpa.backward_profile(long_q, DType::F32)->query_block, 64);
}

TEST(TorchBackwardProfile, RefusesWhatItDoesNotDeclare) {
  Problem p = two_tokens();
  p.mask = MaskKind::Additive;
  p.mask_q_len = 2, p.mask_k_len = 2;
  const HostTensor bias = tensor({1, 1, 2, 2}, {0, 0, 0, 0});
  for (const char* path : {ATTNCHECK_PLUGIN_TORCH_SDPA, ATTNCHECK_PLUGIN_TORCH_FLASH_CPU}) {
    Backend backend = load_backend_library(path);
    BackwardCallInputs in{&kQ, &kK, &kV, &bias, {}, &kDout};
    try {
      run_backward(backend, p, DType::F32, in, /*want_d_bias=*/true);
      ADD_FAILURE() << path << ": dbias was accepted, but the profile says writes_dbias = 0";
    } catch (const BackendError& e) {
      EXPECT_EQ(e.status(), kAttncheckInvalidProblem) << e.what();
      EXPECT_NE(std::string(e.what()).find("dbias"), std::string::npos) << e.what();
    }
  }
}

TEST(TorchBackwardProfile, RepeatedCallsAreBitwiseEqual) {
  // What deterministic = 1 claims, on a case with several query and key tiles of the flash kernel
  // (Lq = 200: 64-row blocks; Lk = 600: two 512-key blocks) and a GQA group.
  Problem p = Problem::of_shape(1, 4, 2, 200, 600, 16, 16);
  HostTensor q(Shape4{1, 4, 200, 16}), k(Shape4{1, 2, 600, 16}), v(Shape4{1, 2, 600, 16}), dout(Shape4{1, 4, 200, 16});
  std::uint64_t state = 12345;
  auto next = [&state] {  // a fixed sequence of values in [-2, 2) exact in every dtype (multiples of 2^-6)
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(static_cast<std::int64_t>(state >> 57) - 64) / 32.0;
  };
  for (HostTensor* t : {&q, &k, &v, &dout})
    for (double& x : t->values) x = next();
  for (const Adapter& a : kAdapters) {
    SCOPED_TRACE(a.name);
    Backend backend = load_backend_library(a.path);
    for (DType dtype : {DType::F32, DType::BF16}) {
      BackwardCallInputs in{&q, &k, &v, nullptr, {}, &dout};
      const AttentionGradients first = run_backward(backend, p, dtype, in, false);
      for (int repeat = 0; repeat < 3; ++repeat) {
        const AttentionGradients again = run_backward(backend, p, dtype, in, false);
        EXPECT_EQ(again.d_q.values, first.d_q.values) << dtype_name(dtype) << " repeat " << repeat;
        EXPECT_EQ(again.d_k.values, first.d_k.values) << dtype_name(dtype) << " repeat " << repeat;
        EXPECT_EQ(again.d_v.values, first.d_v.values) << dtype_name(dtype) << " repeat " << repeat;
      }
    }
  }
}

}  // namespace
}  // namespace attncheck::torch_test
