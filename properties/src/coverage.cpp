#include "attncheck/coverage.h"

#include <fmt/format.h>

#include <algorithm>

namespace attncheck {
namespace {

constexpr const char* kVariants[] = {"mha", "mqa", "gqa"};
constexpr MaskKind kMasks[] = {MaskKind::None, MaskKind::Boolean, MaskKind::Additive};
constexpr const char* kCausal[] = {"none", "top-left", "bottom-right", "offset", "key-lengths"};

std::string grid_cell(std::string_view variant, DType dtype, MaskKind mask, std::string_view causal) {
  return fmt::format("{} {} mask={} causal={}", variant, dtype_name(dtype), mask_kind_name(mask), causal);
}

// The values of one size axis, each with the predicate that places a case in it; exactly one
// value of an axis holds for every case.
struct AxisValue {
  const char* name;
  bool (*holds)(const AttentionCase&);
};
struct Axis {
  const char* name;
  std::vector<AxisValue> values;
};

std::string length_class(std::int64_t length) {
  if (length == 1) return "1";
  switch (length % kTileQuantum) {
    case 0: return "tile";
    case 1: return "tile+1";
    case kTileQuantum - 1: return "tile-1";
    default: return "between";
  }
}

std::string head_dim_class(std::int64_t dim) {
  if (dim == 1) return "=1";
  if (dim >= 256) return ">=256";
  if (dim == 64 || dim == 128) return fmt::format("={}", dim);
  return dim % 2 == 1 ? "=odd" : "=other";
}

std::int64_t heads_per_group(const Problem& p) { return p.kv_heads > 0 ? p.q_heads / p.kv_heads : 0; }

// The one list of axes and their values; a case's cell on each axis is the first value that holds.
const std::vector<Axis>& size_axes() {
  static const std::vector<Axis> axes = {
      {"batch",
       {{"batch=1", [](const AttentionCase& c) { return c.problem.batch == 1; }},
        {"batch=2", [](const AttentionCase& c) { return c.problem.batch == 2; }},
        {"batch>=3", [](const AttentionCase& c) { return c.problem.batch >= 3; }}}},
      {"Hq/Hkv",
       {{"Hq/Hkv=1", [](const AttentionCase& c) { return heads_per_group(c.problem) == 1; }},
        {"Hq/Hkv=2", [](const AttentionCase& c) { return heads_per_group(c.problem) == 2; }},
        {"Hq/Hkv>=3", [](const AttentionCase& c) { return heads_per_group(c.problem) >= 3; }}}},
      {"Lq",
       {{"Lq=1", [](const AttentionCase& c) { return length_class(c.problem.q_len) == "1"; }},
        {"Lq=tile-1", [](const AttentionCase& c) { return length_class(c.problem.q_len) == "tile-1"; }},
        {"Lq=tile", [](const AttentionCase& c) { return length_class(c.problem.q_len) == "tile"; }},
        {"Lq=tile+1", [](const AttentionCase& c) { return length_class(c.problem.q_len) == "tile+1"; }},
        {"Lq=between", [](const AttentionCase& c) { return length_class(c.problem.q_len) == "between"; }}}},
      {"Lk",
       {{"Lk=1", [](const AttentionCase& c) { return length_class(c.problem.k_len) == "1"; }},
        {"Lk=tile-1", [](const AttentionCase& c) { return length_class(c.problem.k_len) == "tile-1"; }},
        {"Lk=tile", [](const AttentionCase& c) { return length_class(c.problem.k_len) == "tile"; }},
        {"Lk=tile+1", [](const AttentionCase& c) { return length_class(c.problem.k_len) == "tile+1"; }},
        {"Lk=between", [](const AttentionCase& c) { return length_class(c.problem.k_len) == "between"; }}}},
      {"Dk",
       {{"Dk=1", [](const AttentionCase& c) { return head_dim_class(c.problem.qk_dim) == "=1"; }},
        {"Dk=odd", [](const AttentionCase& c) { return head_dim_class(c.problem.qk_dim) == "=odd"; }},
        {"Dk=64", [](const AttentionCase& c) { return head_dim_class(c.problem.qk_dim) == "=64"; }},
        {"Dk=128", [](const AttentionCase& c) { return head_dim_class(c.problem.qk_dim) == "=128"; }},
        {"Dk>=256", [](const AttentionCase& c) { return head_dim_class(c.problem.qk_dim) == ">=256"; }},
        {"Dk=other", [](const AttentionCase& c) { return head_dim_class(c.problem.qk_dim) == "=other"; }}}},
      {"Dv",
       {{"Dv=1", [](const AttentionCase& c) { return head_dim_class(c.problem.v_dim) == "=1"; }},
        {"Dv=odd", [](const AttentionCase& c) { return head_dim_class(c.problem.v_dim) == "=odd"; }},
        {"Dv=64", [](const AttentionCase& c) { return head_dim_class(c.problem.v_dim) == "=64"; }},
        {"Dv=128", [](const AttentionCase& c) { return head_dim_class(c.problem.v_dim) == "=128"; }},
        {"Dv>=256", [](const AttentionCase& c) { return head_dim_class(c.problem.v_dim) == ">=256"; }},
        {"Dv=other", [](const AttentionCase& c) { return head_dim_class(c.problem.v_dim) == "=other"; }}}},
      {"Lq vs Lk",
       {{"Lq<Lk", [](const AttentionCase& c) { return c.problem.q_len < c.problem.k_len; }},
        {"Lq=Lk", [](const AttentionCase& c) { return c.problem.q_len == c.problem.k_len; }},
        {"Lq>Lk", [](const AttentionCase& c) { return c.problem.q_len > c.problem.k_len; }}}},
      {"layout",
       {{"layout=bhld", [](const AttentionCase& c) { return !c.sequence_major; }},
        {"layout=blhd", [](const AttentionCase& c) { return c.sequence_major; }}}},
      {"ALiBi",
       {{"ALiBi=off", [](const AttentionCase& c) { return !c.problem.has_alibi(); }},
        {"ALiBi=head", [](const AttentionCase& c) { return c.problem.alibi == AlibiSlopes::PerHead; }},
        {"ALiBi=batch-head", [](const AttentionCase& c) { return c.problem.alibi == AlibiSlopes::PerBatchHead; }}}},
      {"sinks",
       {{"sinks=off", [](const AttentionCase& c) { return !c.problem.sinks; }},
        {"sinks=on", [](const AttentionCase& c) { return c.problem.sinks; }}}},
      {"KV cache",
       {{"kv=contiguous", [](const AttentionCase& c) { return !c.problem.is_paged(); }},
        {"kv=paged", [](const AttentionCase& c) { return c.problem.kv_storage == KvStorage::PagedTokenMajor; }},
        {"kv=paged-head", [](const AttentionCase& c) { return c.problem.kv_storage == KvStorage::PagedHeadMajor; }}}},
      {"page size",  // the sizes users' bug reports name: 1, 16, 64, 256 and one that is no power of two
       {{"page=none", [](const AttentionCase& c) { return !c.problem.is_paged(); }},
        {"page=1", [](const AttentionCase& c) { return c.problem.is_paged() && c.problem.page_size == 1; }},
        {"page=16", [](const AttentionCase& c) { return c.problem.is_paged() && c.problem.page_size == 16; }},
        {"page=64", [](const AttentionCase& c) { return c.problem.is_paged() && c.problem.page_size == 64; }},
        {"page=256", [](const AttentionCase& c) { return c.problem.is_paged() && c.problem.page_size == 256; }},
        {"page=other", [](const AttentionCase& c) {
           const std::int64_t n = c.problem.page_size;
           return c.problem.is_paged() && n != 1 && n != 16 && n != 64 && n != 256;
         }}}},
      {"batch packing",
       {{"packing=padded", [](const AttentionCase& c) { return !c.problem.varlen; }},
        {"packing=varlen", [](const AttentionCase& c) { return c.problem.varlen; }}}},
      {"descale",  // fp8 inputs (ABI 2.6): one factor per tensor, or per batch row and kv head
       {{"descale=none", [](const AttentionCase& c) { return !c.problem.has_descales(); }},
        {"descale=tensor", [](const AttentionCase& c) { return c.problem.descale == Descale::PerTensor; }},
        {"descale=head", [](const AttentionCase& c) { return c.problem.descale == Descale::PerHead; }}}},
      {"size",
       {{"size=small", [](const AttentionCase& c) { return size_class_of(c.problem) == SizeClass::Small; }},
        {"size=medium", [](const AttentionCase& c) { return size_class_of(c.problem) == SizeClass::Medium; }},
        {"size=long", [](const AttentionCase& c) { return size_class_of(c.problem) == SizeClass::Long; }}}},
  };
  return axes;
}

// Within an axis the value alone says it ("Dk: odd, 64", "batch: >=3"); a grid cell and a
// comparison ("Lq<Lk") keep their full name.
std::string value_label(const CoverageCell& cell) {
  if (cell.axis == kGridAxis || !cell.name.starts_with(cell.axis)) return cell.name;
  const std::string rest = cell.name.substr(cell.axis.size());
  return rest.starts_with('=') ? rest.substr(1) : rest;
}

// The cells a run of fp8 dtypes alone cannot reach: fp8 inputs are never paged or packed, and
// always descaled.
bool fp8_only_unreachable(const std::string& cell) {
  return cell == "descale=none" || cell == "packing=varlen" || (cell.starts_with("kv=paged")) ||
         (cell.starts_with("page=") && cell != "page=none");
}

}  // namespace

std::vector<std::string> coverage_cells_of(const AttentionCase& c) {
  const Problem& p = c.problem;
  const char* variant = p.kv_heads == p.q_heads ? "mha" : p.kv_heads == 1 ? "mqa" : "gqa";
  const std::string causal = p.causal ? std::string(alignment_name(p.alignment)) : std::string("none");
  // The grid crosses the computing dtypes; an fp8 case is counted on the descale axis instead.
  std::vector<std::string> cells;
  if (!is_fp8(c.dtype)) cells.push_back(grid_cell(variant, c.dtype, p.mask, causal));
  for (const Axis& axis : size_axes()) {
    const auto value = std::find_if(axis.values.begin(), axis.values.end(), [&](const AxisValue& v) { return v.holds(c); });
    if (value != axis.values.end()) cells.emplace_back(value->name);
  }
  return cells;
}

std::vector<CoverageCell> all_coverage_cells(const CoverageScope& scope) {
  std::vector<CoverageCell> cells;
  bool any_dtype_accepted = false, fp8_accepted = false, plain_accepted = false;
  for (DType dtype : scope.dtypes) {
    const auto declined = scope.declined_dtypes.find(dtype);
    any_dtype_accepted = any_dtype_accepted || declined == scope.declined_dtypes.end();
    (is_fp8(dtype) ? fp8_accepted : plain_accepted) |= declined == scope.declined_dtypes.end();
    if (is_fp8(dtype)) continue;  // the fp8 family's cases are counted on the descale axis
    const std::string reason = declined == scope.declined_dtypes.end() ? "" : declined->second;
    for (const char* variant : kVariants)
      for (MaskKind mask : kMasks)
        for (const char* causal : kCausal) cells.push_back({kGridAxis, grid_cell(variant, dtype, mask, causal), reason});
  }
  for (const Axis& axis : size_axes()) {
    for (const AxisValue& value : axis.values) {
      CoverageCell cell{axis.name, value.name, ""};
      if (!any_dtype_accepted) {
        cell.unreachable = scope.dtypes.empty() ? "the run checks no dtype" : "the backend declines every dtype of the run";
      } else if (cell.name == "size=medium" && scope.sizes.medium_percent <= 0) {
        cell.unreachable = "the run's size mix draws no medium problems (--size-class)";
      } else if (cell.name == "size=long" && scope.sizes.long_percent <= 0) {
        cell.unreachable = "the run's size mix draws no long problems (--size-class)";
      } else if ((cell.name == "descale=tensor" || cell.name == "descale=head") && !fp8_accepted) {
        cell.unreachable = "the run checks no fp8 dtype the backend takes (--dtype e4m3,e5m2)";
      } else if (!plain_accepted && fp8_only_unreachable(cell.name)) {
        cell.unreachable = "fp8 inputs are contiguous, padded and descaled (backend.h, ABI 2.6)";
      }
      cells.push_back(std::move(cell));
    }
  }
  return cells;
}

std::vector<std::string> missed_coverage_cells(const std::vector<CoverageCell>& cells,
                                               const std::map<std::string, long>& counts) {
  std::vector<std::string> missed;
  for (const CoverageCell& cell : cells)
    if (cell.unreachable.empty() && !counts.count(cell.name)) missed.push_back(cell.name);
  return missed;
}

std::string coverage_summary(const std::vector<CoverageCell>& cells, const std::map<std::string, long>& counts) {
  std::size_t reachable = 0, reached = 0;
  long cases = 0;  // every judged case falls in exactly one grid cell
  std::vector<std::pair<std::string, std::vector<std::string>>> never;  // axis → its missed values, in order
  std::map<std::string, std::size_t> unreachable;                     // reason → how many cells
  for (const CoverageCell& cell : cells) {
    const auto count = counts.find(cell.name);
    // Each case falls in one grid cell, or, with fp8 inputs (always descaled, never in the grid), in
    // one descaled cell.
    const bool counts_cases = cell.axis == kGridAxis || cell.name == "descale=tensor" || cell.name == "descale=head";
    if (counts_cases && count != counts.end()) cases += count->second;
    if (!cell.unreachable.empty()) {
      ++unreachable[cell.unreachable];
      continue;
    }
    ++reachable;
    if (count != counts.end()) {
      ++reached;
      continue;
    }
    if (never.empty() || never.back().first != cell.axis) never.push_back({cell.axis, {}});
    never.back().second.push_back(value_label(cell));
  }
  std::string text = fmt::format("coverage: {} of {} reachable cells reached by {} cases", reached, reachable, cases);
  if (!never.empty()) {
    std::vector<std::string> groups;
    for (const auto& [axis, values] : never) {
      // The grid has 45 cells a dtype; past a dozen the JSON report's counts say which.
      if (values.size() > 12) groups.push_back(fmt::format("{}: {} cells (the JSON report counts every cell)", axis, values.size()));
      else groups.push_back(fmt::format("{}: {}", axis, fmt::join(values, ", ")));
    }
    text += fmt::format("; never: {}", fmt::join(groups, "; "));
  }
  for (const auto& [reason, how_many] : unreachable) text += fmt::format("; unreachable: {} ({})", how_many, reason);
  return text;
}

}  // namespace attncheck
