#include "row_block.h"

#include <algorithm>
#include <cstdlib>
#include <fmt/format.h>
#include <limits>

#include "kernels/elementary.h"

namespace attncheck::detail {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using StridedRow = Eigen::Map<const Eigen::Array<double, 1, Eigen::Dynamic>, 0, Eigen::InnerStride<>>;

// Row i of the mask at (b, h), keys [key0, key0 + count); size-1 mask dims broadcast.
StridedRow mask_row(const Problem& p, const View4<const double>& mask, std::int64_t b, std::int64_t h, std::int64_t i,
                    std::int64_t key0, std::int64_t count) {
  const double* at = &mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, key0);
  return StridedRow(at, count, Eigen::InnerStride<>(mask.strides[3]));
}

}  // namespace

void check_view(std::string_view tensor, const View4<const double>& view, const Shape4& expected,
                const char* const names[4]) {
  if (view.data == nullptr) throw ProblemError(fmt::format("{}: is missing (no data)", tensor));
  for (int d = 0; d < 4; ++d)
    if (view.shape[d] != expected[d])
      throw ProblemError(fmt::format("{}: dim {} ({}) is {}, but the problem expects {} (shape {} vs {})", tensor, d,
                                     names[d], view.shape[d], expected[d], shape_string(view.shape),
                                     shape_string(expected)));
}

RowMap matrix_at(const View4<const double>& view, std::int64_t b, std::int64_t h, std::int64_t row0,
                 std::int64_t rows, RowMatrix& scratch) {
  const std::int64_t cols = view.shape[3];
  const double* base = view.data + b * view.strides[0] + h * view.strides[1] + row0 * view.strides[2];
  if (view.strides[3] == 1 && (rows <= 1 || view.strides[2] >= cols))
    return RowMap(base, rows, cols, Eigen::OuterStride<>(rows <= 1 ? cols : view.strides[2]));
  scratch.resize(rows, cols);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) scratch(r, c) = base[r * view.strides[2] + c * view.strides[3]];
  return RowMap(scratch.data(), rows, cols, Eigen::OuterStride<>(cols));
}

BlockKeys block_keys(const Problem& p, std::int64_t key_length, std::int64_t i0, std::int64_t rows, bool every_key,
                     std::vector<KeyRange>& ranges) {
  std::int64_t key0 = p.k_len, key1 = 0;
  ranges.resize(static_cast<size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const KeyRange range = p.structural_key_range(i0 + r, key_length);
    ranges[static_cast<size_t>(r)] = range;
    if (range.first < range.last) {
      key0 = std::min(key0, range.first);
      key1 = std::max(key1, range.last);
    }
  }
  if (every_key) {
    key0 = 0;
    key1 = p.k_len;
  }
  for (KeyRange& range : ranges)
    range = range.first < range.last ? KeyRange{range.first - key0, range.last - key0} : KeyRange{0, 0};
  return {key0, std::max<std::int64_t>(key1 - key0, 0)};
}

void apply_softcap(double cap, RowMatrix& scores, RowMatrix* slope) {
  if (slope) slope->resize(scores.rows(), scores.cols());
  for (std::int64_t e = 0; e < scores.size(); ++e) {
    double& s = scores.data()[e];
    const double t = detail::tanh(s / cap);
    s = t * cap;
    if (slope) slope->data()[e] = (1.0 - t) * (1.0 + t);
  }
}

void exclude_and_bias(const Problem& p, const RowBias& bias, std::int64_t b, std::int64_t h, std::int64_t i0,
                      std::int64_t key0, const std::vector<KeyRange>& ranges, RowMatrix& scores) {
  const std::int64_t keys = scores.cols();
  for (std::int64_t r = 0; r < scores.rows(); ++r) {
    auto row = scores.row(r).array();
    const KeyRange range = ranges[static_cast<size_t>(r)];
    const std::int64_t count = range.last - range.first;
    row.head(range.first).setConstant(kNegInf);
    row.tail(keys - range.last).setConstant(kNegInf);
    if (count == 0) continue;
    auto live = row.segment(range.first, count);
    if (p.mask != MaskKind::None) {
      const StridedRow mask_values = mask_row(p, bias.mask, b, h, i0 + r, key0 + range.first, count);
      if (p.mask == MaskKind::Boolean)
        live = (mask_values == 0.0).select(kNegInf, live);
      else  // an additive −inf excludes its key even where the score is NaN or +inf
        live = (mask_values == kNegInf).select(kNegInf, live + mask_values);
    }
    if (p.has_alibi()) {
      // −slope·|j − p|, an excluded key (−inf) staying −inf whatever the slope's sign.
      const std::int64_t diagonal = p.diagonal_key(i0 + r, bias.key_length);
      for (std::int64_t c = 0; c < count; ++c) {
        double& s = live(c);
        const auto distance = static_cast<double>(std::abs(key0 + range.first + c - diagonal));
        if (s != kNegInf) s -= bias.alibi_slope * distance;
      }
    }
  }
}

double alibi_slope(const Problem& p, std::span<const double> slopes, std::int64_t b, std::int64_t h) {
  switch (p.alibi) {
    case AlibiSlopes::None: return 0.0;
    case AlibiSlopes::PerHead: return slopes[static_cast<size_t>(h)];
    case AlibiSlopes::PerBatchHead: return slopes[static_cast<size_t>(b * p.q_heads + h)];
  }
  return 0.0;
}

void canonicalize_nan(double* x, std::int64_t n) {
  for (std::int64_t e = 0; e < n; ++e)
    if (x[e] != x[e]) x[e] = kNaN;
}

DefaultFloatingPointEnvironment::DefaultFloatingPointEnvironment() {
  std::fegetenv(&saved_);
  std::fesetenv(FE_DFL_ENV);  // glibc: also clears x86's FTZ and DAZ bits
}

DefaultFloatingPointEnvironment::~DefaultFloatingPointEnvironment() { std::fesetenv(&saved_); }

}  // namespace attncheck::detail
