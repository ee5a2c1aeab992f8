// The baseline kernel and the accuracy ratios of numerics/README.md §4.5.
#include "attncheck/accuracy.h"

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <stdexcept>
#include <vector>

namespace attncheck {
namespace {

constexpr float kNegInfF = -std::numeric_limits<float>::infinity();

// The baseline stands for a kernel run in IEEE's default environment; a caller's flush-to-zero
// or rounding mode would change its bits and so the yardstick (the reference does the same).
class DefaultEnvironment {
 public:
  DefaultEnvironment() {
    std::fegetenv(&saved_);
    std::fesetenv(FE_DFL_ENV);
  }
  ~DefaultEnvironment() { std::fesetenv(&saved_); }
  DefaultEnvironment(const DefaultEnvironment&) = delete;
  DefaultEnvironment& operator=(const DefaultEnvironment&) = delete;

 private:
  std::fenv_t saved_;
};

// One (batch, kv head)'s rows as contiguous floats: the values are fp32-, fp16- or bf16-
// representable already, so the conversion is exact.
std::vector<float> rows_as_float(const View4<const double>& view, std::int64_t b, std::int64_t h) {
  const std::int64_t rows = view.shape[2], cols = view.shape[3];
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(r * cols + c)] = static_cast<float>(view(b, h, r, c));
  return out;
}

// Spacing of `dtype` at x (as compare.cpp's): 2u·2^⌊log2|x|⌋, the subnormal spacing below the
// normal range (and at 0, so that the floor is never 0).
double ulp_of(DType dtype, double x) {
  const double ax = std::fabs(x);
  if (!(ax >= smallest_normal(dtype))) return smallest_subnormal(dtype);
  return std::ldexp(2 * unit_roundoff(dtype), std::ilogb(ax));
}

void check_shape(const char* what, const Shape4& got, const Shape4& expected) {
  if (got != expected)
    throw std::invalid_argument(fmt::format("measure_accuracy: {} has shape {}, but the problem expects {}", what,
                                            shape_string(got), shape_string(expected)));
}

}  // namespace

HostTensor baseline_attention(const Problem& p, const AttentionInputs& in, DType output) {
  validate_inputs(p, in);
  const DefaultEnvironment environment;
  HostTensor out({p.batch, p.q_heads, p.q_len, p.v_dim});
  const auto scale = static_cast<float>(p.effective_scale());
  const auto cap = static_cast<float>(p.softcap);
  const std::int64_t dk = p.qk_dim, dv = p.v_dim;
  std::vector<float> q_row(static_cast<size_t>(dk)), scores, acc(static_cast<size_t>(dv));
  std::vector<char> allowed;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t key_length = p.has_key_lengths ? in.key_lengths[static_cast<size_t>(b)] : p.k_len;
    for (std::int64_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      const std::vector<float> k = rows_as_float(in.k, b, kvh), v = rows_as_float(in.v, b, kvh);
      for (std::int64_t h = kvh * p.group_size(); h < (kvh + 1) * p.group_size(); ++h)
        for (std::int64_t i = 0; i < p.q_len; ++i) {
          const auto [first, last] = p.structural_key_range(i, key_length);
          for (std::int64_t l = 0; l < dk; ++l) q_row[static_cast<size_t>(l)] = static_cast<float>(in.q(b, h, i, l));
          scores.assign(static_cast<size_t>(last - first), kNegInfF);
          allowed.assign(static_cast<size_t>(last - first), 1);
          float m = kNegInfF;
          bool attended_nan = false, any_allowed = false;
          for (std::int64_t key = first; key < last; ++key) {
            const size_t at = static_cast<size_t>(key - first);
            double bias = 0;
            if (p.mask != MaskKind::None) {
              bias = in.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, key);
              // A boolean false and an additive −inf exclude the key (problem.h), whatever K holds.
              if ((p.mask == MaskKind::Boolean && bias == 0.0) ||
                  (p.mask == MaskKind::Additive && bias == -std::numeric_limits<double>::infinity())) {
                allowed[at] = 0;
                continue;
              }
            }
            const float* kr = k.data() + key * dk;
            float dot = 0;
            for (std::int64_t l = 0; l < dk; ++l) dot = std::fma(q_row[static_cast<size_t>(l)], kr[l], dot);
            float s = scale * dot;
            if (cap > 0) s = cap * std::tanh(s / cap);
            if (p.mask == MaskKind::Additive) s += static_cast<float>(bias);
            scores[at] = s;
            any_allowed = true;
            if (std::isnan(s)) attended_nan = true;
            m = std::max(m, s);
          }
          if (!any_allowed) continue;  // empty row: zeros, as the reference (out is zero-filled)
          std::fill(acc.begin(), acc.end(), 0.0f);
          float row_sum = 0;
          for (std::int64_t key = first; key < last; ++key) {
            const size_t at = static_cast<size_t>(key - first);
            if (!allowed[at]) continue;
            const float weight = attended_nan ? std::numeric_limits<float>::quiet_NaN() : std::exp(scores[at] - m);
            row_sum += weight;
            // A weight of exactly 0 (underflow) contributes nothing, as in the reference: a
            // non-finite V there must not turn into 0·inf = NaN.
            if (weight == 0.0f) continue;
            const float* vr = v.data() + key * dv;
            for (std::int64_t j = 0; j < dv; ++j) acc[static_cast<size_t>(j)] = std::fma(weight, vr[j], acc[static_cast<size_t>(j)]);
          }
          for (std::int64_t j = 0; j < dv; ++j) out(b, h, i, j) = round_to(output, acc[static_cast<size_t>(j)] / row_sum);
        }
    }
  }
  return out;
}

AccuracyMeasure measure_accuracy(const Problem& p, DType output, const AttentionResult& reference,
                                 const HostTensor& actual_out, const HostTensor& baseline_out) {
  if (!reference.stats)
    throw std::invalid_argument("measure_accuracy: the reference carries no row statistics (the floor needs A_ij)");
  const Shape4 shape{p.batch, p.q_heads, p.q_len, p.v_dim};
  check_shape("the reference output", reference.out.shape, shape);
  check_shape("the actual output", actual_out.shape, shape);
  check_shape("the baseline output", baseline_out.shape, shape);
  AccuracyMeasure m;
  double kernel_sq = 0, floored_baseline_sq = 0;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        if (reference.stats->allowed_keys(0, b, h, i) == 0) continue;  // empty rows: a convention, not accuracy
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          const double o = reference.out(b, h, i, j), x = actual_out(b, h, i, j), base = baseline_out(b, h, i, j);
          if (!std::isfinite(o) || !std::isfinite(x) || !std::isfinite(base)) continue;
          const double err = std::fabs(x - o), base_err = std::fabs(base - o);
          // §4.5: the correctly rounded answer is off by up to half an output ulp at |O|; no
          // kernel is asked to beat that, so the baseline is never credited with less.
          const double floor = ulp_of(output, o) / 2;
          const double floored = std::max(base_err, floor);
          ++m.elements;
          m.kernel_max_error = std::max(m.kernel_max_error, err);
          m.baseline_max_error = std::max(m.baseline_max_error, base_err);
          m.floored_baseline_max_error = std::max(m.floored_baseline_max_error, floored);
          kernel_sq += err * err;
          floored_baseline_sq += floored * floored;
        }
      }
  if (m.elements > 0) {
    m.max_ratio = m.kernel_max_error / m.floored_baseline_max_error;
    m.aggregate_ratio = std::sqrt(kernel_sq) / std::sqrt(floored_baseline_sq);
  }
  return m;
}

}  // namespace attncheck
