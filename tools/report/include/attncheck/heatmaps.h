/// \file heatmaps.h
/// \brief The heatmaps of a failing case (report.h's Heatmap), computed from its FailureEvidence
/// without rerunning anything: where the output is off and by how much, in units of τ, and which
/// keys each query row was allowed to see.
#pragma once

#include <cstdint>
#include <vector>

#include "attncheck/evidence.h"
#include "attncheck/report.h"

namespace attncheck {

/// The largest rows or columns a heatmap holds; a longer axis is reduced by blocks (Heatmap).
inline constexpr std::int64_t kHeatmapMaxAxis = 64;

/// The heatmaps of one failing case, in this order:
///  1. r = |Ô − O| / τ over query row × output column at the (batch, head) of the worst element;
///  2. max over output columns of r, over head × query row at that batch;
///  3. the allowed-key pattern over query row × key at that (batch, head): 1 allowed, 0 masked;
///  4. for an LSE failure (FailureKind::Lse, with the kernel's LSE), the LSE's r over head × query
///     row at that batch, r = |LSE − LSE_ref| / the LSE bound (numerics/README.md).
/// r is +inf where Ô is NaN or ±inf against a finite reference, and NaN where no τ judges the
/// element (a non-finite reference, a row with no allowed key — the empty-row convention judges
/// those —, an unbounded τ). The worst element is the largest r (+inf first, the first of equals
/// in [b, h, i, j] order, as the comparator picks Verdict::worst); for an LSE failure the worst
/// LSE row. Axes longer than kHeatmapMaxAxis are reduced by the maximum over blocks, ignoring NaN
/// (a block of NaN only stays NaN); the allowed-key pattern's cell is 1 when any key of the block
/// is allowed. The r maps are left out when the kernel left no output to judge (a crash, a
/// status failure: run_out or tau not shaped like the reference); the pattern is always there.
std::vector<Heatmap> failure_heatmaps(const FailureEvidence& evidence);

/// Whether key `key` is allowed for query row `row` of (batch, head), as the reference decides
/// it (Problem::structural_key_range, then a boolean mask's false or an additive mask's −inf,
/// broadcast over the mask's size-1 dimensions).
bool key_allowed(const Problem& problem, const CaseData& data, std::int64_t batch, std::int64_t head,
                 std::int64_t row, std::int64_t key);

}  // namespace attncheck
