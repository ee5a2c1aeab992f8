/// \file coverage.h
/// \brief Coverage cells: the one place that names them. A judged case counts once in each cell
/// it falls in: one cell of the variant × dtype × mask × causal grid ("gqa f16 mask=bool
/// causal=offset"), and one value of every size axis ("batch>=3", "Lk=tile+1", "Dv=odd"). The
/// axes are where attention kernels' bugs hide: a batch or head stride used only from the second
/// one on, a head mapping that agrees with the right one at ratio 1, a partial tile, an odd head
/// dimension, more queries than keys, the [B, L, H, D] memory layout.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "attncheck/case.h"
#include "attncheck/generators.h"

namespace attncheck {

/// Lengths are classed against tiles of kTileQuantum rows or keys: every tile size kernels use
/// (16, 32, 64, 128, …; numerics/README.md §9, generators.h) is a multiple of it, so a length
/// that is one more than a multiple of 16 is one more than a multiple of each tile it fills.
///   "1": L = 1;  "tile": L ≡ 0 (mod 16);  "tile+1": L ≡ 1 (mod 16), L > 1;
///   "tile-1": L ≡ 15 (mod 16);  "between": any other L (2–14, 18–30, …).
inline constexpr std::int64_t kTileQuantum = 16;

/// The axes, in the order the summary lists them.
inline constexpr const char* kGridAxis = "variant x dtype x mask x causal";

/// The cells case `c` falls in: its grid cell first, then one value per size axis.
std::vector<std::string> coverage_cells_of(const AttentionCase& c);

/// One cell a run can count, with its axis and, when no case of the run can reach it, why.
struct CoverageCell {
  std::string axis;         ///< kGridAxis, "batch", "Hq/Hkv", "Lq", "Lk", "Dk", "Dv", "Lq vs Lk", "layout", "size"
  std::string name;         ///< as counted in CaseLog::coverage and the JSON report
  std::string unreachable;  ///< empty when reachable
};

/// What decides which cells a run can reach.
struct CoverageScope {
  std::vector<DType> dtypes;  ///< the run's input dtypes
  /// Dtypes the backend declines (get_profile has none), with the reason: their grid cells are
  /// unreachable, and no axis cell can be reached by them.
  std::map<DType, std::string> declined_dtypes;
  SizeMix sizes;  ///< the run's size mix: without a medium (long) share no case is medium (long)
};

/// Every cell, grid first, then the axes in order; unreachable ones carry their reason.
std::vector<CoverageCell> all_coverage_cells(const CoverageScope& scope);

/// The reachable cells `counts` (cell → judged cases) never counted, by name, in all_coverage_cells order.
std::vector<std::string> missed_coverage_cells(const std::vector<CoverageCell>& cells,
                                               const std::map<std::string, long>& counts);

/// One line for the console: "coverage: 210 of 216 reachable cells reached by 1620 cases; never:
/// Lq: tile-1, tile+1; Dk: odd; unreachable: 45 (bf16 inputs declined by the backend)".
std::string coverage_summary(const std::vector<CoverageCell>& cells, const std::map<std::string, long>& counts);

}  // namespace attncheck
