// The comparator: the verdict of numerics/README.md §4, the empty-row conventions of §6.1 and the
// exact modes of §7. Every tolerance comes from ToleranceModel; this file only applies it.
#include "attncheck/compare.h"
#include "attncheck/varlen.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <fmt/format.h>
#include <limits>
#include <stdexcept>
#include <vector>

#include "attncheck/accuracy.h"
#include "attncheck/tolerance.h"

namespace attncheck {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// An LSE element has no column (ElementIndex::col = −1): it is written LSE[b,h,i].
std::string index_string(const ElementIndex& e) {
  if (e.col < 0) return fmt::format("LSE[{},{},{}]", e.batch, e.head, e.row);
  return fmt::format("[{},{},{},{}]", e.batch, e.head, e.row, e.col);
}

// Spacing of `dtype` at x: 2u·2^⌊log2|x|⌋, or the subnormal spacing below the normal range.
double ulp_of(DType dtype, double x) {
  const double ax = std::fabs(x);
  if (!(ax >= smallest_normal(dtype))) return smallest_subnormal(dtype);
  return std::ldexp(2 * unit_roundoff(dtype), std::ilogb(ax));
}

// Bit-for-bit equality of two values of one format held in doubles: NaN matches NaN (the
// payload does not survive the conversion to double), +0 differs from −0.
bool same_bits(double x, double y) {
  if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
  return x == y && std::signbit(x) == std::signbit(y);
}

// Same non-finite class: NaN with NaN, +inf with +inf, −inf with −inf.
bool same_nonfinite(double expected, double actual) {
  if (std::isnan(expected)) return std::isnan(actual);
  return expected == actual;
}

void check_shape(const char* what, const Shape4& got, const Shape4& expected) {
  if (got != expected)
    throw std::invalid_argument(
        fmt::format("compare_attention: {} has shape {}, but the problem expects {}", what, shape_string(got),
                    shape_string(expected)));
}

bool all_finite(const View4<const double>& view) {
  if (view.data == nullptr) return true;
  for (std::int64_t a = 0; a < view.shape[0]; ++a)
    for (std::int64_t b = 0; b < view.shape[1]; ++b)
      for (std::int64_t c = 0; c < view.shape[2]; ++c)
        for (std::int64_t d = 0; d < view.shape[3]; ++d)
          if (!std::isfinite(view(a, b, c, d))) return false;
  return true;
}

double percentile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  const auto k = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size()))) - 1;
  const auto at = values.begin() + static_cast<std::ptrdiff_t>(std::min(k, values.size() - 1));
  std::nth_element(values.begin(), at, values.end());
  return *at;
}

// MeanOfV (§6.1): a kernel that masks with a large finite fill value sees every score of an empty
// row rounded to the same value, so every weight is e^0 = 1 exactly — no logit error, no P
// rounding (1 is exact in every format) — and O_j = (Σ_k V_kj)/Lk. What remains is the sum of Lk
// terms with R rescales by exactly 1 and the division: the §2.6 accumulation bound with the
// deterministic γ_N (equal weights are the coherent case of §3.2) and the output rounding.
double mean_of_v_bound(const Problem& problem, const NumericsProfile& profile, double mean_abs, double mean) {
  const bool rz = profile.accumulation_rounding == Rounding::TowardZero;
  const double u_a = (rz ? 2.0 : 1.0) * unit_roundoff(profile.accumulator);
  const double n = static_cast<double>(problem.k_len);
  const double big_n = std::ceil(n / std::max(1, profile.products_per_rounding)) +
                       (profile.softmax_block > 0 ? std::ceil(n / profile.softmax_block) : 0.0);
  const double nu = big_n * u_a;
  const double g = nu < 1 ? nu / (1 - nu) : kInf;
  const double e = g * mean_abs + (g + 2 * u_a) * std::fabs(mean);
  const double eta_o = profile.flushes_subnormals
                           ? smallest_normal(profile.output)
                           : std::max(smallest_subnormal(profile.output) / 2, std::numeric_limits<double>::denorm_min());
  return e + unit_roundoff(profile.output) * (std::fabs(mean) + e) + eta_o;
}

}  // namespace

std::string Verdict::summary() const {
  std::string text = passed ? "PASS" : fmt::format("FAIL ({})", failure);
  // Where no output element exceeds τ (an LSE or NaN-placement failure), the place of the
  // largest ratio says nothing about the failure: the ratio alone is printed.
  if (passed || max_ratio > 1)
    text += fmt::format(" max r={:.3g} at {} ({})", max_ratio, index_string(worst), dominant_term.empty() ? "-" : dominant_term);
  else
    text += fmt::format(" O within τ (max r={:.3g})", max_ratio);
  text += fmt::format(" p50={:.3g} p99={:.3g} rms={:.3g}", p50_ratio, p99_ratio, rms_ratio);
  if (aggregate_checked) text += fmt::format(" agg={:.3g}", aggregate_ratio);
  text += fmt::format(" max|err|={:.3g} rel(A)={:.3g} ulps(A)={:.3g} NMSE={:.3g}", max_abs_error,
                      max_rel_error_row_scale, max_ulps_row_scale, nmse);
  if (lse_max_ratio > 0) text += fmt::format(" LSE r={:.3g}", lse_max_ratio);
  if (empty_rows > 0) text += fmt::format(" empty rows={}", empty_rows);
  if (nonfinite_violations > 0) text += fmt::format(" nonfinite violations={}", nonfinite_violations);
  if (guaranteed_relative_accuracy > 0) text += fmt::format(" τ/|O|={:.3g}", guaranteed_relative_accuracy);
  if (accuracy_checked)
    text += fmt::format(" accuracy: max={:.3g} agg={:.3g} baseline max|err|={:.3g}", accuracy_max_ratio,
                        accuracy_aggregate_ratio, baseline_max_error);
  text += fmt::format(" elements={}", elements);
  return text;
}

Verdict compare_attention(const Problem& problem, const NumericsProfile& profile, const AttentionInputs& stored_inputs,
                          const AttentionResult& reference, const HostTensor& actual_out,
                          const HostTensor* actual_lse, const CompareOptions& options) {
  // Descaled inputs are read as the attention sees them (problem.h): the mean of V an empty row
  // may hold is the mean of the dequantized values.
  std::optional<DequantizedInputs> dequantized;
  if (problem.has_descales()) dequantized = dequantize(problem, stored_inputs);
  const AttentionInputs inputs = dequantized ? dequantized->inputs(stored_inputs) : stored_inputs;
  if (!reference.stats)
    throw std::invalid_argument(
        "compare_attention: the reference carries no row statistics (set ReferenceOptions::row_statistics)");
  const Shape4 out_shape{problem.batch, problem.q_heads, problem.q_len, problem.v_dim};
  const Shape4 lse_shape{1, problem.batch, problem.q_heads, problem.q_len};
  check_shape("the reference output", reference.out.shape, out_shape);
  check_shape("the reference LSE", reference.lse.shape, lse_shape);
  check_shape("the actual output", actual_out.shape, out_shape);
  if (actual_lse != nullptr) check_shape("the actual LSE", actual_lse->shape, lse_shape);

  const ToleranceModel model(problem, profile, options.data, inputs);
  const bool inputs_finite = all_finite(inputs.q) && all_finite(inputs.k) && all_finite(inputs.v);

  Verdict v;
  std::string refusal, nonfinite_failure;
  std::vector<double> ratios;
  ratios.reserve(static_cast<size_t>(element_count(out_shape)));
  double sum_sq_err = 0, sum_sq_ref = 0, sum_sq_ratio = 0;
  // Aggregate check's sums (see below).
  double noise_trace = 0, max_row_trace = 0, coherent_sq = 0;
  bool any_live_row = false, any_nonzero_reference = false, unbounded = false;
  ElementIndex unbounded_at;

  auto note_nonfinite = [&](const ElementIndex& at, const std::string& what) {
    ++v.nonfinite_violations;
    if (nonfinite_failure.empty()) nonfinite_failure = fmt::format("{} at {}", what, index_string(at));
  };

  for (std::int64_t b = 0; b < problem.batch; ++b)
    for (std::int64_t h = 0; h < problem.q_heads; ++h)
      for (std::int64_t i = 0; i < problem.q_len; ++i) {
        // A packed batch's padding rows are no one's output (problem.h): not compared, not counted.
        if (!query_row_exists(problem, inputs.query_lengths, b, i)) continue;
        const double ref_lse = reference.lse(0, b, h, i);
        const bool empty = reference.stats->allowed_keys(0, b, h, i) == 0;
        if (empty) {
          // §6.1: a row with no allowed key is checked against the declared convention (exactly for
          // zeros and NaN, within the bound above for the mean of V).
          ++v.empty_rows;
          const std::int64_t kvh = problem.kv_head_of(h);
          for (std::int64_t j = 0; j < problem.v_dim; ++j) {
            const ElementIndex at{b, h, i, j};
            const double x = actual_out(b, h, i, j);
            ++v.elements;
            switch (profile.empty_row) {
              case EmptyRowConvention::Zeros:
                if (x != 0.0) note_nonfinite(at, fmt::format("empty row: declared zeros, got {}", x));
                break;
              case EmptyRowConvention::NaN:
                if (!std::isnan(x)) note_nonfinite(at, fmt::format("empty row: declared NaN, got {}", x));
                break;
              case EmptyRowConvention::MeanOfV: {
                // The keys the kernel holds: all Lk of a padded batch, a packed sequence's own.
                Problem held = problem;
                if (problem.varlen) held.k_len = inputs.key_lengths[static_cast<size_t>(b)];
                if (held.k_len == 0) {  // no key at all to average: nothing but 0 or NaN is a fill
                  if (x != 0.0 && !std::isnan(x))
                    note_nonfinite(at, fmt::format("empty row of a sequence with no key: declared mean of V, got {}", x));
                  break;
                }
                double sum = 0, sum_abs = 0;
                for (std::int64_t k = 0; k < held.k_len; ++k) {
                  sum += inputs.v(b, kvh, k, j);
                  sum_abs += std::fabs(inputs.v(b, kvh, k, j));
                }
                const double n = static_cast<double>(held.k_len);
                const double mean = sum / n;
                if (!std::isfinite(mean)) {
                  if (!same_nonfinite(mean, x))
                    note_nonfinite(at, fmt::format("empty row: declared mean of V, which is {}, got {}", mean, x));
                  break;
                }
                const double bound = mean_of_v_bound(held, profile, sum_abs / n, mean);
                if (!std::isfinite(x) || std::fabs(x - mean) > bound)
                  note_nonfinite(at, fmt::format("empty row: declared mean of V = {:.9g} (bound {:.3g}), got {:.9g}",
                                                 mean, bound, x));
                break;
              }
            }
          }
          if (actual_lse != nullptr && profile.empty_row_lse == EmptyRowLse::Zero) {
            // Declared (ABI 2.1, §6.1): the kernel writes LSE = 0 for a row with no allowed key
            // (PyTorch's convention); exactly 0, either sign, and nothing else.
            const double x = (*actual_lse)(0, b, h, i);
            if (x != 0.0) note_nonfinite({b, h, i, -1}, fmt::format("empty row: declared LSE = 0, got {}", x));
          } else if (actual_lse != nullptr && profile.empty_row_lse == EmptyRowLse::NegativeInfinity) {
            // log 0 = −inf is always right. FlashAttention writes +inf for zeros (so that
            // exp(s − lse) = 0 in its backward pass); a NaN kernel may write NaN; a fill-value
            // kernel (MeanOfV) writes the fill plus log Lk, a finite value fixed by its undeclared
            // fill, so any finite value is accepted there.
            const double x = (*actual_lse)(0, b, h, i);
            const bool ok = x == -kInf || (profile.empty_row == EmptyRowConvention::Zeros && x == kInf) ||
                            (profile.empty_row == EmptyRowConvention::NaN && std::isnan(x)) ||
                            (profile.empty_row == EmptyRowConvention::MeanOfV && std::isfinite(x));
            if (!ok)
              note_nonfinite({b, h, i, -1}, fmt::format("empty row: LSE {} does not fit the declared {} convention", x,
                                                        empty_row_name(profile.empty_row)));
          }
          continue;
        }

        // A row whose only key is its sink (numerics/README.md §6.7) has O = 0 by structure, as an
        // empty row has: it does not make an all-zero reference a check that cannot fail.
        const bool sink_counted = problem.sinks && !inputs.sinks.empty() &&
                                  inputs.sinks[static_cast<size_t>(h)] != -std::numeric_limits<double>::infinity();
        if (reference.stats->allowed_keys(0, b, h, i) > (sink_counted ? 1.0 : 0.0)) any_live_row = true;
        double row_trace = 0;
        for (std::int64_t j = 0; j < problem.v_dim; ++j) {
          const ElementIndex at{b, h, i, j};
          const double o = reference.out(b, h, i, j), x = actual_out(b, h, i, j);
          ++v.elements;
          if (!std::isfinite(o)) {
            // The reference is non-finite only through an attended NaN/Inf input; from finite
            // inputs it means the check itself is broken and must not pass.
            if (inputs_finite && refusal.empty())
              refusal = fmt::format("reference output is {} at {} although every input is finite", o, index_string(at));
            else if (!same_nonfinite(o, x))
              note_nonfinite(at, fmt::format("reference is {} (an attended non-finite input), got {}", o, x));
            continue;
          }
          if (o != 0.0) any_nonzero_reference = true;
          if (!std::isfinite(x)) {
            note_nonfinite(at, fmt::format("{} against a finite reference {:.9g}", x, o));
            continue;
          }
          const ToleranceTerms t = model.at(reference, b, h, i, j);
          const double tau = t.total();
          if (!std::isfinite(tau)) {
            if (!unbounded) unbounded_at = at;
            unbounded = true;
            continue;
          }
          const double err = std::fabs(x - o);
          const double ratio = err / tau;
          ratios.push_back(ratio);
          sum_sq_ratio += ratio * ratio;
          if (ratio > v.max_ratio || ratios.size() == 1) {
            v.max_ratio = ratio;
            v.worst = at;
            v.dominant_term = t.dominant();
            v.tau_at_worst = tau;
            v.error_at_worst = err;
          }
          const double row_scale = reference.stats->row_scale(b, h, i, j);
          v.max_abs_error = std::max(v.max_abs_error, err);
          const double rel_den = std::max(std::fabs(o), row_scale);
          if (err > 0) v.max_rel_error_row_scale = std::max(v.max_rel_error_row_scale, rel_den > 0 ? err / rel_den : kInf);
          if (rel_den > 0) v.guaranteed_relative_accuracy = std::max(v.guaranteed_relative_accuracy, tau / rel_den);
          v.max_ulps_row_scale = std::max(v.max_ulps_row_scale, err / ulp_of(profile.output, row_scale));
          sum_sq_err += err * err;
          sum_sq_ref += o * o;
          noise_trace += t.noise_variance;
          row_trace += t.noise_variance;
          coherent_sq += t.coherent * t.coherent;
        }
        max_row_trace = std::max(max_row_trace, row_trace);

        if (actual_lse != nullptr && std::isfinite(ref_lse)) {
          const double x = (*actual_lse)(0, b, h, i);
          if (!std::isfinite(x)) {
            note_nonfinite({b, h, i, -1}, fmt::format("LSE is {} against a finite reference {:.9g}", x, ref_lse));
          } else {
            const double ratio = std::fabs(x - ref_lse) / model.lse_bound(reference, b, h, i);
            if (ratio > v.lse_max_ratio) {
              v.lse_max_ratio = ratio;
              v.lse_worst = {b, h, i, -1};
            }
          }
        }
      }

  const auto checked = static_cast<double>(ratios.size());
  if (!ratios.empty()) {
    v.rms_ratio = std::sqrt(sum_sq_ratio / checked);
    v.p50_ratio = percentile(ratios, 0.50);
    v.p99_ratio = percentile(ratios, 0.99);
  }
  v.nmse = sum_sq_ref > 0 ? sum_sq_err / sum_sq_ref : (sum_sq_err > 0 ? kInf : 0.0);

  // Aggregate check (numerics/README.md §4.4). τ bounds each element for the worst case; a
  // systematic defect — a softmax scale off by 2^-10 — moves many elements by a fraction of τ each,
  // which the per-element test cannot see but the error's 2-norm can.
  // Model (ToleranceModel::at): error_ij = D_ij + Z_ij with |D_ij| ≤ coherent_ij and
  // Z = A·θ, θ the independent, mean-zero rounding errors scaled to |θ_t| ≤ 1 (the probabilistic
  // model of §3.2 [HM, IZ]), so θ is sub-Gaussian with parameter 1 (Hoeffding's lemma) and
  // tr(AᵀA) = Σ_ij noise_variance_ij. Hsu, Kakade & Zhang (2012, Thm. 1) give, for Σ = AᵀA,
  //   P(‖Aθ‖² > tr Σ + 2√(tr(Σ²)·x) + 2‖Σ‖·x) ≤ e^{-x}.
  // Rows are separate computations with independent roundings; within a row the terms may be
  // correlated arbitrarily (the row sum and each key's logit are shared by every column), so
  // ‖Σ‖ ≤ max over rows of the row's trace and tr(Σ²) ≤ ‖Σ‖·tr Σ. With x = ln(1/β), β the
  // false-alarm budget, a healthy kernel meets
  //   ‖error‖₂ ≤ ‖coherent‖₂ + √(T + 2√(T·R·x) + 2R·x),   T = tr Σ, R = max row trace,
  // with probability ≥ 1 − β. The ratio of the two sides is gated like τ. It holds only where
  // the probabilistic model does (RN accumulation, generic random data); elsewhere the errors
  // need not average out and the check is not made.
  if (model.probabilistic() && !ratios.empty() && noise_trace > 0) {
    const double x = std::log(1.0 / options.aggregate_false_alarm);
    const double threshold = std::sqrt(coherent_sq) +
                             std::sqrt(noise_trace + 2 * std::sqrt(noise_trace * max_row_trace * x) + 2 * max_row_trace * x);
    v.aggregate_checked = true;
    v.aggregate_ratio = std::sqrt(sum_sq_err) / threshold;
  }

  // The first reason, in order of what invalidates the check most.
  if (!refusal.empty()) {
    v.failure = "refused: " + refusal;
  } else if (any_live_row && !any_nonzero_reference) {
    v.all_zero_reference = true;
    v.failure = "refused: the reference output is all zeros on every row with an allowed key, so no kernel error "
                "could show (a check that cannot fail)";
  } else if (unbounded) {
    v.failure = fmt::format("refused: τ is infinite at {} (a term of the bound overflows), so the declared "
                            "profile cannot be checked there",
                            index_string(unbounded_at));
  } else if (v.nonfinite_violations > 0) {
    v.failure = fmt::format("{} element(s) break the NaN/Inf rules; first: {}", v.nonfinite_violations, nonfinite_failure);
  } else if (v.max_ratio > 1) {
    v.failure = fmt::format("|Ô − O| = {:.3g} exceeds τ = {:.3g} at {} (r = {:.3g}, {} term dominates)",
                            v.error_at_worst, v.tau_at_worst, index_string(v.worst), v.max_ratio, v.dominant_term);
  } else if (v.lse_max_ratio > 1) {
    v.failure = fmt::format("LSE error exceeds its bound at {} (r = {:.3g})", index_string(v.lse_worst), v.lse_max_ratio);
  } else if (v.aggregate_checked && v.aggregate_ratio > 1) {
    v.failure = fmt::format("aggregate error ‖Ô − O‖₂ is {:.3g}× what a healthy kernel reaches with probability "
                            "1 − {:.2g} (a systematic defect: every element below τ, too many near it)",
                            v.aggregate_ratio, options.aggregate_false_alarm);
  }
  if (options.accuracy) {
    const AccuracyMeasure accuracy = measure_accuracy(problem, profile.output, reference, actual_out,
                                                      baseline_attention(problem, inputs, profile.output));
    v.accuracy_checked = true;
    v.accuracy_max_ratio = accuracy.max_ratio;
    v.accuracy_aggregate_ratio = accuracy.aggregate_ratio;
    v.baseline_max_error = accuracy.baseline_max_error;
    const double factor = options.accuracy_factor;
    if (v.failure.empty() && factor > 0 && (accuracy.max_ratio > factor || accuracy.aggregate_ratio > factor)) {
      v.accuracy_failed = true;
      v.failure = fmt::format("accuracy (not conformance): the error is {:.3g}× (max) and {:.3g}× (aggregate) the fp32 "
                              "baseline's, above the accuracy factor {:.3g}",
                              accuracy.max_ratio, accuracy.aggregate_ratio, factor);
    }
  }
  v.passed = v.failure.empty();
  return v;
}

Verdict compare_exact(const HostTensor& expected, const HostTensor& actual, DType output, ExactMode mode,
                      const HostTensor* reference) {
  if (expected.shape != actual.shape)
    throw std::invalid_argument(fmt::format("compare_exact: actual has shape {}, but expected has shape {}",
                                            shape_string(actual.shape), shape_string(expected.shape)));
  if (reference != nullptr && reference->shape != expected.shape)
    throw std::invalid_argument(fmt::format("compare_exact: the reference has shape {}, but expected has shape {}",
                                            shape_string(reference->shape), shape_string(expected.shape)));
  Verdict v;
  std::int64_t mismatches = 0;
  std::string first;
  double sum_sq_err = 0, sum_sq_ref = 0;
  const Shape4 s = expected.shape;
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d) {
          ++v.elements;
          const double e = mode == ExactMode::RoundedExact ? round_to(output, expected(a, b, c, d)) : expected(a, b, c, d);
          const double x = actual(a, b, c, d);
          if (same_bits(e, x)) continue;
          if (reference != nullptr && (*reference)(a, b, c, d) == 0.0 && e == 0.0 && x == 0.0) continue;
          ++mismatches;
          const ElementIndex at{a, b, c, d};
          if (std::isfinite(e) != std::isfinite(x) || std::isnan(e) != std::isnan(x)) ++v.nonfinite_violations;
          const double err = std::fabs(x - e);
          const double ulps = err / ulp_of(output, e);
          if (first.empty()) first = fmt::format("at {}: expected {:.9g}, got {:.9g}", index_string(at), e, x);
          if (mismatches == 1 || !(v.max_ulps_row_scale >= ulps)) {  // the first, then NaN or larger
            v.max_ulps_row_scale = ulps;
            v.worst = at;
            v.error_at_worst = err;
          }
          if (std::isfinite(err)) {
            v.max_abs_error = std::max(v.max_abs_error, err);
            sum_sq_err += err * err;
          }
        }
  for (double e : expected.values)
    if (std::isfinite(e)) sum_sq_ref += e * e;
  v.nmse = sum_sq_ref > 0 ? sum_sq_err / sum_sq_ref : 0.0;
  // In exact mode a mismatch is a ratio of infinity; a match 0.
  v.max_ratio = mismatches > 0 ? kInf : 0.0;
  v.dominant_term = mode == ExactMode::Bitwise ? "bitwise" : "rounded-exact";
  if (mismatches > 0)
    v.failure = fmt::format("{} of {} elements differ from the {} value; first {}", mismatches, v.elements,
                            mode == ExactMode::Bitwise ? "bitwise" : fmt::format("{}-rounded", dtype_name(output)),
                            first);
  v.passed = mismatches == 0;
  return v;
}

}  // namespace attncheck
