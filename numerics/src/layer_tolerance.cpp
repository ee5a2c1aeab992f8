#include "attncheck/layer_tolerance.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <stdexcept>

#include "attncheck/tolerance.h"

namespace attncheck {
namespace {

// γ_n = n·u/(1 − n·u), and +∞ once n·u ≥ 1, where the bound holds nothing (as the core τ's γ,
// numerics/README.md §9): the formula alone would turn negative there, and a negative τ passed
// every error.
double gamma_n(double n, double u) { return n * u >= 1 ? INFINITY : n * u / (1 - n * u); }

// Bound on the kernel's projection error, element by element (derivation step 1): `input` is a
// [1, B, L, d_model] view, `weights` [1, H, d_model, D], `bias` [1, 1, H, D] or empty, `exact`
// the double projection [B, H, L, D].
HostTensor projection_error(const View4<const double>& input, const View4<const double>& weights,
                            const View4<const double>& bias, const HostTensor& exact, double u_acc, double u_store) {
  const Shape4& s = exact.shape;
  const std::int64_t model_dim = input.shape[3];
  const double g = gamma_n(static_cast<double>(model_dim + 1), u_acc);
  HostTensor bound(s);
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t h = 0; h < s[1]; ++h)
      for (std::int64_t i = 0; i < s[2]; ++i)
        for (std::int64_t l = 0; l < s[3]; ++l) {
          double magnitude = bias.empty() ? 0.0 : std::fabs(bias(0, 0, h, l));
          for (std::int64_t m = 0; m < model_dim; ++m) magnitude += std::fabs(input(0, b, i, m)) * std::fabs(weights(0, h, m, l));
          bound(b, h, i, l) = g * magnitude + u_store * (std::fabs(exact(b, h, i, l)) + g * magnitude);
        }
  return bound;
}

}  // namespace

HostTensor layer_tolerance(const LayerProblem& lp, const NumericsProfile& profile, DataCharacter data,
                           const LayerInputs& in, const LayerResult& ref) {
  const Problem& p = lp.attention;
  if (!ref.attention.stats || !ref.attention.probabilities)
    throw std::invalid_argument("layer_tolerance: the reference layer needs row statistics and probabilities");
  const double u_acc = unit_roundoff(profile.accumulator) * (profile.accumulation_rounding == Rounding::TowardZero ? 2 : 1);
  const double u_store = unit_roundoff(profile.input);
  const View4<const double> x_kv = lp.self_attention ? in.x : in.x_kv;
  const HostTensor dq = projection_error(in.x, in.w_q, in.b_q, ref.q, u_acc, u_store);
  const HostTensor dk = projection_error(x_kv, in.w_k, in.b_k, ref.k, u_acc, u_store);
  const HostTensor dv = projection_error(x_kv, in.w_v, in.b_v, ref.v, u_acc, u_store);
  const double sigma = std::fabs(p.effective_scale());
  const HostTensor& prob = *ref.attention.probabilities;
  const HostTensor& heads = ref.attention.out;
  const ToleranceModel core(p, profile, data, AttentionInputs{ref.q.view(), ref.k.view(), ref.v.view(), in.mask, in.key_lengths});

  // E_H for every head output element (steps 2–4).
  HostTensor head_error(heads.shape);
  std::vector<double> logit_shift(static_cast<size_t>(p.k_len));
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t g = p.kv_head_of(h);
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        double shift_max = 0;
        for (std::int64_t k = 0; k < p.k_len; ++k) {
          double shift = 0;
          if (prob(b, h, i, k) > 0) {
            for (std::int64_t l = 0; l < p.qk_dim; ++l) {
              const double eq = dq(b, h, i, l), ek = dk(b, g, k, l);
              shift += eq * std::fabs(ref.k(b, g, k, l)) + std::fabs(ref.q(b, h, i, l)) * ek + eq * ek;
            }
            shift *= sigma;
            shift_max = std::max(shift_max, shift);
          }
          logit_shift[static_cast<size_t>(k)] = shift;
        }
        const double growth = std::exp(2 * shift_max);
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          double from_logits = 0, from_values = 0;
          const double o = heads(b, h, i, j);
          for (std::int64_t k = 0; k < p.k_len; ++k) {
            const double pk = prob(b, h, i, k);
            if (pk == 0) continue;
            from_logits += pk * logit_shift[static_cast<size_t>(k)] * std::fabs(ref.v(b, g, k, j) - o);
            from_values += pk * dv(b, g, k, j);
          }
          head_error(b, h, i, j) = core.at(ref.attention, b, h, i, j).total() + growth * from_logits + from_values;
        }
      }
    }

  // Step 5: through W_O.
  const std::int64_t concat = p.q_heads * p.v_dim;
  const double g_out = gamma_n(static_cast<double>(concat + 1), u_acc);
  const double u_o = unit_roundoff(profile.output);
  const double eta_o = profile.flushes_subnormals ? smallest_normal(profile.output) : smallest_subnormal(profile.output) / 2;
  HostTensor tau({1, p.batch, p.q_len, lp.model_dim});
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t i = 0; i < p.q_len; ++i)
      for (std::int64_t m = 0; m < lp.model_dim; ++m) {
        double propagated = 0, magnitude = in.b_o.empty() ? 0.0 : std::fabs(in.b_o(0, 0, 0, m));
        for (std::int64_t h = 0; h < p.q_heads; ++h)
          for (std::int64_t j = 0; j < p.v_dim; ++j) {
            const double w = std::fabs(in.w_o(0, 0, h * p.v_dim + j, m));
            propagated += head_error(b, h, i, j) * w;
            magnitude += std::fabs(heads(b, h, i, j)) * w;
          }
        const double e = propagated + g_out * magnitude;
        tau(0, b, i, m) = e + u_o * (std::fabs(ref.out(0, b, i, m)) + e) + eta_o;
      }
  return tau;
}

Verdict compare_layer(const LayerProblem& lp, const NumericsProfile& profile, DataCharacter data, const LayerInputs& in,
                      const LayerResult& ref, const HostTensor& actual) {
  const HostTensor tau = layer_tolerance(lp, profile, data, in, ref);
  Verdict v;
  v.passed = true;
  v.dominant_term = "layer";
  double sum_sq_err = 0, sum_sq = 0;
  bool any_nonzero = false, unbounded = false;
  ElementIndex unbounded_at;
  std::vector<double> ratios;
  const Shape4& s = tau.shape;
  for (std::int64_t b = 0; b < s[1]; ++b)
    for (std::int64_t i = 0; i < s[2]; ++i)
      for (std::int64_t m = 0; m < s[3]; ++m) {
        const double expected = ref.out(0, b, i, m), got = actual(0, b, i, m), bound = tau(0, b, i, m);
        ++v.elements;
        any_nonzero |= expected != 0;
        // The layer of finite inputs is finite everywhere (an empty row gives zeros), so a
        // non-finite value on either side is a failure: in the output it is the kernel's, in the
        // expected values (a fixture's) the check itself is broken. A NaN must never reach the
        // ratio below, where it compares false with every bound and would pass.
        if (!std::isfinite(got) || !std::isfinite(expected)) {
          ++v.nonfinite_violations;
          if (v.failure.empty())
            v.failure = std::isfinite(expected)
                            ? fmt::format("out[{}, {}, {}] is {} where the reference is {}", b, i, m, got, expected)
                            : fmt::format("the expected out[{}, {}, {}] is {}, but a layer of finite inputs is finite: "
                                          "the expected values are corrupt",
                                          b, i, m, expected);
          continue;
        }
        if (std::isinf(bound) && !unbounded) {
          unbounded = true;
          unbounded_at = {b, 0, i, m};
        }
        const double err = std::fabs(got - expected);
        const double ratio = bound > 0 ? err / bound : (err > 0 ? INFINITY : 0);
        ratios.push_back(ratio);
        sum_sq_err += err * err;
        sum_sq += expected * expected;
        v.max_abs_error = std::max(v.max_abs_error, err);
        if (ratio > v.max_ratio || ratios.size() == 1) {
          v.max_ratio = ratio;
          v.worst = {b, 0, i, m};
          v.tau_at_worst = bound;
          v.error_at_worst = err;
        }
      }
  v.nmse = sum_sq > 0 ? sum_sq_err / sum_sq : 0;
  if (!ratios.empty()) {
    std::sort(ratios.begin(), ratios.end());
    v.p50_ratio = ratios[ratios.size() / 2];
    v.p99_ratio = ratios[std::min(ratios.size() - 1, ratios.size() * 99 / 100)];
    double sq = 0;
    for (double r : ratios) sq += r * r;
    v.rms_ratio = std::sqrt(sq / static_cast<double>(ratios.size()));
  }
  if (!any_nonzero) {
    v.passed = false;
    v.failure = "the reference layer output is all zeros: this check could not fail";
  } else if (unbounded) {  // every error would pass: a refusal, as compare_attention's
    v.passed = false;
    v.failure = fmt::format("refused: τ is unbounded at out[{}, {}, {}] (N·u ≥ 1 for the declared accumulator at "
                            "d_model = {}), so the declared profile cannot be checked at this size",
                            unbounded_at.batch, unbounded_at.row, unbounded_at.col, lp.model_dim);
  } else if (v.nonfinite_violations > 0) {
    v.passed = false;
  } else if (v.max_ratio > 1) {
    v.passed = false;
    v.failure = fmt::format("|Ô − O| = {:.3g} exceeds τ = {:.3g} at out[{}, {}, {}]", v.error_at_worst, v.tau_at_worst,
                            v.worst.batch, v.worst.row, v.worst.col);
  }
  return v;
}

}  // namespace attncheck
