// The engine's explanation of a failure: every distinct bug of a property with its own minimal
// case, that case 1-minimal, its --case replay the same failure, and the diagnosis naming the
// planted bug. The kernel is mutant-lse-log2-window-exclusive (backends/mutants): it writes the
// LSE in base 2 and takes window bounds exclusive, two bugs of different kinds.
#include <gtest/gtest.h>

#include <algorithm>

#include "attncheck/engine.h"
#include "attncheck/simplify.h"

namespace attncheck {
namespace {

const PropertyDef& property_named(const std::string& name) {
  for (const PropertyDef& p : all_properties())
    if (p.name == name) return p;
  throw std::logic_error("no property " + name);
}

RunSettings quick_settings() {
  const SuiteProfile quick = *find_suite_profile("quick");
  RunSettings settings;
  settings.cases = quick.cases;
  settings.max_size = quick.max_size;
  settings.seed = 24301;  // the command line's default seed
  return settings;
}

bool names(const FailureFinding& finding, const std::string& hypothesis) {
  return std::any_of(finding.diagnoses.begin(), finding.diagnoses.end(),
                     [&](const Diagnosis& d) { return d.hypothesis == hypothesis; });
}

TEST(Findings, TwoBugsOfDifferentKindsAreBothReportedEachWithItsMinimalCase) {
  Backend backend = open_backend("mutant-lse-log2-window-exclusive");
  const PropertyOutcome outcome = run_property(property_named("reference-agreement"), backend, DType::F32, quick_settings());
  ASSERT_EQ(outcome.status, OutcomeStatus::Failed);
  ASSERT_EQ(outcome.failures.size(), 2u) << outcome.message;
  const FailureFinding& lse = outcome.failures[0];
  const FailureFinding& window = outcome.failures[1];
  // The LSE is wrong on every case, so it is found first, on the plainest case there is.
  EXPECT_EQ(lse.kind, FailureKind::Lse);
  EXPECT_TRUE(names(lse, "lse-log2")) << lse.minimal_case;
  EXPECT_EQ(lse.minimal_case.find("window="), std::string::npos) << lse.minimal_case;
  // With the LSE left out, the window bug shows, and its case needs a window.
  EXPECT_EQ(window.kind, FailureKind::Output);
  EXPECT_EQ(window.excluded, "the LSE not judged");
  EXPECT_NE(window.minimal_case.find("window="), std::string::npos) << window.minimal_case;
  EXPECT_TRUE(names(window, "window-exclusive")) << window.minimal_case;
  // The summary fields describe the first finding.
  EXPECT_EQ(outcome.shrunk_case, lse.minimal_case);
}

TEST(Findings, ACaseReplaysWithCaseAndPassesOnAHealthyKernel) {
  Backend mutant = open_backend("mutant-window-exclusive");
  const PropertyDef& property = property_named("reference-agreement");
  const PropertyOutcome outcome = run_property(property, mutant, DType::F32, quick_settings());
  ASSERT_EQ(outcome.status, OutcomeStatus::Failed);
  ASSERT_FALSE(outcome.failures.empty());
  const FailureFinding& finding = outcome.failures.front();
  RunSettings replay = quick_settings();
  replay.pinned_case = parse_case(finding.pinned_case);
  const PropertyOutcome again = run_property(property, mutant, DType::F32, replay);
  ASSERT_EQ(again.status, OutcomeStatus::Failed);
  ASSERT_EQ(again.failures.size(), 1u);
  EXPECT_EQ(again.failures.front().minimal_case, finding.minimal_case);
  EXPECT_EQ(again.failures.front().message, finding.message);
  Backend healthy = open_backend("cpu-flash");
  EXPECT_EQ(run_property(property, healthy, DType::F32, replay).status, OutcomeStatus::Passed);
}

TEST(Findings, EveryStepOfTheMinimalCaseMakesThePropertyPass) {
  Backend mutant = open_backend("mutant-window-exclusive");
  const PropertyDef& property = property_named("reference-agreement");
  const PropertyOutcome outcome = run_property(property, mutant, DType::F32, quick_settings());
  ASSERT_FALSE(outcome.failures.empty());
  const AttentionCase minimal = parse_case(outcome.failures.front().pinned_case);
  const std::vector<SimplificationStep> steps = simplification_steps(minimal);
  ASSERT_FALSE(steps.empty()) << "a window case has at least the window to remove";
  for (const SimplificationStep& step : steps) {
    RunSettings replay = quick_settings();
    replay.pinned_case = step.result;
    replay.max_findings = 1;
    EXPECT_NE(run_property(property, mutant, DType::F32, replay).status, OutcomeStatus::Failed) << step.what;
  }
}

TEST(Findings, APinnedCaseOutsideThePropertysSpaceIsASkipWithTheReason) {
  Backend backend = open_backend("cpu-flash");
  RunSettings settings = quick_settings();
  // kv-cache-decode draws no mask (properties/families/causality.cpp).
  settings.pinned_case = parse_case("B=1 Hq=1 Hkv=1 Lq=2 Lk=2 Dk=4 Dv=4 mask=bool:1x1x1x2 dtype=f32 values=gaussian seed=0");
  const PropertyOutcome outcome = run_property(property_named("kv-cache-decode"), backend, DType::F32, settings);
  EXPECT_EQ(outcome.status, OutcomeStatus::Skipped);
  EXPECT_NE(outcome.message.find("without a mask"), std::string::npos) << outcome.message;
}

TEST(Simplification, StepsAreSmallerInOneRespectAndValid) {
  const AttentionCase c = parse_case(
      "B=2 Hq=4 Hkv=2 Lq=5 Lk=9 Dk=8 Dv=3 softcap=15 causal=1 align=bottom-right window=2,1 mask=bias:2x4x5x9 "
      "dtype=f32 values=ties layout=blhd seed=3");
  const std::vector<std::string> options = removable_options(c);
  for (const char* option : {"softcap", "window", "mask", "layout", "causal", "alignment", "gqa", "values"})
    EXPECT_NE(std::find(options.begin(), options.end(), option), options.end()) << option;
  for (const SimplificationStep& step : simplification_steps(c)) {
    EXPECT_NO_THROW(step.result.problem.validate()) << step.what;
    EXPECT_NE(step.result.describe(), c.describe()) << step.what;
    // A step that shrinks B or Lq keeps the mask spanning them, or broadcasts it.
    const Problem& p = step.result.problem;
    if (p.mask != MaskKind::None) {
      EXPECT_TRUE(p.mask_batch == 1 || p.mask_batch == p.batch) << step.what;
      EXPECT_TRUE(p.mask_q_len == 1 || p.mask_q_len == p.q_len) << step.what;
      EXPECT_LE(p.mask_k_len, p.k_len) << step.what;
    }
  }
}

}  // namespace
}  // namespace attncheck
