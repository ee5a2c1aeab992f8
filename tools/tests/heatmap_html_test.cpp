// Unit tests of the heatmaps of a failing case (heatmaps.h), the findings in the JSON report, and
// the HTML report. Expected values are derived by hand from the constructed evidence unless a
// test says otherwise.
#include <cmath>
#include <limits>
#include <sstream>

#include <gtest/gtest.h>

#include "attncheck/backend_handle.h"
#include "attncheck/check.h"
#include "attncheck/engine.h"
#include "attncheck/heatmaps.h"
#include "attncheck/report.h"
#include "attncheck/tolerance.h"

namespace attncheck {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Evidence of a case whose reference output is `reference_out` everywhere, τ = 0.5 everywhere and
// whose kernel output equals the reference: each test then sets the elements it wants off.
FailureEvidence flat_evidence(const Problem& problem) {
  FailureEvidence e;
  e.attention_case.problem = problem;
  e.data = make_case_data(e.attention_case);
  const Shape4 out_shape{problem.batch, problem.q_heads, problem.q_len, problem.v_dim};
  e.reference.out = HostTensor(out_shape, 1.0);
  e.reference.lse = HostTensor({1, problem.batch, problem.q_heads, problem.q_len}, 0.0);
  e.tau = HostTensor(out_shape, 0.5);
  e.run_out = e.reference.out;
  return e;
}

// NaN-aware equality of two value lists (NaN marks an element not judged).
void expect_values(const std::vector<double>& actual, const std::vector<double>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (std::isnan(expected[i])) EXPECT_TRUE(std::isnan(actual[i])) << "cell " << i << " is " << actual[i];
    else EXPECT_EQ(actual[i], expected[i]) << "cell " << i;
  }
}

TEST(FailureHeatmaps, RatioIsTheErrorOverTau) {
  // B=1 Hq=1 Lq=2 Dv=3; element (row 1, column 2) is off by 1.0 = 2τ: r = 2 there, 0 elsewhere.
  FailureEvidence e = flat_evidence(Problem::of_shape(1, 1, 1, 2, 2, 1, 3));
  e.run_out(0, 0, 1, 2) += 1.0;
  const std::vector<Heatmap> maps = failure_heatmaps(e);
  ASSERT_EQ(maps.size(), 3u);  // r, row maximum, allowed keys; no LSE map for an output failure
  EXPECT_EQ(maps[0].rows, 2);
  EXPECT_EQ(maps[0].cols, 3);
  EXPECT_EQ(maps[0].row_block, 1);
  EXPECT_FALSE(maps[0].pattern);
  expect_values(maps[0].values, {0, 0, 0, 0, 0, 2});
  // Head × query row, the maximum over the three columns: row 0 → 0, row 1 → 2.
  EXPECT_EQ(maps[1].rows, 1);
  EXPECT_EQ(maps[1].cols, 2);
  expect_values(maps[1].values, {0, 2});
  // No mask, no causal: every key allowed.
  EXPECT_TRUE(maps[2].pattern);
  expect_values(maps[2].values, {1, 1, 1, 1});
}

TEST(FailureHeatmaps, NonFiniteOutputIsInfiniteAndUnjudgedIsNaN) {
  FailureEvidence e = flat_evidence(Problem::of_shape(1, 1, 1, 1, 1, 1, 4));
  e.run_out(0, 0, 0, 0) = kNaN;                 // NaN against a finite reference: +inf
  e.run_out(0, 0, 0, 1) = -kInf;                // Inf against a finite reference: +inf
  e.reference.out(0, 0, 0, 2) = kNaN;           // the reference itself non-finite: not judged
  e.run_out(0, 0, 0, 2) = kNaN;
  e.tau(0, 0, 0, 3) = kInf;                     // an unbounded τ judges nothing
  expect_values(failure_heatmaps(e)[0].values, {kInf, kInf, kNaN, kNaN});
}

TEST(FailureHeatmaps, FocusIsTheHeadOfTheWorstElement) {
  // Hq=3: the worst r (3, at head 2) beats r = 1.25 at head 0; the first map shows head 2.
  // (Offsets exact in binary, so that 1 + offset − 1 is the offset.)
  FailureEvidence e = flat_evidence(Problem::of_shape(1, 3, 3, 2, 2, 1, 1));
  e.run_out(0, 0, 1, 0) += 0.625;
  e.run_out(0, 2, 0, 0) += 1.5;
  const std::vector<Heatmap> maps = failure_heatmaps(e);
  EXPECT_NE(maps[0].title.find("head 2"), std::string::npos) << maps[0].title;
  expect_values(maps[0].values, {3, 0});
  // Head × query row at batch 0: head 0 row 1 → 1.25, head 2 row 0 → 3.
  expect_values(maps[1].values, {0, 1.25, 0, 0, 3, 0});
}

TEST(FailureHeatmaps, LongAxesAreReducedByTheMaximumOverBlocks) {
  // Lq = 130 > 64: blocks of ⌈130/64⌉ = 3 rows, ⌈130/3⌉ = 44 cells. Rows 126–128 form cell 42:
  // r = 1.5 at row 127 and 5 at row 128 give 5; row 129 alone is cell 43 (r = 0.5).
  FailureEvidence e = flat_evidence(Problem::of_shape(1, 1, 1, 130, 2, 1, 1));
  e.run_out(0, 0, 127, 0) += 0.75;
  e.run_out(0, 0, 128, 0) += 2.5;
  e.run_out(0, 0, 129, 0) += 0.25;
  e.reference.out(0, 0, 0, 0) = kNaN;  // one unjudged element does not hide its block's judged ones
  const Heatmap map = failure_heatmaps(e)[0];
  EXPECT_EQ(map.row_block, 3);
  EXPECT_EQ(map.rows, 44);
  EXPECT_EQ(map.col_block, 1);
  std::vector<double> expected(44, 0.0);
  expected[42] = 5;
  expected[43] = 0.5;
  expect_values(map.values, expected);
}

TEST(FailureHeatmaps, AllowedKeysFollowCausalWindowAndMasks) {
  // Causal top-left, Lq = 3, Lk = 4, window left 1: row i sees keys [i − 1, i] ∩ [0, Lk).
  Problem p = Problem::of_shape(1, 1, 1, 3, 4, 1, 1);
  p.causal = true;
  p.window_left = 1;
  const Heatmap causal = failure_heatmaps(flat_evidence(p))[2];
  expect_values(causal.values, {1, 0, 0, 0,  //
                                1, 1, 0, 0,  //
                                0, 1, 1, 0});
  // An additive mask broadcast over rows with −inf at key 1, and a boolean-free causal: key 1
  // masked in every row; a mask of length 3 < Lk masks key 3 too (ONNX padding rule).
  Problem q = Problem::of_shape(1, 1, 1, 2, 4, 1, 1);
  q.mask = MaskKind::Additive;
  q.mask_k_len = 3;
  FailureEvidence e = flat_evidence(q);
  e.data.mask(0, 0, 0, 1) = -kInf;
  e.data.mask(0, 0, 0, 2) = -1e30;  // a large finite bias still lets the key through
  expect_values(failure_heatmaps(e)[2].values, {1, 0, 1, 0,  //
                                                1, 0, 1, 0});
  // A boolean mask per row: 0 masks.
  Problem r = Problem::of_shape(1, 1, 1, 2, 2, 1, 1);
  r.mask = MaskKind::Boolean;
  r.mask_q_len = 2;
  r.mask_k_len = 2;
  FailureEvidence f = flat_evidence(r);
  f.data.mask = HostTensor({1, 1, 2, 2}, 1.0);
  f.data.mask(0, 0, 1, 0) = 0.0;
  expect_values(failure_heatmaps(f)[2].values, {1, 1, 0, 1});
}

TEST(FailureHeatmaps, AllowedKeysFollowKeyLengths) {
  Problem p = Problem::of_shape(2, 1, 1, 1, 3, 1, 1);
  p.has_key_lengths = true;
  AttentionCase c;
  c.problem = p;
  c.key_lengths = {3, 1};
  FailureEvidence e = flat_evidence(p);
  e.attention_case = c;
  e.data = make_case_data(c);
  // Batch 1's r is worst, so the pattern is batch 1's: key_lengths[1] = 1 leaves key 0 only.
  e.run_out(1, 0, 0, 0) += 2;
  const Heatmap map = failure_heatmaps(e)[2];
  EXPECT_NE(map.title.find("batch 1"), std::string::npos) << map.title;
  expect_values(map.values, {1, 0, 0});
}

TEST(FailureHeatmaps, LseFailureAddsTheLseRatioMap) {
  // A real reference with row statistics, so that the LSE bound is the tolerance model's; the
  // kernel's LSE is off by 3 bounds in row 1 of head 0 (r = 3 there by construction), exact elsewhere.
  AttentionCase c;
  c.problem = Problem::of_shape(1, 2, 2, 2, 3, 4, 2);
  FailureEvidence e;
  e.attention_case = c;
  e.data = make_case_data(c);
  e.profile = NumericsProfile{};
  ReferenceOptions options;
  options.row_statistics = true;
  e.reference = reference_attention(c.problem, e.data.inputs(c.problem), options);
  e.run_out = e.reference.out;
  e.tau = HostTensor(e.reference.out.shape, 1.0);
  const ToleranceModel model(c.problem, e.profile, data_character(c.values), e.data.inputs(c.problem));
  e.run_lse = e.reference.lse;
  const double bound = model.lse_bound(e.reference, 0, 0, 1);
  (*e.run_lse)(0, 0, 0, 1) += 3 * bound;
  // The one inexact step is the rounding of LSE + 3·bound in double: half an ulp of the sum.
  const double rounding = (std::fabs(e.reference.lse(0, 0, 0, 1)) + 3 * bound) * 0x1p-53 / bound;
  e.kind = FailureKind::Lse;
  const std::vector<Heatmap> maps = failure_heatmaps(e);
  ASSERT_EQ(maps.size(), 4u);
  EXPECT_EQ(maps[3].rows, 2);
  EXPECT_EQ(maps[3].cols, 2);
  ASSERT_EQ(maps[3].values.size(), 4u);
  EXPECT_NEAR(maps[3].values[1], 3.0, rounding);
  EXPECT_EQ(maps[3].values[0], 0.0);
  EXPECT_EQ(maps[3].values[2], 0.0);
  EXPECT_EQ(maps[3].values[3], 0.0);
}

TEST(FailureHeatmaps, NoOutputLeavesOnlyThePattern) {
  FailureEvidence e = flat_evidence(Problem::of_shape(1, 1, 1, 2, 2, 1, 1));
  e.run_out = HostTensor{};  // a crash: nothing returned
  const std::vector<Heatmap> maps = failure_heatmaps(e);
  ASSERT_EQ(maps.size(), 1u);
  EXPECT_TRUE(maps[0].pattern);
}

TEST(FailureHeatmaps, WindowExclusiveMutantFailsOnlyRowsThatSeeABoundaryKey) {
  // mutant-window-exclusive treats the window bounds as exclusive. Window left 1, right unbounded,
  // top-left: row i sees keys j ≥ i − 1; the mutant keeps j > i − 1 only, so rows 1..3 lose a key
  // (a weight far above τ with Gaussian data) while row 0, whose bound −1 is no key, is exact.
  Backend backend = open_backend("mutant-window-exclusive");
  AttentionCase c;
  c.problem = Problem::of_shape(1, 1, 1, 4, 4, 8, 2);
  c.problem.window_left = 1;
  c.seed = 7;
  const CaseData data = make_case_data(c);
  const CaseCheck check = check_case(backend, c, data);
  ASSERT_FALSE(check.declined) << *check.declined;
  ASSERT_FALSE(check.verdict.passed) << check.verdict.summary();
  FailureEvidence e;
  e.attention_case = c;
  e.data = data;
  e.profile = check.profile;
  ReferenceOptions options;
  options.row_statistics = true;
  e.reference = reference_attention(c.problem, data.inputs(c.problem), options);
  e.run_out = check.run.out;
  e.verdict = check.verdict;
  const ToleranceModel model(c.problem, e.profile, data_character(c.values), data.inputs(c.problem));
  e.tau = HostTensor(e.reference.out.shape);
  for (std::int64_t i = 0; i < 4; ++i)
    for (std::int64_t j = 0; j < 2; ++j) e.tau(0, 0, i, j) = model.at(e.reference, 0, 0, i, j).total();
  const std::vector<Heatmap> maps = failure_heatmaps(e);
  const Heatmap& row_max = maps[1];
  EXPECT_LE(row_max.values[0], 1.0);
  for (int i = 1; i < 4; ++i) EXPECT_GT(row_max.values[static_cast<std::size_t>(i)], 1.0) << "row " << i;
  // The r map's maximum is the comparator's max_ratio (the same quotient, element by element).
  double largest = 0;
  for (double r : maps[0].values) largest = std::max(largest, r);
  EXPECT_DOUBLE_EQ(largest, check.verdict.max_ratio);
  expect_values(maps[2].values, {1, 1, 1, 1,  //
                                 1, 1, 1, 1,  //
                                 0, 1, 1, 1,  //
                                 0, 0, 1, 1});
}

// --- Findings in reports --------------------------------------------------------------------

FindingResult sample_finding() {
  FindingResult f;
  f.kind = "output";
  f.message = "O differs <b>here</b> & \"there\"";
  f.minimal_case = "B=1 Hq=1 Hkv=1 Lq=2 Lk=2 Dk=1 Dv=1 window=1,0 dtype=f32 seed=3";
  f.pinned_case = "B=1 Hq=1 Hkv=1 Lq=2 Lk=2 Dk=1 Dv=1 dtype=f32 seed=3";
  f.simplifications = {"softcap=1 → off", "Lq=5 → 2"};
  f.excluded = "window-exclusive";
  f.diagnoses = {{"window-exclusive", "matches the reference with window bounds exclusive (p − left < j < p + right)"}};
  f.verdict = VerdictMetrics{7.5, 0.01, 0.2, 1e5, "FAIL max r=7.5"};
  f.reproduce_command = "attncheck run --backend mutant-window-exclusive --case 'B=1 <x>'";
  Heatmap r;
  r.title = "r over query row × output column, batch 0, head 0";
  r.row_axis = "query row";
  r.col_axis = "output column";
  r.rows = 1;
  r.cols = 3;
  r.values = {0.5, kInf, kNaN};
  Heatmap pattern;
  pattern.title = "allowed keys";
  pattern.row_axis = "query row";
  pattern.col_axis = "key";
  pattern.rows = 1;
  pattern.cols = 2;
  pattern.row_block = 2;
  pattern.values = {1, 0};
  pattern.pattern = true;
  f.heatmaps = {r, pattern};
  return f;
}

RunReport report_with_finding() {
  RunReport report;
  report.run.backend = "mutant-window-exclusive";
  report.run.backend_spec = "mutant-window-exclusive";
  report.run.backend_origin = "built-in";
  report.run.profile = "quick";
  report.run.dtypes = {"f32"};
  UnitResult u;
  u.index = 0;
  u.property = "reference-agreement";
  u.dtype = "f32";
  u.status = UnitStatus::Failed;
  u.message = "failed";
  u.findings = {sample_finding(), sample_finding()};
  u.findings[1].kind = "lse";
  u.findings[1].diagnoses.clear();
  u.coverage = {{"mha f32 mask=none causal=none", 4}, {"size=small", 4}};
  report.units = {u};
  return report;
}

void expect_same_findings(const std::vector<FindingResult>& a, const std::vector<FindingResult>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    FindingResult x = a[i], y = b[i];
    ASSERT_EQ(x.heatmaps.size(), y.heatmaps.size());
    for (std::size_t m = 0; m < x.heatmaps.size(); ++m) {
      expect_values(x.heatmaps[m].values, y.heatmaps[m].values);
      x.heatmaps[m].values.clear();
      y.heatmaps[m].values.clear();
    }
    EXPECT_EQ(x, y);
  }
}

TEST(FindingsJson, RoundTrip) {
  const RunReport report = report_with_finding();
  std::stringstream text;
  write_json(text, report);
  const RunReport back = read_json(text, "report.json");
  expect_same_findings(back.units[0].findings, report.units[0].findings);
  EXPECT_EQ(back.units[0].coverage, report.units[0].coverage);
}

TEST(FindingsJson, OlderReportsWithoutFindingsStillRead) {
  nlohmann::json j = to_json(report_with_finding());
  j["units"][0].erase("findings");
  EXPECT_TRUE(report_from_json(j).units[0].findings.empty());
}

TEST(FindingsJson, MalformedHeatmapIsRefusedWithItsPath) {
  nlohmann::json j = to_json(report_with_finding());
  j["units"][0]["findings"][1]["heatmaps"][0]["values"].erase(0);
  try {
    report_from_json(j);
    FAIL() << "a heatmap with 2 values for 1 × 3 cells was accepted";
  } catch (const ReportError& e) {
    EXPECT_NE(std::string(e.what()).find("units[0].findings[1].heatmaps[0].values"), std::string::npos) << e.what();
  }
}

TEST(FindingsJson, MergeKeepsFindings) {
  RunReport shard0 = report_with_finding(), shard1 = report_with_finding();
  shard0.run.shard = {0, 2};
  shard1.run.shard = {1, 2};
  shard0.run.total_units = shard1.run.total_units = 2;
  shard1.units[0].index = 1;
  shard1.units[0].findings.resize(1);
  const RunReport merged = merge_reports({{"a.json", shard0}, {"b.json", shard1}});
  ASSERT_EQ(merged.units.size(), 2u);
  expect_same_findings(merged.units[0].findings, shard0.units[0].findings);
  expect_same_findings(merged.units[1].findings, shard1.units[0].findings);
}

TEST(ToUnitResult, FindingsCarryEverythingAndTheirHeatmaps) {
  PropertyOutcome outcome;
  outcome.property = "reference-agreement";
  outcome.dtype = DType::F32;
  outcome.status = OutcomeStatus::Failed;
  outcome.seed = 11;
  FailureFinding f;
  f.kind = FailureKind::Output;
  f.message = "O differs";
  f.minimal_case = "B=1 Hq=1 Hkv=1 Lq=2 Lk=2 Dk=1 Dv=3 dtype=f32";
  f.pinned_case = f.minimal_case;
  f.simplifications = {"causal → off"};
  f.diagnoses = {{"window-exclusive", "window bounds exclusive"}};
  Verdict v;
  v.max_ratio = 2;
  f.verdict = v;
  f.evidence = flat_evidence(Problem::of_shape(1, 1, 1, 2, 2, 1, 3));
  f.evidence->run_out(0, 0, 1, 2) += 1.0;
  outcome.failures = {f};
  const UnitResult unit = to_unit_result(outcome, 0, "mutant-x");
  ASSERT_EQ(unit.findings.size(), 1u);
  const FindingResult& r = unit.findings[0];
  EXPECT_EQ(r.kind, "output");
  EXPECT_EQ(r.message, "O differs");
  EXPECT_EQ(r.minimal_case, f.minimal_case);
  EXPECT_EQ(r.simplifications, f.simplifications);
  ASSERT_EQ(r.diagnoses.size(), 1u);
  EXPECT_EQ(r.diagnoses[0].first, "window-exclusive");
  ASSERT_TRUE(r.verdict);
  EXPECT_EQ(r.verdict->max_ratio, 2);
  EXPECT_EQ(r.reproduce_command, finding_reproduce_command(outcome, f, "mutant-x"));
  ASSERT_EQ(r.heatmaps.size(), 3u);
  expect_values(r.heatmaps[0].values, {0, 0, 0, 0, 0, 2});
}

// --- HTML --------------------------------------------------------------------------------------

TEST(Html, EscapesMarkupQuotesAndControls) {
  EXPECT_EQ(html_escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(html_escape("tab\tline\nbell\x07"), "tab\tline\nbell\xEF\xBF\xBD");
  EXPECT_EQ(html_escape("bad \xC3"), "bad \xEF\xBF\xBD");
  EXPECT_EQ(html_escape("τ ≤ 1"), "τ ≤ 1");
}

TEST(Html, PageIsSelfContainedAndEscapesUserText) {
  RunReport report = report_with_finding();
  report.units[0].property = "<script>alert(1)</script>";
  std::ostringstream out;
  write_html(out, report);
  const std::string page = out.str();
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(page.find("<script"), std::string::npos);  // no script at all, and none injected
  EXPECT_NE(page.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(page.find("O differs &lt;b&gt;here&lt;/b&gt; &amp; &quot;there&quot;"), std::string::npos);
  // Nothing fetched: no external reference of any kind.
  for (const char* external : {"http://", "https://", "src=", "<link", "@import", "url(http"}) {
    std::string rest = page;
    // The SVG namespace is an identifier, not a fetch.
    for (std::size_t at; (at = rest.find("http://www.w3.org/2000/svg")) != std::string::npos;) rest.erase(at, 26);
    EXPECT_EQ(rest.find(external), std::string::npos) << external;
  }
}

TEST(Html, FindingsDiagnosesCommandsAndHeatmapsAppear) {
  std::ostringstream out;
  write_html(out, report_with_finding());
  const std::string page = out.str();
  EXPECT_NE(page.find("Finding 1 of 2: output"), std::string::npos);
  EXPECT_NE(page.find("Finding 2 of 2: lse"), std::string::npos);
  EXPECT_NE(page.find("<code>window-exclusive</code>: matches the reference"), std::string::npos);
  EXPECT_NE(page.find("No hypothesis of the catalogue reproduces"), std::string::npos);
  EXPECT_NE(page.find("<code class=\"command\">attncheck run --backend mutant-window-exclusive --case &#39;B=1 &lt;x&gt;&#39;</code>"),
            std::string::npos);
  EXPECT_NE(page.find("softcap=1 → off"), std::string::npos);
  EXPECT_NE(page.find("Searched with excluded:</strong> window-exclusive"), std::string::npos);
  // r = 0.5 within τ, +inf black, NaN hatched; the pattern in its own two colours.
  EXPECT_NE(page.find("output column 0: r = 0.5"), std::string::npos);
  EXPECT_NE(page.find("fill=\"#000000\"><title>query row 0, output column 1: r = +inf"), std::string::npos);
  EXPECT_NE(page.find("fill=\"url(#not-judged)\"><title>query row 0, output column 2: r = not judged"), std::string::npos);
  EXPECT_NE(page.find("query row 0–1, key 1: masked"), std::string::npos);
  EXPECT_NE(page.find("id=\"not-judged\""), std::string::npos);
  EXPECT_NE(page.find("r &gt; 1: failing"), std::string::npos);
}

TEST(Html, CoverageGridMarksCellsNeverReached) {
  std::ostringstream out;
  write_html(out, report_with_finding());
  const std::string page = out.str();
  // One dtype: 3 variants × 3 masks × 5 alignments = 45 cells, one reached (4 cases).
  EXPECT_NE(page.find("1 of 45 cells"), std::string::npos);
  EXPECT_NE(page.find("<td class=\"reached\">4</td>"), std::string::npos);
  std::size_t never = 0;
  for (std::size_t at = 0; (at = page.find("title=\"never reached\"", at)) != std::string::npos; ++at) ++never;
  EXPECT_EQ(never, 44u);
  EXPECT_NE(page.find("<th>size=small</th><td>4</td>"), std::string::npos);
}

}  // namespace
}  // namespace attncheck
