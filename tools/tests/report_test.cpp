// Unit tests of the report library: shards and the unit plan, the JSON round trip, the JUnit and
// Markdown writers, and merging shard reports. The end-to-end checks of the binary (exit codes,
// JUnit schema, sharded runs) are in cli_checks.py.
#include <cmath>
#include <limits>
#include <sstream>

#include <gtest/gtest.h>

#include "attncheck/engine.h"
#include "attncheck/report.h"
#include "attncheck/shard.h"

namespace attncheck {
namespace {

// A report with one unit of each status, a verdict, coverage and awkward text. The values are
// arbitrary; what matters is that each field differs from its default so a dropped field shows.
RunReport sample_report() {
  RunReport r;
  r.run.attncheck_version = "0.1.0";
  r.run.backend = "cpu-naive";
  r.run.backend_spec = "/opt/kernels/libmy kernel.so";
  r.run.backend_origin = "/opt/kernels/libmy kernel.so";
  r.run.profile = "quick";
  r.run.cases = 30;
  r.run.max_size = 60;
  r.run.seed = 18446744073709551615ull;  // UINT64_MAX: must survive JSON exactly
  r.run.property_filter = "causal|gqa";
  r.run.problem_filter = "Hq=8";
  r.run.dtypes = {"f32", "f16"};
  r.run.reproduce = "";
  r.run.shard = {0, 1};
  r.run.total_units = 3;
  r.run.started_at = "2024-05-01T12:00:00";
  r.run.hostname = "ci-runner-7";
  r.run.seconds = 12.5;

  UnitResult passed;
  passed.index = 0;
  passed.property = "causal-prefix";
  passed.dtype = "f32";
  passed.status = UnitStatus::Passed;
  passed.cases = 30;
  passed.worst_ratio = 0.25;
  passed.worst_case = "B=1 Hq=2 Hkv=1 Lq=3 Lk=5 dtype=f32";
  passed.seconds = 0.5;
  passed.coverage = {{"gqa/f32/none/top-left", 12}, {"mha/f32/bool/none", 18}};

  UnitResult failed;
  failed.index = 1;
  failed.property = "gqa-equivalence";
  failed.dtype = "f16";
  failed.status = UnitStatus::Failed;
  failed.message = "output differs <a & b> \"quoted\" 'single' ]]> | pipe\nsecond line\x01 ctrl";
  failed.cases = 4;
  failed.skipped = 2;
  failed.worst_ratio = std::numeric_limits<double>::infinity();
  failed.worst_case = "B=1 Hq=4 Hkv=2";
  failed.shrunk_case = "B=1 Hq=2 Hkv=1 Lq=1 Lk=1 Dk=1 Dv=1 dtype=f16";
  failed.shrunk_verdict = VerdictMetrics{std::numeric_limits<double>::quiet_NaN(), 1e-3, 0.5, 42, "FAIL max r=inf τ≤1"};
  failed.reproduce = "reproduce=AbCd";
  failed.reproduce_command = "attncheck run --backend x --reproduce 'reproduce=AbCd'";
  failed.seconds = 0.25;

  UnitResult skipped;
  skipped.index = 2;
  skipped.property = "layer-agreement";
  skipped.dtype = "f32";
  skipped.status = UnitStatus::Skipped;
  skipped.message = "the backend has no layer entry point";
  r.units = {passed, failed, skipped};
  return r;
}

// NaN != NaN, so field-by-field equality needs NaN-aware comparison for the doubles that may be NaN.
void expect_same(const RunReport& a, const RunReport& b) {
  ASSERT_EQ(a.units.size(), b.units.size());
  EXPECT_EQ(a.run, b.run);
  for (std::size_t i = 0; i < a.units.size(); ++i) {
    UnitResult x = a.units[i], y = b.units[i];
    ASSERT_EQ(x.shrunk_verdict.has_value(), y.shrunk_verdict.has_value()) << "unit " << i;
    if (x.shrunk_verdict) {
      EXPECT_EQ(std::isnan(x.shrunk_verdict->max_ratio), std::isnan(y.shrunk_verdict->max_ratio));
      if (std::isnan(x.shrunk_verdict->max_ratio)) x.shrunk_verdict->max_ratio = y.shrunk_verdict->max_ratio = 0;
    }
    EXPECT_EQ(x, y) << "unit " << i;
  }
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

// --- shards ----------------------------------------------------------------------------------------

TEST(Shard, ParsesIndexOverCount) {
  EXPECT_EQ(parse_shard("0/4"), (Shard{0, 4}));
  EXPECT_EQ(parse_shard("3/4"), (Shard{3, 4}));
  for (const char* bad : {"4/4", "1/0", "-1/4", "1", "a/4", "1/4x", "/4", "1/", ""})
    EXPECT_THROW(parse_shard(bad), UsageError) << bad;
}

TEST(Shard, ReadsGoogleTestVariables) {
  EXPECT_EQ(shard_from_gtest_variables(nullptr, nullptr), std::nullopt);
  EXPECT_EQ(shard_from_gtest_variables("3", "2"), (Shard{2, 3}));
  EXPECT_THROW(shard_from_gtest_variables("3", nullptr), UsageError);
  EXPECT_THROW(shard_from_gtest_variables(nullptr, "0"), UsageError);
  EXPECT_THROW(shard_from_gtest_variables("3", "3"), UsageError);
  EXPECT_THROW(shard_from_gtest_variables("0", "0"), UsageError);
}

TEST(Shard, PlanIsPropertyMajorAndFiltered) {
  const std::vector<std::string> names = {"alpha", "beta", "gamma"};
  const auto plan = plan_units(names, "a$", {"f32", "f16"});
  // "a$" matches alpha, beta and gamma's endings: all three end in 'a'.
  ASSERT_EQ(plan.size(), 6u);
  EXPECT_EQ(plan[1], (PlannedUnit{1, "alpha", "f16"}));
  EXPECT_EQ(plan[2], (PlannedUnit{2, "beta", "f32"}));
  EXPECT_EQ(plan_units(names, "^g", {"f32"}), (std::vector<PlannedUnit>{{0, "gamma", "f32"}}));
  EXPECT_THROW(plan_units(names, "(", {"f32"}), UsageError);
}

TEST(Shard, ShardsPartitionThePlanExactly) {
  const std::vector<std::string> names = {"p0", "p1", "p2", "p3", "p4", "p5", "p6"};
  const auto plan = plan_units(names, "", {"f32", "f16", "bf16"});
  for (int n : {1, 2, 4, 5, 21, 30}) {
    std::vector<int> seen(plan.size(), 0);
    for (int i = 0; i < n; ++i)
      for (const PlannedUnit& u : select_shard(plan, {i, n})) ++seen[u.index];
    for (std::size_t k = 0; k < seen.size(); ++k) EXPECT_EQ(seen[k], 1) << "unit " << k << " with " << n << " shards";
  }
}

// --- JSON ------------------------------------------------------------------------------------------

TEST(ReportJson, RoundTripKeepsEveryField) {
  const RunReport original = sample_report();
  std::stringstream buffer;
  write_json(buffer, original);
  expect_same(original, read_json(buffer, "buffer"));
}

TEST(ReportJson, NonFiniteNumbersAreStrings) {
  const nlohmann::json j = to_json(sample_report());
  EXPECT_EQ(j["units"][1]["worst_ratio"], "inf");
  EXPECT_EQ(j["units"][1]["shrunk_verdict"]["max_ratio"], "nan");
  EXPECT_TRUE(j["units"][0]["shrunk_verdict"].is_null());
  EXPECT_EQ(j["summary"]["failed"], 1);
}

TEST(ReportJson, ErrorsNameTheField) {
  nlohmann::json j = to_json(sample_report());
  j["units"][2].erase("status");
  try {
    report_from_json(j);
    FAIL() << "a unit without status was accepted";
  } catch (const ReportError& e) {
    EXPECT_STREQ(e.what(), "units[2].status: missing");
  }
  j = to_json(sample_report());
  j["run"]["seed"] = "seven";
  EXPECT_THROW(report_from_json(j), ReportError);
  j = to_json(sample_report());
  j["format"] = "something-else";
  EXPECT_THROW(report_from_json(j), ReportError);
  std::stringstream garbage("{not json");
  EXPECT_THROW(read_json(garbage, "garbage.json"), ReportError);
}

TEST(ReportJson, InvalidUtf8IsReplacedNotFatal) {
  RunReport r = sample_report();
  r.units[1].message = "bad byte \xff here";
  std::stringstream buffer;
  write_json(buffer, r);
  EXPECT_EQ(read_json(buffer, "buffer").units[1].message, "bad byte \xEF\xBF\xBD here");
}

// --- JUnit -----------------------------------------------------------------------------------------

TEST(ReportJunit, CountsAndStructure) {
  std::stringstream out;
  write_junit(out, sample_report());
  const std::string xml = out.str();
  // sample_report: 3 units, 1 failed, 1 skipped; dtypes f32 (units 0, 2) and f16 (unit 1).
  EXPECT_NE(xml.find("<testsuites name=\"attncheck cpu-naive\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            std::string::npos);
  EXPECT_NE(xml.find("<testsuite name=\"cpu-naive.f32\" tests=\"2\" failures=\"0\" errors=\"0\" skipped=\"1\""),
            std::string::npos);
  EXPECT_NE(xml.find("<testsuite name=\"cpu-naive.f16\" tests=\"1\" failures=\"1\" errors=\"0\" skipped=\"0\""),
            std::string::npos);
  EXPECT_EQ(count_of(xml, "<testcase "), 3u);
  EXPECT_EQ(count_of(xml, "<failure "), 1u);
  EXPECT_EQ(count_of(xml, "<skipped "), 1u);
  EXPECT_NE(xml.find("<testcase name=\"gqa-equivalence\" classname=\"cpu-naive.f16\""), std::string::npos);
  EXPECT_NE(xml.find("timestamp=\"2024-05-01T12:00:00\""), std::string::npos);
}

TEST(ReportJunit, EscapesMarkupAndControlCharacters) {
  EXPECT_EQ(xml_escape("a<b>&\"c\"'d'"), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
  EXPECT_EQ(xml_escape("x]]>y"), "x]]&gt;y");
  EXPECT_EQ(xml_escape("line\nnext\ttab"), "line&#10;next&#9;tab");
  EXPECT_EQ(xml_escape(std::string("nul\0bel\x07", 8)), "nul\xEF\xBF\xBD" "bel\xEF\xBF\xBD");
  EXPECT_EQ(xml_escape("bad \xC0\xAF overlong"), "bad \xEF\xBF\xBD\xEF\xBF\xBD overlong");
  EXPECT_EQ(xml_escape("τ ≤ 1"), "τ ≤ 1");
  std::stringstream out;
  write_junit(out, sample_report());
  // The raw message holds '<', '&', "]]>" and a control character; none may appear unescaped.
  EXPECT_EQ(out.str().find("<a & b>"), std::string::npos);
  EXPECT_EQ(out.str().find('\x01'), std::string::npos);
  EXPECT_NE(out.str().find("&lt;a &amp; b&gt;"), std::string::npos);
}

// --- Markdown --------------------------------------------------------------------------------------

TEST(ReportMarkdown, OneRowPerUnitAndAFailureSection) {
  std::stringstream out;
  write_markdown(out, sample_report());
  const std::string md = out.str();
  EXPECT_EQ(md.rfind("## ❌ attncheck: `cpu-naive` — 1 passed, 1 failed, 1 skipped", 0), 0u) << md;
  // Header + separator + one row per unit (3): five lines that start with "| ".
  std::size_t rows = 0;
  std::istringstream lines(md);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("| ", 0) == 0 || line.rfind("|---", 0) == 0) ++rows;
  EXPECT_EQ(rows, 5u) << md;
  EXPECT_NE(md.find("| gqa-equivalence | f16 | ❌ failed | inf | – | 4 | 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("#### gqa-equivalence (f16)"), std::string::npos);
  EXPECT_NE(md.find("attncheck run --backend x --reproduce 'reproduce=AbCd'"), std::string::npos);
}

TEST(ReportMarkdown, CellsCannotBreakTheTable) {
  EXPECT_EQ(markdown_cell("a|b\nc<d>"), "a\\|b<br>c&lt;d&gt;");
  EXPECT_EQ(markdown_cell("trailing\n"), "trailing");
}

TEST(ReportMessage, HeadlineSkipsRapidCheckLocation) {
  // The shape of an RC_FAIL description as RapidCheck formats it (rapidcheck/detail/Results).
  EXPECT_EQ(message_headline("/src/property.cpp:56:\nRC_FAIL(x)\n\nO = P: FAIL (r = 4)\n  case: B=1"), "O = P: FAIL (r = 4)");
  EXPECT_EQ(message_headline("f16 inputs are not supported"), "f16 inputs are not supported");
  EXPECT_EQ(message_headline("\nsecond"), "second");
  EXPECT_EQ(message_headline(""), "");
}

// --- merge -----------------------------------------------------------------------------------------

// The sample split into `n` shards by unit index, as n shard runs would have written it.
std::vector<ShardReport> split(const RunReport& whole, int n) {
  std::vector<ShardReport> shards;
  for (int i = 0; i < n; ++i) {
    ShardReport s{"shard" + std::to_string(i) + ".json", whole};
    s.report.run.shard = {i, n};
    s.report.run.hostname = "host" + std::to_string(i);
    s.report.units.clear();
    for (const UnitResult& u : whole.units)
      if (in_shard(u.index, {i, n})) s.report.units.push_back(u);
    shards.push_back(s);
  }
  return shards;
}

TEST(ReportMerge, ShardsMergeBackToTheWhole) {
  const RunReport whole = sample_report();
  auto shards = split(whole, 2);
  std::swap(shards[0], shards[1]);  // the order of the inputs must not matter
  const RunReport merged = merge_reports(shards);
  EXPECT_EQ(merged.run.merged_shards, 2);
  EXPECT_EQ(merged.run.shard, (Shard{0, 1}));
  EXPECT_EQ(merged.run.hostname, "host0,host1");
  RunReport expected = whole;
  expected.run = merged.run;
  expect_same(expected, merged);
}

TEST(ReportMerge, RefusesOverlapsMismatchesAndGaps) {
  const RunReport whole = sample_report();
  auto shards = split(whole, 2);

  auto twice = shards;
  twice.push_back(shards[0]);
  twice.back().source = "copy.json";
  EXPECT_THROW(merge_reports(twice), ReportError);

  auto other_seed = shards;
  other_seed[1].report.run.seed = 1;
  EXPECT_THROW(merge_reports(other_seed), ReportError);

  auto other_count = split(whole, 3);
  other_count[0] = shards[0];
  EXPECT_THROW(merge_reports(other_count), ReportError);

  auto misplaced = shards;
  misplaced[1].report.units.push_back(whole.units[0]);  // index 0 belongs to shard 0/2
  EXPECT_THROW(merge_reports(misplaced), ReportError);

  const std::vector<ShardReport> only_first = {shards[0]};
  EXPECT_THROW(merge_reports(only_first), ReportError);
  EXPECT_EQ(merge_reports(only_first, /*allow_missing=*/true).units.size(), 2u);  // units 0 and 2

  auto already_merged = shards;
  already_merged[0].report.run.merged_shards = 2;
  EXPECT_THROW(merge_reports(already_merged), ReportError);
}

// --- the bridge from the engine --------------------------------------------------------------------

TEST(ReportOutcome, FailureCarriesVerdictAndReproduceCommand) {
  PropertyOutcome outcome;
  outcome.property = "gqa-equivalence";
  outcome.backend = "mutant-gqa-modulo";
  outcome.dtype = DType::BF16;
  outcome.status = OutcomeStatus::Failed;
  outcome.message = "differs";
  outcome.cases_passed = 3;
  outcome.reproduce = "reproduce=XYZ";
  outcome.seed = 9;
  Verdict verdict;
  verdict.max_ratio = 7.5;
  verdict.nmse = 0.01;
  outcome.shrunk_verdict = verdict;
  const UnitResult unit = to_unit_result(outcome, 11, "mutant-gqa-modulo");
  EXPECT_EQ(unit.index, 11u);
  EXPECT_EQ(unit.dtype, "bf16");
  EXPECT_EQ(unit.status, UnitStatus::Failed);
  ASSERT_TRUE(unit.shrunk_verdict.has_value());
  EXPECT_EQ(unit.shrunk_verdict->max_ratio, 7.5);
  EXPECT_EQ(unit.shrunk_verdict->summary, verdict.summary());
  // The command is the engine's reproduce_command, verbatim.
  EXPECT_EQ(unit.reproduce_command, reproduce_command(outcome, "mutant-gqa-modulo"));

  outcome.status = OutcomeStatus::Passed;
  EXPECT_EQ(to_unit_result(outcome, 0, "x").reproduce_command, "");
}

}  // namespace
}  // namespace attncheck
