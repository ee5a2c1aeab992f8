/// \file backward_sim.h
/// \brief Emulated backward kernels for testing the gradient bound itself (numerics/README.md
/// §10.3).
///
/// Each kernel computes the FlashAttention-2 backward the way a GPU kernel does, row by row in
/// fp32 arithmetic: scores by an fp32 dot product, P = expf(s − lse) from the float32 lse it is
/// handed, P stored in `probability` for dV = Pᵀ dO and dS, dP = dO·Vᵀ and D = dO·O in fp32, dS
/// stored in `ds`, dQ summed over key tiles of `key_block` keys (a partial sum per tile, then the
/// tiles), dK and dV summed over rows in fp32, GQA's group summed in fp32, the gradients written
/// in `gradient`. Narrow formats are emulated with round_to(). Each defect is a kernel that
/// computes differently from what it declares.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "attncheck/backward.h"
#include "attncheck/dtype.h"
#include "attncheck/gradient_tolerance.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/reference.h"

namespace attncheck::backward_sim {

enum class Defect : std::uint8_t {
  None,
  NoDTerm,          ///< dS = P ∘ dP: the D_i = rowsum(dO ∘ O) term missing
  KvAccNarrow,      ///< dK and dV accumulated in `narrow` while fp32 is declared
  DsStoredNarrow,   ///< dS rounded to `narrow` while fp32 is declared
  ScaleOffInDk,     ///< dK scaled by σ(1 + 2^-10)
  DroppedKeyInDv,   ///< the last allowed key of every row adds nothing to dV
};

inline const char* defect_name(Defect d) {
  switch (d) {
    case Defect::None: return "healthy";
    case Defect::NoDTerm: return "no-D-term";
    case Defect::KvAccNarrow: return "dKdV-acc-narrow";
    case Defect::DsStoredNarrow: return "dS-narrow";
    case Defect::ScaleOffInDk: return "dK-scale-2^-10";
    case Defect::DroppedKeyInDv: return "dV-dropped-key";
  }
  return "?";
}

struct KernelSpec {
  DType input = DType::F32;
  DType probability = DType::F32;  ///< P as stored for dV and dS
  DType ds = DType::F32;           ///< dS as stored for dQ and dK
  DType gradient = DType::F32;     ///< dQ, dK, dV as written
  int key_block = 64;              ///< keys per dQ partial sum
  Defect defect = Defect::None;
  DType narrow = DType::BF16;      ///< the format a defect rounds to

  NumericsProfile forward() const {
    NumericsProfile p;
    p.input = input;
    p.output = input;  // O handed over rounded to the input dtype, as a fused kernel writes it
    p.writes_lse = true;
    return p;
  }
  BackwardProfile declared() const {
    BackwardProfile b;
    b.gradient = gradient;
    b.probability = probability;
    b.ds = ds;
    b.key_block = key_block;
    b.recomputes_from_lse = true;
    b.deterministic = true;
    return b;
  }
};

/// One generated problem, its inputs in the input dtype, and the double reference.
struct Case {
  Problem problem;
  HostTensor q, k, v, d_out;
  AttentionResult forward;
  AttentionGradients exact;
  HostTensor out_handed, lse_handed;  ///< O and LSE as the kernel receives them

  AttentionInputs inputs() const { return {q.view(), k.view(), v.view(), {}, {}}; }
  BackwardInputs exact_inputs() const { return backward_inputs(forward, d_out.view()); }
};

/// B = 1, Hq query heads over Hkv kv heads, Lq = Lk = n, Dk = Dv = d; Q, K, V, dO ~ N(0, 1)
/// (Q times `logit_std`) rounded to the input dtype.
inline Case make_case(DType input, std::int64_t n, std::int64_t d, std::uint64_t seed, std::int64_t q_heads = 1,
                      std::int64_t kv_heads = 1, bool causal = false, double softcap = 0, double logit_std = 1) {
  Case c;
  c.problem = Problem::of_shape(1, q_heads, kv_heads, n, n, d, d);
  c.problem.causal = causal;
  c.problem.softcap = softcap > 0 ? static_cast<double>(static_cast<float>(softcap)) : 0.0;
  c.problem.scale = static_cast<double>(static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))));
  std::mt19937_64 rng(seed);
  // Box–Muller from mt19937_64 (whose sequence the standard fixes): portable values.
  const auto normal = [&rng] {
    const double u1 = (static_cast<double>(rng() >> 11) + 0.5) * 0x1p-53;
    const double u2 = static_cast<double>(rng() >> 11) * 0x1p-53;
    return std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  };
  const auto fill = [&](HostTensor& t, const Shape4& s, double stddev) {
    t = HostTensor(s);
    for (double& x : t.values) x = round_to(input, stddev * normal());
  };
  fill(c.q, {1, q_heads, n, d}, logit_std);
  fill(c.k, {1, kv_heads, n, d}, 1);
  fill(c.v, {1, kv_heads, n, d}, 1);
  fill(c.d_out, {1, q_heads, n, d}, 1);
  c.forward = reference_attention(c.problem, c.inputs());
  c.exact = reference_attention_backward(c.problem, c.inputs(), c.exact_inputs());
  c.out_handed = c.forward.out;
  for (double& x : c.out_handed.values) x = round_to(input, x);
  c.lse_handed = c.forward.lse;
  for (double& x : c.lse_handed.values) x = std::isfinite(x) ? round_to(DType::F32, x) : x;
  return c;
}

/// The emulated kernel's gradients on `c`.
inline AttentionGradients run(const KernelSpec& spec, const Case& c) {
  const Problem& p = c.problem;
  const AttentionInputs in = c.inputs();
  const auto r = [](DType t, float x) { return static_cast<float>(round_to(t, static_cast<double>(x))); };
  const bool narrow_acc = spec.defect == Defect::KvAccNarrow;
  const DType ds_store = spec.defect == Defect::DsStoredNarrow ? spec.narrow : spec.ds;
  const float sigma = static_cast<float>(p.effective_scale());
  const float cap = static_cast<float>(p.softcap);
  const std::int64_t n = p.k_len, d = p.qk_dim, dv = p.v_dim;
  // Per query head: fp32 dK and dV, then the group's sum in fp32.
  std::vector<float> dk_head(static_cast<size_t>(n * d)), dv_head(static_cast<size_t>(n * dv));
  std::vector<float> dk_sum(static_cast<size_t>(p.kv_heads * n * d)), dv_sum(static_cast<size_t>(p.kv_heads * n * dv));
  AttentionGradients g{HostTensor({1, p.q_heads, p.q_len, d}), HostTensor({1, p.kv_heads, n, d}),
                       HostTensor({1, p.kv_heads, n, dv}), std::nullopt};
  std::vector<float> ds_row(static_cast<size_t>(n)), p_row(static_cast<size_t>(n));
  std::vector<char> allowed(static_cast<size_t>(n));
  for (std::int64_t h = 0; h < p.q_heads; ++h) {
    const std::int64_t kv = p.kv_head_of(h);
    std::fill(dk_head.begin(), dk_head.end(), 0.0f);
    std::fill(dv_head.begin(), dv_head.end(), 0.0f);
    for (std::int64_t i = 0; i < p.q_len; ++i) {
      const float lse = static_cast<float>(c.lse_handed(0, 0, h, i));
      float dterm = 0;
      for (std::int64_t j = 0; j < dv; ++j)
        dterm += static_cast<float>(c.d_out(0, h, i, j)) * static_cast<float>(c.out_handed(0, h, i, j));
      if (spec.defect == Defect::NoDTerm) dterm = 0;
      std::int64_t last_allowed = -1;
      for (std::int64_t k = 0; k < n; ++k) {
        allowed[static_cast<size_t>(k)] = key_allowed(p, in, 0, h, i, k);
        if (!allowed[static_cast<size_t>(k)]) continue;
        last_allowed = k;
        float dot = 0;
        for (std::int64_t l = 0; l < d; ++l) dot += static_cast<float>(c.q(0, h, i, l)) * static_cast<float>(c.k(0, kv, k, l));
        float s = sigma * dot, slope = 1;
        if (cap > 0) {
          const float th = std::tanh(s / cap);
          s = cap * th;
          slope = 1 - th * th;
        }
        const float prob = r(spec.probability, std::exp(s - lse));
        float dp = 0;
        for (std::int64_t j = 0; j < dv; ++j) dp += static_cast<float>(c.d_out(0, h, i, j)) * static_cast<float>(c.v(0, kv, k, j));
        p_row[static_cast<size_t>(k)] = prob;
        ds_row[static_cast<size_t>(k)] = r(ds_store, prob * (dp - dterm) * slope);
      }
      // dQ: a partial sum per key tile, then the tiles in order.
      for (std::int64_t l = 0; l < d; ++l) {
        float total = 0;
        for (std::int64_t t0 = 0; t0 < n; t0 += spec.key_block) {
          float part = 0;
          for (std::int64_t k = t0; k < std::min(n, t0 + spec.key_block); ++k)
            if (allowed[static_cast<size_t>(k)]) part += ds_row[static_cast<size_t>(k)] * static_cast<float>(c.k(0, kv, k, l));
          total += part;
        }
        g.d_q(0, h, i, l) = round_to(spec.gradient, static_cast<double>(sigma * total));
      }
      const float sigma_k = spec.defect == Defect::ScaleOffInDk ? sigma * (1 + 0x1p-10f) : sigma;
      for (std::int64_t k = 0; k < n; ++k) {
        if (!allowed[static_cast<size_t>(k)]) continue;
        for (std::int64_t l = 0; l < d; ++l) {
          float& acc = dk_head[static_cast<size_t>(k * d + l)];
          acc += sigma_k * ds_row[static_cast<size_t>(k)] * static_cast<float>(c.q(0, h, i, l));
          if (narrow_acc) acc = r(spec.narrow, acc);
        }
        if (spec.defect == Defect::DroppedKeyInDv && k == last_allowed) continue;
        for (std::int64_t j = 0; j < dv; ++j) {
          float& acc = dv_head[static_cast<size_t>(k * dv + j)];
          acc += p_row[static_cast<size_t>(k)] * static_cast<float>(c.d_out(0, h, i, j));
          if (narrow_acc) acc = r(spec.narrow, acc);
        }
      }
    }
    for (std::int64_t e = 0; e < n * d; ++e) dk_sum[static_cast<size_t>(kv * n * d + e)] += dk_head[static_cast<size_t>(e)];
    for (std::int64_t e = 0; e < n * dv; ++e) dv_sum[static_cast<size_t>(kv * n * dv + e)] += dv_head[static_cast<size_t>(e)];
  }
  for (size_t e = 0; e < g.d_k.values.size(); ++e) g.d_k.values[e] = round_to(spec.gradient, static_cast<double>(dk_sum[e]));
  for (size_t e = 0; e < g.d_v.values.size(); ++e) g.d_v.values[e] = round_to(spec.gradient, static_cast<double>(dv_sum[e]));
  return g;
}

/// The bound's verdict on `spec` over case `c`, under its declared profiles.
inline GradientVerdict judge(const KernelSpec& spec, const Case& c) {
  const GradientBounds tau =
      gradient_tolerance(c.problem, spec.forward(), spec.declared(), c.inputs(), c.exact_inputs(), c.exact);
  return compare_gradients(c.exact, tau, run(spec, c));
}

}  // namespace attncheck::backward_sim
