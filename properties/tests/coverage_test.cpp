// Coverage (coverage.h): the cells a case falls in, every cell listed once per axis, and the
// reasons of the unreachable ones.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <set>

#include "attncheck/backend_handle.h"
#include "attncheck/coverage.h"
#include "attncheck/engine.h"
#include "commands.h"  // kDefaultSeed, the command line's

namespace attncheck {
namespace {

AttentionCase case_with(std::int64_t batch, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t q_len,
                        std::int64_t k_len, std::int64_t qk_dim, std::int64_t v_dim) {
  AttentionCase c;
  c.problem.batch = batch;
  c.problem.q_heads = q_heads;
  c.problem.kv_heads = kv_heads;
  c.problem.q_len = q_len;
  c.problem.k_len = k_len;
  c.problem.qk_dim = qk_dim;
  c.problem.v_dim = v_dim;
  return c;
}

// Expected names from coverage.h's definitions by hand: 15 = 16 − 1, 33 = 2·16 + 1, 12/3 = 4
// query heads per kv head, 111 odd, 512 ≥ 256.
TEST(CoverageCells, NameEachAxisValueOfACase) {
  AttentionCase c = case_with(4, 12, 3, 15, 33, 111, 512);
  c.dtype = DType::BF16;
  c.sequence_major = true;
  c.problem.mask = MaskKind::Boolean;
  c.problem.causal = true;
  c.problem.alignment = Alignment::BottomRight;
  EXPECT_EQ(coverage_cells_of(c),
            (std::vector<std::string>{"gqa bf16 mask=bool causal=bottom-right", "batch>=3", "Hq/Hkv>=3", "Lq=tile-1",
                                      "Lk=tile+1", "Dk=odd", "Dv>=256", "Lq<Lk", "layout=blhd", "ALiBi=off", "sinks=off",
                                      "kv=contiguous", "page=none", "packing=padded", "descale=none", "size=small"}));

  // 1 is its own class, 16·k exactly is "tile", 2..14 "between"; 64 and 128 are their own head dims.
  const AttentionCase plain = case_with(1, 2, 2, 1, 1, 64, 128);
  EXPECT_EQ(coverage_cells_of(plain),
            (std::vector<std::string>{"mha f32 mask=none causal=none", "batch=1", "Hq/Hkv=1", "Lq=1", "Lk=1", "Dk=64",
                                      "Dv=128", "Lq=Lk", "layout=bhld", "ALiBi=off", "sinks=off", "kv=contiguous", "page=none",
                                      "packing=padded", "descale=none", "size=small"}));
  const auto cells = coverage_cells_of(case_with(2, 2, 1, 32, 7, 1, 32));
  EXPECT_EQ(std::vector<std::string>(cells.begin() + 1, cells.end()),
            (std::vector<std::string>{"batch=2", "Hq/Hkv=2", "Lq=tile", "Lk=between", "Dk=1", "Dv=other", "Lq>Lk",
                                      "layout=bhld", "ALiBi=off", "sinks=off", "kv=contiguous", "page=none", "packing=padded",
                                      "descale=none", "size=small"}));
  EXPECT_EQ(cells.front(), "mqa f32 mask=none causal=none");
  // A paged cache falls in its layout and page size; 5 is none of the sizes named on the axis.
  AttentionCase paged = case_with(2, 2, 1, 1, 20, 8, 8);
  paged.problem.has_key_lengths = true;
  paged.problem.kv_storage = KvStorage::PagedHeadMajor;
  paged.problem.page_size = 5;
  const auto paged_cells = coverage_cells_of(paged);
  EXPECT_EQ(std::vector<std::string>(paged_cells.end() - 5, paged_cells.end()),
            (std::vector<std::string>{"kv=paged-head", "page=other", "packing=padded", "descale=none", "size=small"}));
  // A packed batch falls in packing=varlen.
  AttentionCase packed = case_with(3, 2, 2, 9, 9, 8, 8);
  packed.problem.has_key_lengths = true;
  packed.problem.varlen = true;
  EXPECT_EQ(coverage_cells_of(packed).end()[-3], "packing=varlen");
  // An fp8 case falls on the descale axis and in no grid cell (the grid crosses computing dtypes).
  AttentionCase fp8 = case_with(1, 2, 1, 3, 5, 8, 8);
  fp8.dtype = DType::E4M3;
  fp8.problem.descale = Descale::PerHead;
  const auto fp8_cells = coverage_cells_of(fp8);
  EXPECT_EQ(fp8_cells.end()[-2], "descale=head");
  EXPECT_EQ(fp8_cells.front().find("e4m3"), std::string::npos) << fp8_cells.front();
  // 129 = 8·16 + 1 is one past every tile it fills, and more than 96 keys make it medium.
  EXPECT_EQ(coverage_cells_of(case_with(1, 1, 1, 129, 129, 4, 4))[3], "Lq=tile+1");
  EXPECT_EQ(coverage_cells_of(case_with(1, 1, 1, 129, 129, 4, 4)).back(), "size=medium");
}

TEST(CoverageCells, EveryCellACaseFallsInIsListedOnceAndOnEachAxisOnce) {
  const CoverageScope scope{{DType::F32, DType::F16, DType::BF16, DType::E4M3}, {}, SizeMix{1, 1}};
  const std::vector<CoverageCell> cells = all_coverage_cells(scope);
  std::map<std::string, std::string> axis_of;
  for (const CoverageCell& cell : cells) {
    EXPECT_TRUE(axis_of.emplace(cell.name, cell.axis).second) << cell.name << " is listed twice";
    EXPECT_TRUE(cell.unreachable.empty()) << cell.name << ": " << cell.unreachable;
  }
  // 3 variants × 3 masks × 5 causal classes per computing dtype (fp8 has no grid), and
  // 3+3+5+5+6+6+3+2+3+2+3+6+2+3+3 axis values.
  EXPECT_EQ(cells.size(), 3u * 45u + 55u);
  for (const AttentionCase& c : {case_with(4, 12, 3, 15, 33, 111, 512), case_with(1, 1, 1, 1, 8192, 64, 64),
                                 case_with(3, 6, 2, 64, 63, 3, 59)}) {
    std::set<std::string> axes;
    for (const std::string& name : coverage_cells_of(c)) {
      ASSERT_TRUE(axis_of.count(name)) << name << " (of " << c.describe() << ") is not a listed cell";
      EXPECT_TRUE(axes.insert(axis_of[name]).second) << c.describe() << " falls twice on axis " << axis_of[name];
    }
    EXPECT_EQ(axes.size(), 16u) << c.describe() << " misses an axis";
  }
}

TEST(CoverageCells, UnreachableCellsSayWhy) {
  const CoverageScope scope{{DType::F32, DType::BF16}, {{DType::BF16, "the backend declines bf16 inputs"}}, SizeMix{}};
  const std::vector<CoverageCell> cells = all_coverage_cells(scope);
  int unreachable = 0;
  for (const CoverageCell& cell : cells) {
    const bool bf16_grid = cell.axis == kGridAxis && cell.name.find(" bf16 ") != std::string::npos;
    const bool sized = cell.name == "size=medium" || cell.name == "size=long";
    const bool descaled = cell.name == "descale=tensor" || cell.name == "descale=head";
    EXPECT_EQ(!cell.unreachable.empty(), bf16_grid || sized || descaled) << cell.name << ": '" << cell.unreachable << "'";
    if (descaled) {
      EXPECT_EQ(cell.unreachable, "the run checks no fp8 dtype the backend takes (--dtype e4m3,e5m2)");
    }
    if (bf16_grid) {
      EXPECT_EQ(cell.unreachable, "the backend declines bf16 inputs");
    }
    if (sized) {
      EXPECT_NE(cell.unreachable.find("size mix"), std::string::npos) << cell.unreachable;
    }
    unreachable += !cell.unreachable.empty();
  }
  EXPECT_EQ(unreachable, 45 + 2 + 2);
  // The summary counts only reachable cells and says why the others cannot be reached.
  const std::string summary = coverage_summary(cells, {{"mha f32 mask=none causal=none", 5}, {"batch=1", 5}});
  EXPECT_NE(summary.find("coverage: 2 of 96 reachable cells reached by 5 cases"), std::string::npos) << summary;
  EXPECT_NE(summary.find("batch: 2, >=3"), std::string::npos) << summary;
  EXPECT_NE(summary.find("unreachable: 45 (the backend declines bf16 inputs)"), std::string::npos) << summary;
}

// A run of fp8 dtypes alone: no grid, and what fp8 inputs never are (paged, packed, undescaled)
// is unreachable, saying why; the descale cells are reachable.
TEST(CoverageCells, AnFp8OnlyRunReachesTheDescaleCellsAndSaysWhyNotTheRest) {
  const CoverageScope scope{{DType::E4M3, DType::E5M2}, {}, SizeMix{1, 1}};
  int unreachable = 0;
  for (const CoverageCell& cell : all_coverage_cells(scope)) {
    EXPECT_NE(cell.axis, kGridAxis) << cell.name;
    const bool never = cell.name == "descale=none" || cell.name == "packing=varlen" || cell.name.starts_with("kv=paged") ||
                       (cell.name.starts_with("page=") && cell.name != "page=none");
    EXPECT_EQ(!cell.unreachable.empty(), never) << cell.name << ": '" << cell.unreachable << "'";
    if (never) {
      EXPECT_EQ(cell.unreachable, "fp8 inputs are contiguous, padded and descaled (backend.h, ABI 2.6)");
    }
    unreachable += !cell.unreachable.empty();
  }
  EXPECT_EQ(unreachable, 1 + 1 + 2 + 5);
}

// Issue-level promise of the generators (generators.cpp): `attncheck run --backend cpu-flash
// --profile quick` at the default seed reaches every reachable cell. What makes it hold: each
// property draws from its own seed (property_seed), each causal class is drawn uniformly, and
// batch 3 is drawn from size 40 on. The expected set is all_coverage_cells, not a copy of it.
TEST(CoverageCells, TheQuickProfileAtTheDefaultSeedReachesEveryReachableCell) {
  const SuiteProfile quick = *find_suite_profile("quick");
  RunSettings settings;
  settings.cases = quick.cases;
  settings.max_size = quick.max_size;
  settings.sizes = quick.sizes;
  settings.seed = cli::kDefaultSeed;
  Backend backend = open_backend("cpu-flash");
  CoverageScope scope{{DType::F32, DType::F16, DType::BF16, DType::E4M3, DType::E5M2}, {}, quick.sizes};
  std::map<std::string, long> counts;
  for (DType dtype : scope.dtypes)
    for (const PropertyDef& property : all_properties()) {
      if (!runs_on(property, dtype)) continue;  // the fp8 family runs on e4m3 and e5m2 only
      const PropertyOutcome outcome = run_property(property, backend, dtype, settings);
      if (property.needs_backward && !backend.has_backward()) {  // the forward's cases reach every cell
        ASSERT_EQ(outcome.status, OutcomeStatus::Skipped) << property.name;
        EXPECT_EQ(outcome.message, "the backend has no backward pass") << property.name;
        continue;
      }
      ASSERT_EQ(outcome.status, OutcomeStatus::Passed) << property.name << " " << dtype_name(dtype) << ": " << outcome.message;
      for (const auto& [cell, count] : outcome.coverage) counts[cell] += count;
    }
  const std::vector<CoverageCell> cells = all_coverage_cells(scope);
  std::vector<std::string> listed;
  for (const CoverageCell& cell : cells) {
    EXPECT_TRUE(cell.unreachable.empty()) << cell.name << " is unreachable for cpu-flash: " << cell.unreachable;
    const auto count = counts.find(cell.name);
    listed.push_back(fmt::format("{}: {}", cell.name, count == counts.end() ? 0 : count->second));
  }
  EXPECT_EQ(missed_coverage_cells(cells, counts), std::vector<std::string>{});
  std::cout << fmt::format("{} cells, cases per cell:\n  {}\n", cells.size(), fmt::join(listed, "\n  "));
}

}  // namespace
}  // namespace attncheck
