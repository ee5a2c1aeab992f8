// τ for dQ, dK, dV and dBias (numerics/README.md §10) and the comparator that judges gradients.
//
// Notation of §10: one row (b, h, i) of a query head h reading kv head g, with the exact (double
// reference) quantities
//   r_k = σ q·k_k (raw score), c_k = softcap(r_k), s_k = c_k + bias_k, p_k = e^{s_k − lse},
//   t_k = 1 − tanh²(r_k/c) (1 without softcap), dP_k = dO·v_k, D = dO·O, ψ_k = dP_k − D + dlse,
//   dS_k = p_k ψ_k, dR_k = t_k dS_k,
//   dQ_l = σ Σ_k dR_k K_kl,  dK_kl = σ Σ_{h∈g} Σ_i dR_ik Q_il,  dV_kj = Σ_{h∈g} Σ_i p_ik dO_ij.
// Every bound below is deterministic (it holds in any summation order, so for tiles, threads and
// atomics alike) and is evaluated exactly on the data: the per-key error bounds are carried
// through the same sums as the gradients, with |·| on every factor. There is no probabilistic
// form and so no aggregate check for the gradients (§10).
#include "attncheck/gradient_tolerance.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <vector>

#include "units.h"

namespace attncheck {
namespace {

using detail::gamma;

constexpr double kInf = std::numeric_limits<double>::infinity();
// The double reference's unit roundoff. Its own error is folded into the kernel's stages: every
// u below is taken as u + 2^-53 where the reference performs the same operation in double, which
// bounds the sum of both errors to first order (§2.7's γ_{d+n+8}(2^-53) in the forward).
constexpr double kReferenceUnit = 0x1p-53;

// Absolute error of one operation whose result lands among the subnormals of `dtype` (the
// relative model does not hold there [Higham §2.1]): half the subnormal spacing, or the smallest
// normal when subnormals flush.
double underflow_error(DType dtype, bool flushes) {
  return flushes ? smallest_normal(dtype) : std::max(smallest_subnormal(dtype) / 2, std::numeric_limits<double>::denorm_min());
}

// A coarser-than-fp32 stage costs its rounding; fp32 or wider is the arithmetic itself.
double stored_roundoff(DType dtype) {
  return unit_roundoff(dtype) > unit_roundoff(DType::F32) ? unit_roundoff(dtype) : 0.0;
}

struct GradientUnits {
  // The forward path's stages the backward recomputes P with (§2.3, units_of).
  detail::Units forward;
  double u_p;    // P as stored for dV = Pᵀ dO and for dS (0 at fp32 or wider)
  double u_dp;   // dP = dO·Vᵀ accumulator
  double u_sub;  // the subtraction dP − D (+ dlse): the coarser of dp and the accumulator
  double u_ds;   // dS as stored for the dQ and dK products
  double u_acc;  // dQ, dK, dV across tiles (and D = dO·O)
  double u_group;  // GQA's sum over a group: the coarser of it and the accumulator
  double u_grad;   // the gradients as written
  double u_lse;    // the lse as handed over (float32)
  // Absolute errors of one operation whose result is subnormal (the relative model does not hold
  // there): in P, the dp accumulator, the accumulator, the dS store and the gradients.
  double eta_p, eta_dp, eta_acc, eta_ds, eta_grad;
  bool from_lse;
};

GradientUnits units_of(const NumericsProfile& fwd, const BackwardProfile& bwd) {
  GradientUnits u{};
  u.forward = detail::units_of(fwd);
  const bool flushes = fwd.flushes_subnormals;
  const double ref = kReferenceUnit;
  u.u_p = stored_roundoff(bwd.probability);
  u.u_dp = unit_roundoff(bwd.dp) + ref;
  u.u_acc = unit_roundoff(bwd.accumulator) + ref;
  u.u_sub = std::max(u.u_dp, u.u_acc);
  u.u_ds = stored_roundoff(bwd.ds);
  u.u_group = std::max(unit_roundoff(bwd.group_sum_dtype()) + ref, u.u_acc);
  const DType grad = bwd.gradient_dtype(fwd.input);
  u.u_grad = grad == DType::F64 ? 0.0 : unit_roundoff(grad);
  u.u_lse = unit_roundoff(DType::F32);
  // A weight below the normal range of fp32 (the exp's result) or of the P dtype is off by less
  // than the spacing there: 2^-125 for fp32's range (§2.5's fp32-range tail), half the
  // subnormal spacing of a narrower P (fp16: 2^-25), or its smallest normal under FTZ.
  u.eta_p = std::max(0x1p-125, underflow_error(bwd.probability, flushes));
  u.eta_dp = underflow_error(bwd.dp, flushes);
  u.eta_acc = underflow_error(bwd.accumulator, flushes);
  u.eta_ds = underflow_error(bwd.ds, flushes);
  u.eta_grad = grad == DType::F64 ? 0.0 : underflow_error(grad, flushes);
  u.from_lse = bwd.recomputes_from_lse;
  return u;
}

// What one allowed key of one row contributes, with its error bounds (see the file comment).
struct KeyTerm {
  std::int64_t key;
  double p, p_err;    // p_k and |p̃_k − p_k|
  double ds, ds_err;  // dS_k and its bound (the bias gradient's term)
  double dr, dr_err;  // dR_k = t_k dS_k and its bound (the dQ and dK term)
};

// The relative error bound Δ_k on e^{s̃_k − shift} (§2.4's terms 1–7, with the shift the lse or
// the recomputed max, of magnitude ≤ `shift_abs`):
//  1. dot product γ_Dk(u_D)·a_k [Higham];
//  2. scale, shift and base-2 conversion: three roundings of size ≤ |s_k| + |shift|;
//  3. exp u_E;
//  5. a narrow score store u_S|s_k|; 6. an additive bias u_S|s_k|;
//  7. softcap (u_T + 2u_S)|c_k| (|c_k| ≤ a_k with a bias, = |s_k| without);
// 10. ALiBi, of magnitude `alibi_abs` at this key: its product and its addition, u_S(|alibi_k| +
//     |s_k|), and with an additive mask as well the first addition's partial sum, u_S(a_k + |s_k|
//     + |alibi_k|) (the forward's term 10, per key);
// plus the reference's own rounding of the same quantities in double.
double logit_error(const Problem& problem, const GradientUnits& u, double a, double s_abs, double shift_abs,
                   double alibi_abs) {
  const detail::Units& f = u.forward;
  const bool mask_bias = problem.mask == MaskKind::Additive;
  const bool bias = mask_bias || problem.has_alibi();
  double alpha = gamma(static_cast<double>(problem.qk_dim), f.u_dot + kReferenceUnit);
  double beta = 0, position = 0;
  if (f.narrow_score_store) beta += f.u_s;
  if (mask_bias) beta += f.u_s;
  if (problem.softcap > 0) (bias ? alpha : beta) += f.u_t + 2 * f.u_s;
  if (problem.has_alibi()) {
    beta += f.u_s;
    position += f.u_s * alibi_abs;
    if (mask_bias) {
      alpha += f.u_s;
      beta += f.u_s;
      position += f.u_s * alibi_abs;
    }
  }
  return alpha * a + beta * s_abs + position + 3 * (f.u_s + kReferenceUnit) * (s_abs + shift_abs) + f.u_e +
         kReferenceUnit;
}

// The absolute error of the softcap slope t̃ = 1 − tanh̃²(r̃/c) (t ∈ (0, 1]):
//  - the argument r/c carries the dot product's error, the scale's and the division's rounding:
//    δx ≤ (γ_Dk(u_D)·a_k + 2u_S|r|)/c;
//  - tanh moves by ≤ δx·(t + δx) over it (tanh′ = t, |t′| = 2|tanh|·t ≤ 1), and its own relative
//    error adds u_T|tanh|: δτ = u_T|tanh| + δx(t + δx);
//  - t = 1 − τ² then moves by ≤ 2|τ|δτ + δτ², and the square and the subtraction round once each
//    on values ≤ (1 + δτ)²: 2u_S(1 + δτ)².
double slope_error(const Problem& problem, const GradientUnits& u, double a, double r, double th, double t) {
  const detail::Units& f = u.forward;
  const double c = problem.softcap;
  const double dx = (gamma(static_cast<double>(problem.qk_dim), f.u_dot + kReferenceUnit) * a +
                     2 * (f.u_s + kReferenceUnit) * std::abs(r)) / c;
  const double dtau = (f.u_t + kReferenceUnit) * std::abs(th) + dx * (t + dx);
  return 2 * std::abs(th) * dtau + dtau * dtau + 2 * (f.u_s + kReferenceUnit) * (1 + dtau) * (1 + dtau);
}

void check_shape(const char* what, const HostTensor& t, const Shape4& expected) {
  if (t.shape != expected)
    throw ProblemError(fmt::format("gradient_tolerance: {} has shape [{}, {}, {}, {}], expected [{}, {}, {}, {}]", what,
                                   t.shape[0], t.shape[1], t.shape[2], t.shape[3], expected[0], expected[1], expected[2],
                                   expected[3]));
}

// One gradient element after its last sum: `err` the bound on the error of the terms, `mag` the
// sum of |terms| (each at its bound's worst), `roundings` the most roundings any term passes
// through at unit `unit`. Then the store in the gradient dtype (§2.8's output term).
double finish(double err, double mag, double roundings, double unit, double exact, const GradientUnits& u) {
  if (roundings <= 0) return 0.0;  // nothing flows here: the gradient is exactly 0
  const double e = err + gamma(roundings, unit) * mag + roundings * u.eta_acc;
  return e + u.u_grad * (std::abs(exact) + e) + u.eta_grad;
}

}  // namespace

GradientBounds gradient_tolerance(const Problem& problem, const NumericsProfile& forward, const BackwardProfile& backward,
                                  const AttentionInputs& inputs, const BackwardInputs& exact,
                                  const AttentionGradients& reference) {
  const Problem& p = problem;
  check_shape("dQ", reference.d_q, {p.batch, p.q_heads, p.q_len, p.qk_dim});
  check_shape("dK", reference.d_k, {p.batch, p.kv_heads, p.k_len, p.qk_dim});
  check_shape("dV", reference.d_v, {p.batch, p.kv_heads, p.k_len, p.v_dim});
  const GradientUnits u = units_of(forward, backward);
  const detail::Units& f = u.forward;
  const double sigma = p.effective_scale();
  const double sigma_abs = std::abs(sigma);
  const bool bias = p.mask == MaskKind::Additive;
  const bool has_dlse = exact.d_lse.data != nullptr;
  const double dv_len = static_cast<double>(p.v_dim);

  GradientBounds tau;
  tau.d_q = HostTensor(reference.d_q.shape);
  tau.d_k = HostTensor(reference.d_k.shape);
  tau.d_v = HostTensor(reference.d_v.shape);
  // dK, dV, dBias: error and magnitude sums over every row that reads the element, then finish.
  HostTensor k_err(reference.d_k.shape), k_mag(reference.d_k.shape), v_err(reference.d_v.shape),
      v_mag(reference.d_v.shape);
  std::vector<double> key_rows(static_cast<size_t>(p.batch * p.kv_heads * p.k_len), 0.0);
  const bool with_bias = reference.d_bias.has_value();
  HostTensor b_err, b_mag, b_count;
  if (with_bias) {
    b_err = HostTensor(reference.d_bias->shape);
    b_mag = HostTensor(reference.d_bias->shape);
    b_count = HostTensor(reference.d_bias->shape);
  }

  std::vector<KeyTerm> terms;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const std::int64_t g = p.kv_head_of(h);
      double alibi_slope = 0;
      if (p.has_alibi())
        alibi_slope = inputs.alibi_slopes[static_cast<size_t>(p.alibi == AlibiSlopes::PerHead ? h : b * p.q_heads + h)];
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const double lse = exact.lse(0, b, h, i);
        // A row with no allowed key contributes nothing (its dQ is exactly 0, τ 0); a NaN row's
        // gradients are NaN in the reference, which the comparator judges by class.
        if (!std::isfinite(lse)) continue;
        const double d_lse = has_dlse ? exact.d_lse(0, b, h, i) : 0.0;
        // D = Σ_j dO_j Õ_j with Õ the O handed over (rounded to the output dtype, ≤ u_O|O_j| +
        // η_O), accumulated over Dv terms: ε_D.
        double d_term = 0, g_o = 0, g_abs = 0;
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          const double gj = exact.d_out(b, h, i, j), oj = exact.out(b, h, i, j);
          d_term += gj * oj;
          g_o += std::abs(gj * oj);
          g_abs += std::abs(gj);
        }
        // Each of D's Dv products and sums may land among the subnormals: Dv·η_A more.
        const double g_d = gamma(dv_len, u.u_acc);
        const double d_err = (f.u_o + g_d * (1 + f.u_o)) * g_o + (1 + g_d) * g_abs * f.eta_o + dv_len * u.eta_acc;

        // Pass 1: every allowed key's scores and the row's largest Δ (for a recomputed max and sum).
        terms.clear();
        struct Scores { double a, r, th, t, s, alibi; };
        std::vector<Scores> scores;
        double shift_abs = std::abs(lse);
        for (std::int64_t k = 0; k < p.k_len; ++k) {
          if (!key_allowed(p, inputs, b, h, i, k)) continue;
          double dot = 0, a = 0;
          for (std::int64_t l = 0; l < p.qk_dim; ++l) {
            const double x = inputs.q(b, h, i, l) * inputs.k(b, g, k, l);
            dot += x;
            a += std::abs(x);
          }
          Scores sc{};
          sc.a = sigma_abs * a;
          sc.r = sigma * dot;
          sc.th = p.softcap > 0 ? std::tanh(sc.r / p.softcap) : 0.0;
          sc.t = p.softcap > 0 ? (1 - sc.th) * (1 + sc.th) : 1.0;
          const double capped = p.softcap > 0 ? p.softcap * sc.th : sc.r;
          sc.s = capped + (bias ? inputs.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h,
                                              p.mask_q_len == 1 ? 0 : i, k)
                                : 0.0);
          if (p.has_alibi()) {  // −slope·|j − p| (problem.h), at batch b's diagonal
            const std::int64_t key_length = p.has_key_lengths ? inputs.key_lengths[static_cast<size_t>(b)] : p.k_len;
            sc.alibi = alibi_slope * static_cast<double>(std::abs(k - p.diagonal_key(i, key_length)));
            sc.s -= sc.alibi;
            sc.alibi = std::abs(sc.alibi);
          }
          if (!std::isfinite(sc.s)) continue;  // NaN/Inf data: the reference is non-finite there
          shift_abs = std::max(shift_abs, std::abs(sc.s));
          terms.push_back({k, 0, 0, 0, 0, 0, 0});
          scores.push_back(sc);
        }
        const double n = static_cast<double>(terms.size());
        double delta_max = 0;
        for (const Scores& sc : scores) delta_max = std::max(delta_max, logit_error(p, u, sc.a, std::abs(sc.s), shift_abs, sc.alibi));

        for (size_t t = 0; t < terms.size(); ++t) {
          KeyTerm& kt = terms[t];
          const Scores& sc = scores[t];
          const std::int64_t k = kt.key;
          kt.p = std::exp(sc.s - lse);
          // The relative error ρ_k of p̃_k (§10): from the saved lse, e^{Δ_k} and the lse's own
          // float32 rounding u_lse·|lse| (a shift common to the row that, unlike the forward's,
          // no normalisation cancels); from a recomputed max and sum, e^{Δ_k + Δmax}/(1 − G_n)
          // as in §2.4 and §2.6 (G_n the row sum's bound). Then P's store in its dtype.
          const double delta = logit_error(p, u, sc.a, std::abs(sc.s), shift_abs, sc.alibi);
          const double growth = u.from_lse ? std::exp(delta + u.u_lse * std::abs(lse))
                                           : std::exp(delta + delta_max) / (1 - std::min(0.5, gamma(n + 1, u.u_acc)));
          const double rho = (1 + u.u_p) * growth - 1;
          kt.p_err = rho * kt.p + u.eta_p;
          // dP_k = dO·v_k in the dp dtype: γ_Dv(u_dP)·Σ|dO_j v_kj|.
          double dp = 0, dp_abs = 0;
          for (std::int64_t j = 0; j < p.v_dim; ++j) {
            const double x = exact.d_out(b, h, i, j) * inputs.v(b, g, k, j);
            dp += x;
            dp_abs += std::abs(x);
          }
          // dP̃'s Dv products and sums, each of which may also land among the subnormals.
          const double dp_err = gamma(dv_len, u.u_dp) * dp_abs + dv_len * u.eta_dp;
          // ψ̃ = fl(fl(dP̃ − D̃) + dlse): the inputs' errors, then one rounding of size ≤ |dP − D|
          // (plus the error) and, with a dLSE, one of size ≤ |ψ|; each also up to η when subnormal.
          const double difference = dp - d_term;
          const double psi = difference + d_lse;
          double psi_err = (dp_err + d_err) * (1 + u.u_sub) + u.u_sub * std::abs(difference) + u.eta_acc;
          if (has_dlse) psi_err = psi_err * (1 + u.u_sub) + u.u_sub * std::abs(psi) + u.eta_acc;
          // dS̃ = fl_dS(p̃·ψ̃): |p̃ψ̃ − pψ| ≤ |δp||ψ| + |p̃||δψ|, then the product's and the store's
          // rounding (relative, or absolute among the subnormals).
          const double u_m = (1 + u.u_acc) * (1 + u.u_ds) - 1;
          kt.ds = kt.p * psi;
          kt.ds_err = (1 + u_m) * (kt.p_err * std::abs(psi) + (kt.p + kt.p_err) * psi_err) + u_m * std::abs(kt.ds) +
                      u.eta_acc + u.eta_ds;
          if (p.softcap > 0) {
            // dR = dS·t through the slope's error and one more product rounding.
            const double t_err = slope_error(p, u, sc.a, sc.r, sc.th, sc.t);
            kt.dr = kt.ds * sc.t;
            const double ds_hi = std::abs(kt.ds) + kt.ds_err;
            kt.dr_err = sc.t * kt.ds_err + t_err * ds_hi + u.u_acc * (sc.t + t_err) * ds_hi + u.eta_acc;
          } else {
            kt.dr = kt.ds;
            kt.dr_err = kt.ds_err;
          }
        }

        // dQ_il = σ Σ_k dR_k K_kl: the terms' errors, then n products and sums and the scale (n + 1).
        for (std::int64_t l = 0; l < p.qk_dim; ++l) {
          double err = 0, mag = 0;
          for (const KeyTerm& kt : terms) {
            const double kk = std::abs(inputs.k(b, g, kt.key, l));
            err += kt.dr_err * kk;
            mag += (std::abs(kt.dr) + kt.dr_err) * kk;
          }
          tau.d_q(b, h, i, l) = terms.empty() ? 0.0
                                              : finish(sigma_abs * err, sigma_abs * mag, n + 1, u.u_acc,
                                                       reference.d_q(b, h, i, l), u);
        }
        // dK_k and dV_k gather this row's terms.
        for (const KeyTerm& kt : terms) {
          const std::int64_t k = kt.key;
          key_rows[static_cast<size_t>((b * p.kv_heads + g) * p.k_len + k)] += 1;
          for (std::int64_t l = 0; l < p.qk_dim; ++l) {
            const double qq = sigma_abs * std::abs(inputs.q(b, h, i, l));
            k_err(b, g, k, l) += kt.dr_err * qq;
            k_mag(b, g, k, l) += (std::abs(kt.dr) + kt.dr_err) * qq;
          }
          for (std::int64_t j = 0; j < p.v_dim; ++j) {
            const double gg = std::abs(exact.d_out(b, h, i, j));
            v_err(b, g, k, j) += kt.p_err * gg;
            v_mag(b, g, k, j) += (kt.p + kt.p_err) * gg;
          }
          if (with_bias) {
            const std::int64_t mb = p.mask_batch == 1 ? 0 : b, mh = p.mask_heads == 1 ? 0 : h,
                               mi = p.mask_q_len == 1 ? 0 : i;
            b_err(mb, mh, mi, k) += kt.ds_err;
            b_mag(mb, mh, mi, k) += std::abs(kt.ds) + kt.ds_err;
            b_count(mb, mh, mi, k) += 1;
          }
        }
      }
    }

  // dK and dV: a term passes through at most (rows reading the key) + (the group's sums) + 1 (the
  // scale, dK only) roundings, in any order of tiles, threads or atomics.
  const double group = static_cast<double>(p.group_size());
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t k = 0; k < p.k_len; ++k) {
        const double rows = key_rows[static_cast<size_t>((b * p.kv_heads + g) * p.k_len + k)];
        const double roundings = rows > 0 ? rows + group + 1 : 0.0;
        for (std::int64_t l = 0; l < p.qk_dim; ++l)
          tau.d_k(b, g, k, l) = finish(k_err(b, g, k, l), k_mag(b, g, k, l), roundings, u.u_group, reference.d_k(b, g, k, l), u);
        for (std::int64_t j = 0; j < p.v_dim; ++j)
          tau.d_v(b, g, k, j) = finish(v_err(b, g, k, j), v_mag(b, g, k, j), roundings, u.u_group, reference.d_v(b, g, k, j), u);
      }
  if (with_bias) {
    HostTensor t(reference.d_bias->shape);
    for (size_t e = 0; e < t.values.size(); ++e) {
      const double count = b_count.values[e];
      t.values[e] = finish(b_err.values[e], b_mag.values[e], count > 0 ? count + 1 : 0.0, u.u_acc,
                           reference.d_bias->values[e], u);
    }
    tau.d_bias = std::move(t);
  }
  return tau;
}

std::string GradientVerdict::summary() const {
  const std::string ratios = fmt::format("dQ {:.3g}, dK {:.3g}, dV {:.3g}{}", ratio_q, ratio_k, ratio_v,
                                         ratio_bias > 0 ? fmt::format(", dBias {:.3g}", ratio_bias) : std::string());
  if (passed) return fmt::format("passed: max r {:.3g} at {} ({})", max_ratio, worst, ratios);
  return fmt::format("failed: {} (max r {:.3g}; {})", failure, max_ratio, ratios);
}

namespace {

const char* class_of(double x) {
  if (std::isnan(x)) return "NaN";
  if (x == kInf) return "+Inf";
  if (x == -kInf) return "-Inf";
  return "finite";
}

// Judges one tensor; returns its max ratio and records the first failure in `v`.
double judge_tensor(const char* name, const HostTensor& ref, const HostTensor& tau, const HostTensor& actual,
                    GradientVerdict& v) {
  const auto where = [&](size_t e) {
    const Shape4& s = ref.shape;
    const std::int64_t n = static_cast<std::int64_t>(e);
    return fmt::format("{}[{}, {}, {}, {}]", name, n / (s[1] * s[2] * s[3]), n / (s[2] * s[3]) % s[1], n / s[3] % s[2],
                       n % s[3]);
  };
  const auto fail = [&](std::string message) {
    if (v.passed) {
      v.passed = false;
      v.failure = std::move(message);
    }
  };
  if (actual.shape != ref.shape) {
    fail(fmt::format("{} has shape [{}, {}, {}, {}], expected [{}, {}, {}, {}]", name, actual.shape[0], actual.shape[1],
                     actual.shape[2], actual.shape[3], ref.shape[0], ref.shape[1], ref.shape[2], ref.shape[3]));
    return kInf;
  }
  double worst = 0;
  for (size_t e = 0; e < ref.values.size(); ++e) {
    const double x = ref.values[e], y = actual.values[e], t = tau.values[e];
    if (!std::isfinite(x)) {
      // An attended NaN or Inf input: the kernel must produce the same class (NaN with NaN).
      if (std::string_view(class_of(x)) != class_of(y))
        fail(fmt::format("{}: {} where the reference is {} (an attended non-finite input)", where(e), y, class_of(x)));
      continue;
    }
    if (!std::isfinite(y)) {
      fail(fmt::format("{}: {} against a finite reference {}", where(e), y, x));
      worst = kInf;
      continue;
    }
    const double err = std::abs(y - x);
    const double r = err == 0 ? 0.0 : (t > 0 ? err / t : kInf);
    if (r > worst) {
      worst = r;
      if (r > v.max_ratio) {
        v.max_ratio = r;
        v.worst = where(e);
      }
    }
    if (r > 1)
      fail(fmt::format("{}: {} vs reference {} (|error| {:.3g} > τ {:.3g}, r = {:.3g})", where(e), y, x, err, t, r));
  }
  return worst;
}

}  // namespace

GradientVerdict compare_gradients(const AttentionGradients& reference, const GradientBounds& tau,
                                  const AttentionGradients& actual) {
  GradientVerdict v;
  v.ratio_q = judge_tensor("dQ", reference.d_q, tau.d_q, actual.d_q, v);
  v.ratio_k = judge_tensor("dK", reference.d_k, tau.d_k, actual.d_k, v);
  v.ratio_v = judge_tensor("dV", reference.d_v, tau.d_v, actual.d_v, v);
  if (reference.d_bias && tau.d_bias) {
    if (!actual.d_bias) {
      v.passed = false;
      if (v.failure.empty()) v.failure = "dBias was asked for and not returned";
    } else {
      v.ratio_bias = judge_tensor("dBias", *reference.d_bias, *tau.d_bias, *actual.d_bias, v);
    }
  }
  return v;
}

}  // namespace attncheck
