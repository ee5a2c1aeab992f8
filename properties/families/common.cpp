#include "common.h"

#include <bit>
#include <cstdint>

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

namespace attncheck::props {

const std::vector<ValueKind>& all_value_kinds() {
  static const std::vector<ValueKind> kinds = {
      ValueKind::Gaussian,    ValueKind::Grid,    ValueKind::Ties,   ValueKind::DuplicateKeys, ValueKind::OneHotV,
      ValueKind::LargeLogits, ValueKind::Diffuse, ValueKind::Peaked, ValueKind::ConstantV,     ValueKind::NonNegativeV};
  return kinds;
}

bool same_bits(double a, double b) { return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b); }

void expect_same_output(PropertyContext& ctx, const AttentionCase& c, const JudgedRun& a, const JudgedRun& b,
                        const char* what, const char* why_same_bits) {
  if (ctx.profile(c.problem).deterministic) {
    for (size_t n = 0; n < a.run.out.values.size(); ++n)
      if (!same_bits(a.run.out.values[n], b.run.out.values[n]))
        ctx.fail(c, fmt::format("{}: flat index {} is {} vs {} ({}, so the bits must agree)", what, n, a.run.out.values[n],
                                b.run.out.values[n], why_same_bits));
    return;
  }
  ctx.expect(compare_pair(a.run.out, a.tau, b.run.out, b.tau), c, what);
}

bool declares(PropertyContext& ctx, std::uint32_t option) { return (ctx.backend().declared_options() & option) != 0; }

AttentionResult reference_for(const Problem& problem, const CaseData& data) {
  ReferenceOptions options;
  options.row_statistics = true;
  return reference_attention(problem, data.inputs(problem), options);
}

Verdict judge(PropertyContext& ctx, const AttentionCase& c, const CaseData& data, const BackendRun& run) {
  const AttentionResult reference = reference_for(c.problem, data);
  const bool lse = run.lse && ctx.judges_lse();
  Verdict verdict = compare_attention(c.problem, ctx.profile(c.problem), data.inputs(c.problem), reference, run.out,
                                      lse ? &*run.lse : nullptr, ctx.compare_options(data_character(c.values)));
  ctx.note_judgement(reference, &verdict);
  return verdict;
}

HostTensor tolerance_of(PropertyContext& ctx, const AttentionCase& c, const CaseData& data,
                        const AttentionResult& reference) {
  const ToleranceModel model(c.problem, ctx.profile(c.problem), data_character(c.values), data.inputs(c.problem));
  return model.tau_tensor(reference);
}

Verdict compare_pair(const HostTensor& a, const HostTensor& tau_a, const HostTensor& b, const HostTensor& tau_b) {
  Verdict v;
  v.passed = true;
  double sum_sq_diff = 0, sum_sq = 0;
  const Shape4& s = a.shape;
  for (std::int64_t i0 = 0; i0 < s[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < s[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < s[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < s[3]; ++i3) {
          ++v.elements;
          const double x = a(i0, i1, i2, i3), y = b(i0, i1, i2, i3);
          const double bound = tau_a(i0, i1, i2, i3) + tau_b(i0, i1, i2, i3);
          if (std::isnan(x) && std::isnan(y)) continue;
          const double diff = std::fabs(x - y);
          // NaN on one side only, or different infinities, is a disagreement of any size.
          const double ratio = std::isnan(diff) || std::isinf(diff) ? INFINITY : bound > 0 ? diff / bound : (diff > 0 ? INFINITY : 0);
          if (std::isfinite(diff)) {
            v.max_abs_error = std::max(v.max_abs_error, diff);
            sum_sq_diff += diff * diff;
            sum_sq += x * x;
          }
          if (v.elements == 1 || ratio > v.max_ratio) {
            v.max_ratio = ratio;
            v.worst = {i0, i1, i2, i3};
            v.tau_at_worst = bound;
            v.error_at_worst = diff;
            v.dominant_term = "pair bound τ + τ′";
          }
        }
  v.nmse = sum_sq > 0 ? sum_sq_diff / sum_sq : 0;
  // An infinite τ + τ′ would let every difference pass: refused, as compare_attention refuses it.
  for (std::int64_t n = 0; n < static_cast<std::int64_t>(tau_a.values.size()); ++n)
    if (!std::isfinite(tau_a.values[static_cast<size_t>(n)]) || !std::isfinite(tau_b.values[static_cast<size_t>(n)])) {
      v.passed = false;
      v.failure = fmt::format("refused: τ is infinite at flat index {} (a term of the bound overflows), so the two "
                              "outputs cannot be compared there",
                              n);
      return v;
    }
  if (v.max_ratio > 1) {
    v.passed = false;
    v.failure = fmt::format("the two outputs differ by {:.3g} at [{}, {}, {}, {}] where τ + τ′ = {:.3g}", v.error_at_worst,
                            v.worst.batch, v.worst.head, v.worst.row, v.worst.col, v.tau_at_worst);
  }
  return v;
}

JudgedRun run_and_bound(PropertyContext& ctx, const AttentionCase& c, CaseData data) {
  JudgedRun j{std::move(data), {}, {}, {}};
  j.run = ctx.run(c, j.data);
  j.reference = reference_for(c.problem, j.data);
  ctx.note_judgement(j.reference, nullptr);
  j.tau = tolerance_of(ctx, c, j.data, j.reference);
  return j;
}

JudgedRun run_and_bound(PropertyContext& ctx, const AttentionCase& c) { return run_and_bound(ctx, c, ctx.case_data(c)); }

bool wants_d_bias(const Problem& problem, const BackwardProfile& backward) {
  return problem.mask == MaskKind::Additive && backward.writes_dbias;
}

AttentionResult forward_reference(const Problem& problem, const CaseData& data) {
  return reference_attention(problem, data.inputs(problem));
}

BackwardData backward_data_for(PropertyContext& ctx, const AttentionCase& c, const AttentionResult& forward,
                               bool with_d_lse) {
  return make_backward_data(c, forward, ctx.profile(c.problem).output, with_d_lse);
}

JudgedBackward run_backward_and_bound(PropertyContext& ctx, const AttentionCase& c, CaseData data, BackwardData backward,
                                      bool want_d_bias) {
  JudgedBackward j{std::move(data), {}, std::move(backward), want_d_bias, {}, {}, {}};
  j.run = ctx.run_backward(c, j.data, j.backward, want_d_bias);
  j.forward = forward_reference(c.problem, j.data);
  const AttentionInputs inputs = j.data.inputs(c.problem);
  const BackwardInputs exact = j.backward.exact_inputs(j.forward);
  BackwardOptions options;
  options.bias_gradient = want_d_bias;
  j.reference = reference_attention_backward(c.problem, inputs, exact, options);
  j.tau = gradient_tolerance(c.problem, ctx.profile(c.problem), ctx.backward_profile(c.problem), inputs, exact, j.reference);
  return j;
}

JudgedBackward run_backward_and_bound(PropertyContext& ctx, const AttentionCase& c, bool with_d_lse, bool want_d_bias) {
  CaseData data = ctx.case_data(c);
  const AttentionResult forward = forward_reference(c.problem, data);
  BackwardData backward = backward_data_for(ctx, c, forward, with_d_lse);
  return run_backward_and_bound(ctx, c, std::move(data), std::move(backward), want_d_bias);
}

GradientVerdict judge_gradients(const JudgedBackward& j) {
  return compare_gradients(j.reference, j.tau, j.run.gradients);
}

namespace {

// One tensor of compare_gradient_pair: its largest ratio |a − b| / (τa + τb), kept in `verdict`
// when it is the worst so far; false when a τ is infinite (the bound says nothing there).
bool compare_tensor_pair(std::string_view name, const HostTensor& a, const HostTensor& tau_a, const HostTensor& b,
                         const HostTensor& tau_b, GradientVerdict& verdict, double& tensor_ratio) {
  if (a.shape != b.shape || a.shape != tau_a.shape || a.shape != tau_b.shape) {
    verdict.passed = false;
    verdict.failure = fmt::format("{}: the two runs' shapes differ ([{}] against [{}])", name, fmt::join(a.shape, ", "),
                                  fmt::join(b.shape, ", "));
    return false;
  }
  const Shape4& s = a.shape;
  for (std::int64_t i0 = 0; i0 < s[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < s[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < s[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < s[3]; ++i3) {
          const double bound = tau_a(i0, i1, i2, i3) + tau_b(i0, i1, i2, i3);
          if (!std::isfinite(bound)) {
            verdict.passed = false;
            verdict.failure = fmt::format("refused: τ is infinite at {}[{}, {}, {}, {}] (a term of the bound overflows), "
                                          "so the two runs cannot be compared there",
                                          name, i0, i1, i2, i3);
            return false;
          }
          const double x = a(i0, i1, i2, i3), y = b(i0, i1, i2, i3);
          if (std::isnan(x) && std::isnan(y)) continue;
          const double diff = std::fabs(x - y);
          // NaN on one side only, or different infinities, is a disagreement of any size.
          const double ratio = std::isnan(diff) || std::isinf(diff) ? INFINITY
                               : bound > 0                          ? diff / bound
                                                                    : (diff > 0 ? INFINITY : 0);
          tensor_ratio = std::max(tensor_ratio, ratio);
          if (verdict.worst.empty() || ratio > verdict.max_ratio) {
            verdict.max_ratio = ratio;
            verdict.worst = fmt::format("{}[{}, {}, {}, {}]", name, i0, i1, i2, i3);
            if (ratio > 1)
              verdict.failure = fmt::format("{}: the two runs differ by {:.3g} ({} against {}) where τ + τ′ = {:.3g}",
                                            verdict.worst, diff, x, y, bound);
          }
        }
  return true;
}

}  // namespace

GradientVerdict compare_gradient_pair(const AttentionGradients& a, const GradientBounds& tau_a,
                                      const AttentionGradients& b, const GradientBounds& tau_b) {
  GradientVerdict v;
  v.passed = true;
  if (!compare_tensor_pair("dQ", a.d_q, tau_a.d_q, b.d_q, tau_b.d_q, v, v.ratio_q) ||
      !compare_tensor_pair("dK", a.d_k, tau_a.d_k, b.d_k, tau_b.d_k, v, v.ratio_k) ||
      !compare_tensor_pair("dV", a.d_v, tau_a.d_v, b.d_v, tau_b.d_v, v, v.ratio_v))
    return v;
  if (a.d_bias && b.d_bias && tau_a.d_bias && tau_b.d_bias &&
      !compare_tensor_pair("dBias", *a.d_bias, *tau_a.d_bias, *b.d_bias, *tau_b.d_bias, v, v.ratio_bias))
    return v;
  if (v.max_ratio > 1) v.passed = false;
  else v.failure.clear();
  return v;
}

void ensure_grouped(Problem& p) {
  if (p.kv_heads != p.q_heads) return;
  p.kv_heads = *rc::gen::element<std::int64_t>(1, 2);
  p.q_heads = p.kv_heads * 3;
  if (p.mask_heads != 1) p.mask_heads = p.q_heads;
}

HostTensor repeat_kv_heads(const Problem& p, const HostTensor& t) {
  HostTensor r({t.shape[0], p.q_heads, t.shape[2], t.shape[3]});
  for (std::int64_t b = 0; b < t.shape[0]; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t k = 0; k < t.shape[2]; ++k)
        for (std::int64_t l = 0; l < t.shape[3]; ++l) r(b, h, k, l) = t(b, p.kv_head_of(h), k, l);
  return r;
}

void mask_whole_key_tiles(Problem& p) {
  p.k_len = std::max<std::int64_t>(p.k_len, 130);
  p.causal = true;
  p.alignment = Alignment::BottomRight;
  p.diagonal_offset = 0;
  p.window_left = *rc::gen::inRange<std::int64_t>(0, 4);
  p.window_right = 0;
  if (p.mask != MaskKind::None) p.mask_k_len = p.k_len;
  if (p.batch * p.q_heads * p.q_len * p.k_len * std::max(p.qk_dim, p.v_dim) > 4'000'000) p.q_len = 1;
  if (p.mask != MaskKind::None && p.mask_q_len != 1) p.mask_q_len = p.q_len;
}

}  // namespace attncheck::props
