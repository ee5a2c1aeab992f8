// The heatmaps of a failing case from its evidence (heatmaps.h). Every r here is the comparator's
// own quotient |Ô − O| / τ (compare.cpp), with τ as the evidence recorded it, so a cell above 1 is
// an element the verdict failed.
#include "attncheck/heatmaps.h"

#include <cmath>
#include <functional>
#include <limits>

#include <fmt/format.h>

#include "attncheck/tolerance.h"

namespace attncheck {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// The maximum that ignores NaN (an element not judged) but keeps +inf (a non-finite output).
double max_judged(double a, double b) {
  if (std::isnan(a)) return b;
  if (std::isnan(b)) return a;
  return std::max(a, b);
}

std::int64_t block_of(std::int64_t length) {
  return length <= kHeatmapMaxAxis ? 1 : (length + kHeatmapMaxAxis - 1) / kHeatmapMaxAxis;
}

// A rows × cols map of value(i, j), reduced by max_judged over blocks when an axis is too long.
Heatmap reduced_map(std::string title, std::string row_axis, std::string col_axis, std::int64_t rows,
                    std::int64_t cols, const std::function<double(std::int64_t, std::int64_t)>& value) {
  Heatmap map;
  map.title = std::move(title);
  map.row_axis = std::move(row_axis);
  map.col_axis = std::move(col_axis);
  map.row_block = block_of(rows);
  map.col_block = block_of(cols);
  map.rows = (rows + map.row_block - 1) / map.row_block;
  map.cols = (cols + map.col_block - 1) / map.col_block;
  map.values.assign(static_cast<std::size_t>(map.rows * map.cols), kNaN);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      double& cell = map.values[static_cast<std::size_t>((i / map.row_block) * map.cols + j / map.col_block)];
      cell = max_judged(cell, value(i, j));
    }
  return map;
}

// r of one output element, as compare_attention judges it: +inf for a non-finite output against a
// finite reference; NaN where τ does not judge (non-finite reference or τ, an empty row).
double output_ratio(const FailureEvidence& e, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
  if (e.reference.stats && e.reference.stats->allowed_keys(0, b, h, i) == 0) return kNaN;
  const double o = e.reference.out(b, h, i, j), x = e.run_out(b, h, i, j), tau = e.tau(b, h, i, j);
  if (!std::isfinite(o)) return kNaN;
  if (!std::isfinite(x)) return kInf;
  if (!std::isfinite(tau) || !(tau > 0)) return kNaN;
  return std::fabs(x - o) / tau;
}

bool same_shape(const Shape4& a, const Shape4& b) {
  for (std::size_t d = 0; d < 4; ++d)
    if (a[d] != b[d]) return false;
  return true;
}

struct Focus {
  std::int64_t batch = 0, head = 0;
};

// The first largest r in [b, h, i, j] order (+inf above any finite r): Verdict::worst's rule.
Focus worst_element(const Problem& p, const std::function<double(std::int64_t, std::int64_t, std::int64_t)>& row_max) {
  Focus focus;
  double worst = kNaN;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const double r = row_max(b, h, i);
        if (!std::isnan(r) && (std::isnan(worst) || r > worst)) {
          worst = r;
          focus = {b, h};
        }
      }
  return focus;
}

}  // namespace

bool key_allowed(const Problem& p, const CaseData& data, std::int64_t batch, std::int64_t head, std::int64_t row,
                 std::int64_t key) {
  const std::int64_t key_length = p.has_key_lengths ? data.key_lengths.at(static_cast<std::size_t>(batch)) : p.k_len;
  const Problem::KeyRange range = p.structural_key_range(row, key_length);
  if (key < range.first || key >= range.last) return false;
  if (p.mask == MaskKind::None) return true;
  const double m = data.mask(p.mask_batch == 1 ? 0 : batch, p.mask_heads == 1 ? 0 : head,
                             p.mask_q_len == 1 ? 0 : row, key);
  return p.mask == MaskKind::Boolean ? m != 0.0 : m != -kInf;
}

std::vector<Heatmap> failure_heatmaps(const FailureEvidence& e) {
  const Problem& p = e.attention_case.problem;
  const bool has_output = e.reference.out.values.size() > 0 && same_shape(e.run_out.shape, e.reference.out.shape) &&
                          same_shape(e.tau.shape, e.reference.out.shape);
  auto output_row_max = [&](std::int64_t b, std::int64_t h, std::int64_t i) {
    double r = kNaN;
    for (std::int64_t j = 0; j < p.v_dim; ++j) r = max_judged(r, output_ratio(e, b, h, i, j));
    return r;
  };

  // The LSE's r per row; needs the kernel's LSE and the row statistics the LSE bound reads.
  const bool lse_failure = e.kind == FailureKind::Lse && e.run_lse && e.reference.stats &&
                           same_shape(e.run_lse->shape, e.reference.lse.shape);
  std::optional<ToleranceModel> model;
  if (lse_failure) model.emplace(p, e.profile, data_character(e.attention_case.values), e.data.inputs(p));
  auto lse_ratio = [&](std::int64_t b, std::int64_t h, std::int64_t i) {
    const double ref = e.reference.lse(0, b, h, i), x = (*e.run_lse)(0, b, h, i);
    if (!std::isfinite(ref)) return kNaN;
    if (!std::isfinite(x)) return kInf;
    return std::fabs(x - ref) / model->lse_bound(e.reference, b, h, i);
  };

  Focus focus;
  if (lse_failure) focus = worst_element(p, lse_ratio);
  else if (has_output) focus = worst_element(p, output_row_max);
  // Plain variables, not a structured binding: the lambdas below capture them, which C++20
  // allows for bindings but clang 14 (the sanitizer build's compiler) does not.
  const std::int64_t b = focus.batch, h = focus.head;

  std::vector<Heatmap> maps;
  if (has_output) {
    maps.push_back(reduced_map(fmt::format("r over query row × output column, batch {}, head {}", b, h), "query row",
                               "output column", p.q_len, p.v_dim,
                               [&](std::int64_t i, std::int64_t j) { return output_ratio(e, b, h, i, j); }));
    maps.push_back(reduced_map(fmt::format("max over output columns of r, head × query row, batch {}", b), "head",
                               "query row", p.q_heads, p.q_len,
                               [&](std::int64_t hh, std::int64_t i) { return output_row_max(b, hh, i); }));
  }
  maps.push_back(reduced_map(fmt::format("allowed keys (1 allowed, 0 masked), query row × key, batch {}, head {}", b, h),
                             "query row", "key", p.q_len, p.k_len, [&](std::int64_t i, std::int64_t j) {
                               return key_allowed(p, e.data, b, h, i, j) ? 1.0 : 0.0;
                             }));
  maps.back().pattern = true;
  if (lse_failure)
    maps.push_back(reduced_map(fmt::format("LSE r over head × query row, batch {}", b), "head", "query row", p.q_heads,
                               p.q_len, [&](std::int64_t hh, std::int64_t i) { return lse_ratio(b, hh, i); }));
  return maps;
}

}  // namespace attncheck
