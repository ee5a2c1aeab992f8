// The catalogue against the mutants (backends/mutants): for each, a small case that shows its
// bug is run through the harness exactly as a property runs it, the failure's evidence is built
// as the engine builds it, and diagnose() must name the hypothesis planted in that mutant. The
// same case run on cpu-flash (a healthy kernel), and the double reference itself put in place of
// the kernel's output, must be named by nothing: a hypothesis the truth satisfies is never named.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <functional>
#include <iostream>

#include "attncheck/check.h"
#include "attncheck/diagnosis.h"
#include "attncheck/hypothesis.h"
#include "attncheck/tolerance.h"

namespace attncheck {
namespace {

AttentionResult reference_with_statistics(const AttentionCase& c, const CaseData& data) {
  ReferenceOptions options;
  options.row_statistics = true;
  return reference_attention(c.problem, data.inputs(c.problem), options);
}

HostTensor tau_of(const AttentionCase& c, const CaseData& data, const NumericsProfile& profile,
                  const AttentionResult& reference) {
  const ToleranceModel model(c.problem, profile, data_character(c.values), data.inputs(c.problem));
  return model.tau_tensor(reference);
}

// The evidence of one run of `backend` on `c`, as the engine records a failure: the verdict
// against the reference, the memory findings, or the error of a call that did not complete.
FailureEvidence evidence_of(const std::string& backend_name, const AttentionCase& c, RunOptions options = {}) {
  Backend backend = open_backend(backend_name);
  FailureEvidence e;
  e.attention_case = c;
  e.data = make_case_data(c);
  e.profile = *backend.profile(c.problem, c.dtype);
  e.reference = reference_with_statistics(c, e.data);
  e.tau = tau_of(c, e.data, e.profile, e.reference);
  try {
    const CaseCheck check = check_case(backend, c, e.data, options);
    EXPECT_FALSE(check.declined) << backend_name << " declined " << c.describe() << ": " << *check.declined;
    e.run_out = check.run.out;
    e.run_lse = check.run.lse;
    e.memory_findings = check.run.memory_findings;
    e.verdict = check.verdict;
    e.kind = !e.memory_findings.empty()                ? FailureKind::Memory
             : check.verdict.nonfinite_violations > 0 ? FailureKind::NanPlacement
                                                       : FailureKind::Output;
    e.message = check.report();
  } catch (const BackendError& error) {
    const std::string what = error.what();
    e.kind = what.find("crashed") != std::string::npos      ? FailureKind::Crash
             : what.find("did not return") != std::string::npos ? FailureKind::Timeout
                                                               : FailureKind::Status;
    e.message = what;
  }
  return e;
}

// The determinism property's probe on `c`: four runs of the same inputs, the first bitwise
// difference worded as properties/families/determinism.cpp words it.
FailureEvidence determinism_evidence_of(const std::string& backend_name, const AttentionCase& c) {
  FailureEvidence e = evidence_of(backend_name, c);
  Backend backend = open_backend(backend_name);
  const AttentionInputs inputs = e.data.inputs(c.problem);
  const BackendRun first = run_backend(backend, c.problem, e.profile, inputs);
  e.message.clear();
  for (int repeat = 1; repeat <= 3 && e.message.empty(); ++repeat) {
    const BackendRun again = run_backend(backend, c.problem, e.profile, inputs);
    for (size_t n = 0; n < first.out.values.size() && e.message.empty(); ++n)
      if (std::bit_cast<std::uint64_t>(first.out.values[n]) != std::bit_cast<std::uint64_t>(again.out.values[n]))
        e.message = fmt::format("run {} differs from run 0 at flat index {}: {} vs {}", repeat, n, again.out.values[n],
                                first.out.values[n]);
  }
  e.kind = e.message.empty() ? FailureKind::Output : FailureKind::Probe;
  e.run_out = first.out;
  return e;
}

std::vector<std::string> names_of(const std::vector<Diagnosis>& diagnoses) {
  std::vector<std::string> names;
  for (const Diagnosis& d : diagnoses) names.push_back(d.hypothesis);
  return names;
}

AttentionCase case_of(Problem problem, std::uint64_t seed = 7) {
  AttentionCase c;
  c.problem = problem;
  c.seed = seed;
  return c;
}

struct MutantCase {
  std::string name;        ///< gtest parameter name
  std::string mutant;      ///< built-in backend
  std::string planted;     ///< the hypothesis its bug is
  std::function<AttentionCase()> make;
  RunOptions options;
  bool determinism = false;  ///< evidence from the determinism probe instead of one run
};

RunOptions isolated(double timeout_seconds = 5) {
  RunOptions options;
  options.isolate = true;
  options.timeout_seconds = timeout_seconds;
  return options;
}

// Each case is the smallest that shows its mutant's bug: the dimensions the bug needs to be
// visible (Hq ≠ Hkv for GQA, Lq ≠ Lk for alignment, B > 1 for a batch stride, …) and no more.
std::vector<MutantCase> mutant_cases() {
  const Problem small = Problem::of_shape(1, 2, 2, 3, 5, 4, 4);
  return {
      {"TransposedAxes", "mutant-transposed-axes", "layout-transposed", [=] { return case_of(small); }, {}},
      {"IgnoresStrides", "mutant-ignores-strides", "layout-transposed",
       [=] {
         AttentionCase c = case_of(small);
         c.sequence_major = true;
         return c;
       },
       {}},
      {"GqaModulo", "mutant-gqa-modulo", "gqa-modulo", [] { return case_of(Problem::of_shape(1, 4, 2, 3, 5, 4, 4)); }, {}},
      {"ScaleOneOverD", "mutant-scale-one-over-d", "scale-one-over-d",
       [] { return case_of(Problem::of_shape(1, 1, 1, 3, 5, 16, 4)); }, {}},
      {"NoMaxSubtraction", "mutant-no-max-subtraction", "no-max-subtraction",
       [] {
         AttentionCase c = case_of(Problem::of_shape(1, 1, 1, 4, 6, 8, 4));
         c.values = ValueKind::LargeLogits;
         return c;
       },
       {}},
      {"CausalOffByOne", "mutant-causal-off-by-one", "causal-strict",
       [] { return case_of(with_causal(Problem::of_shape(1, 1, 1, 3, 5, 4, 4), Alignment::BottomRight)); }, {}},
      {"DropsLastPartialTile", "mutant-drops-last-tile", "last-key-tile-skipped-16",
       [] { return case_of(Problem::of_shape(1, 1, 1, 2, 20, 4, 4)); }, {}},
      {"NanLeak", "mutant-nan-leak", "masked-keys-weighted-by-zero",
       [] {
         Problem p = Problem::of_shape(2, 1, 1, 2, 6, 4, 4);
         p.has_key_lengths = true;
         AttentionCase c = case_of(p);
         c.key_lengths = {3, 5};
         c.poison_masked = true;
         return c;
       },
       {}},
      {"WritesPastOutput", "mutant-writes-past-output", "writes-past-output", [=] { return case_of(small); }, {}},
      {"SoftmaxOverQueries", "mutant-softmax-over-queries", "softmax-wrong-normalizer",
       [] { return case_of(Problem::of_shape(1, 1, 1, 3, 5, 4, 8)); }, {}},
      {"IgnoresAlignment", "mutant-ignores-alignment", "causal-top-left",
       [] { return case_of(with_causal(Problem::of_shape(1, 1, 1, 3, 6, 4, 4), Alignment::BottomRight)); }, {}},
      {"WindowExclusive", "mutant-window-exclusive", "window-exclusive",
       [] { return case_of(with_window(Problem::of_shape(1, 1, 1, 6, 6, 4, 4), 2, 1)); }, {}},
      {"EmptyRowNaN", "mutant-empty-row-nan", "empty-row-nan",
       [] {
         Problem p = Problem::of_shape(2, 1, 1, 2, 4, 4, 4);
         p.has_key_lengths = true;
         AttentionCase c = case_of(p);
         c.key_lengths = {4, 0};
         return c;
       },
       {}},
      {"PvInHalf", "mutant-pv-in-half", "pv-accumulated-in-f16",
       [] { return case_of(Problem::of_shape(1, 1, 1, 4, 256, 8, 8)); }, {}},
      {"ModifiesQ", "mutant-modifies-q", "modifies-input", [=] { return case_of(small); }, {}},
      {"LastRowUnwritten", "mutant-last-row-unwritten", "trailing-rows-unwritten", [=] { return case_of(small); }, {}},
      {"Nondeterministic", "mutant-nondeterministic", "nondeterministic",
       [] { return case_of(Problem::of_shape(1, 1, 1, 4, 64, 4, 4)); }, {}, true},
      {"IgnoresKBatchStride", "mutant-ignores-k-batch-stride", "k-batch-zero",
       [] { return case_of(Problem::of_shape(2, 1, 1, 3, 5, 4, 4)); }, {}},
      {"CrashOnSingleKey", "mutant-crash-on-single-key", "crash",
       [] { return case_of(Problem::of_shape(1, 1, 1, 1, 1, 1, 1)); }, isolated()},
      {"HangOnSingleHead", "mutant-hang-on-single-head", "hang",
       [] { return case_of(Problem::of_shape(1, 1, 1, 1, 1, 1, 1)); }, isolated(0.5)},
      {"DeferredWrite", "mutant-deferred-write", "trailing-rows-unwritten",
       [] { return case_of(Problem::of_shape(1, 1, 1, 4, 5, 4, 4)); }, {}},
      {"DeviceWritesPastOutput", "mutant-device-writes-past-output", "writes-past-output", [=] { return case_of(small); },
       {}},
      {"StickyDeviceError", "mutant-sticky-device-error", "asynchronous-device-fault",
       [] { return case_of(Problem::of_shape(1, 1, 1, 1, 2, 1, 1)); }, {}},
  };
}

class MutantDiagnosis : public testing::TestWithParam<MutantCase> {};

TEST_P(MutantDiagnosis, NamesThePlantedBug) {
  const MutantCase& m = GetParam();
  const AttentionCase c = m.make();
  const FailureEvidence e = m.determinism ? determinism_evidence_of(m.mutant, c) : evidence_of(m.mutant, c, m.options);
  ASSERT_TRUE(e.kind != FailureKind::Output || !e.verdict.passed) << m.mutant << " passed " << c.describe();
  const std::vector<Diagnosis> diagnoses = diagnose(e);
  for (const Diagnosis& d : diagnoses) std::cout << fmt::format("  {}: {} — {}\n", m.mutant, d.hypothesis, d.statement);
  const std::vector<std::string> names = names_of(diagnoses);
  EXPECT_NE(std::find(names.begin(), names.end(), m.planted), names.end())
      << m.mutant << " on " << c.describe() << " (" << e.message << "): named [" << fmt::format("{}", fmt::join(names, ", "))
      << "], not " << m.planted;
  if (!diagnoses.empty()) {
    EXPECT_EQ(diagnoses.front().hypothesis, m.planted) << "the planted bug is named, but not first";
    RecordProperty("statement", diagnoses.front().statement);
  }
}

TEST_P(MutantDiagnosis, NamesNothingForAHealthyKernel) {
  const MutantCase& m = GetParam();
  const AttentionCase c = m.make();
  const FailureEvidence e = m.determinism ? determinism_evidence_of("cpu-flash", c) : evidence_of("cpu-flash", c);
  ASSERT_TRUE(e.verdict.passed && e.memory_findings.empty()) << "cpu-flash fails " << c.describe() << ": " << e.message;
  EXPECT_EQ(names_of(diagnose(e)), std::vector<std::string>{}) << c.describe();
}

TEST_P(MutantDiagnosis, NamesNothingForTheReferenceItself) {
  const MutantCase& m = GetParam();
  const AttentionCase c = m.make();
  FailureEvidence e = evidence_of("cpu-flash", c);
  e.run_out = e.reference.out;
  e.run_lse.reset();
  e.memory_findings.clear();
  e.kind = FailureKind::Output;
  e.message.clear();
  // The verdict is left failing on purpose: the alternative profiles name a bug only when the
  // declared profile fails, and must still not name the truth.
  e.verdict.passed = false;
  EXPECT_EQ(names_of(diagnose(e)), std::vector<std::string>{}) << c.describe();
}

INSTANTIATE_TEST_SUITE_P(Mutants, MutantDiagnosis, testing::ValuesIn(mutant_cases()),
                         [](const testing::TestParamInfo<MutantCase>& param) { return param.param.name; });

// Bugs no mutant carries, planted by running a healthy kernel (cpu-flash) on the inputs the bug
// would read: its output is what the buggy kernel returns, computed independently of the
// hypothesis's own alternative reference.
struct PlantedBug {
  std::string name, planted;
  std::function<AttentionCase()> make;
  std::function<void(AttentionCase&, CaseData&)> as_the_bug_reads;
};

class PlantedDiagnosis : public testing::TestWithParam<PlantedBug> {};

TEST_P(PlantedDiagnosis, NamesThePlantedBug) {
  const PlantedBug& bug = GetParam();
  const AttentionCase c = bug.make();
  FailureEvidence e = evidence_of("cpu-flash", c);
  ASSERT_TRUE(e.verdict.passed) << c.describe() << ": " << e.message;
  EXPECT_EQ(names_of(diagnose(e)), std::vector<std::string>{});
  AttentionCase read = c;
  CaseData data = e.data;
  bug.as_the_bug_reads(read, data);
  Backend healthy = open_backend("cpu-flash");
  const CaseCheck run = check_case(healthy, read, data);
  ASSERT_FALSE(run.declined) << *run.declined;
  e.run_out = run.run.out;
  e.run_lse = run.run.lse;
  e.kind = FailureKind::Output;
  e.verdict.passed = false;
  const std::vector<std::string> names = names_of(diagnose(e));
  ASSERT_FALSE(names.empty()) << bug.planted << " named nothing on " << c.describe();
  EXPECT_EQ(names.front(), bug.planted) << fmt::format("named [{}]", fmt::join(names, ", "));
}

std::vector<PlantedBug> planted_bugs() {
  return {
      {"MaskInverted", "mask-inverted",
       [] { return case_of(with_mask(Problem::of_shape(1, 1, 1, 3, 6, 4, 4), MaskKind::Boolean, 1, 1, 3, 6)); },
       [](AttentionCase&, CaseData& d) {
         for (double& m : d.mask.values) m = m != 0 ? 0.0 : 1.0;
       }},
      {"KeyLengthsIgnored", "key-lengths-ignored",
       [] {
         Problem p = Problem::of_shape(2, 1, 1, 2, 6, 4, 4);
         p.has_key_lengths = true;
         AttentionCase c = case_of(p);
         c.key_lengths = {2, 4};
         return c;
       },
       [](AttentionCase& c, CaseData& d) {
         c.problem.has_key_lengths = false;
         c.key_lengths.clear();
         d.key_lengths.clear();
       }},
      {"VBatchZero", "v-batch-zero", [] { return case_of(Problem::of_shape(2, 1, 1, 3, 5, 4, 4)); },
       [](AttentionCase&, CaseData& d) {
         for (std::int64_t l = 0; l < 5; ++l)
           for (std::int64_t x = 0; x < 4; ++x) d.v(1, 0, l, x) = d.v(0, 0, l, x);
       }},
      {"ScaleMissing", "scale-missing", [] { return case_of(Problem::of_shape(1, 1, 1, 3, 5, 16, 4)); },
       [](AttentionCase& c, CaseData&) { c.problem.scale = 1.0; }},
      {"CausalBottomRight", "causal-bottom-right",
       [] { return case_of(with_causal(Problem::of_shape(1, 1, 1, 3, 6, 4, 4), Alignment::TopLeft)); },
       [](AttentionCase& c, CaseData&) { c.problem.alignment = Alignment::BottomRight; }},
      {"SoftcapMissing", "softcap-missing",
       [] {
         Problem p = Problem::of_shape(1, 1, 1, 3, 5, 4, 4);
         p.softcap = 0.5;
         return case_of(p);
       },
       [](AttentionCase& c, CaseData&) { c.problem.softcap = 0; }},
      // Lk = 56: tiles of 16 would keep 48 keys, tiles of 32 keep 32 — the case tells them apart.
      {"KeyTileOf32Skipped", "last-key-tile-skipped-32", [] { return case_of(Problem::of_shape(1, 1, 1, 2, 56, 4, 4)); },
       [](AttentionCase& c, CaseData& d) {
         c.problem.has_key_lengths = true;
         c.key_lengths = {32};
         d.key_lengths = {32};
       }},
  };
}

INSTANTIATE_TEST_SUITE_P(Bugs, PlantedDiagnosis, testing::ValuesIn(planted_bugs()),
                         [](const testing::TestParamInfo<PlantedBug>& param) { return param.param.name; });

// The LSE conventions, on a kernel that writes LSE (cpu-naive): its LSE replaced by the true one
// in the other convention, computed in closed form from the double reference's ln Σ e^s.
struct LseConvention {
  std::string planted;
  std::function<double(double lse, double max_score, double scale, double unscaled_lse)> convert;
};

TEST(LseConventions, NamesEachConventionAndNothingForTheTrueLse) {
  const AttentionCase c = case_of(Problem::of_shape(1, 2, 2, 3, 5, 4, 4));
  const FailureEvidence healthy = evidence_of("cpu-naive", c);
  ASSERT_TRUE(healthy.run_lse) << "cpu-naive writes no LSE";
  EXPECT_EQ(names_of(diagnose(healthy)), std::vector<std::string>{});
  Problem unscaled = c.problem;
  unscaled.scale = 1.0;
  const AttentionResult unscaled_reference = reference_attention(unscaled, healthy.data.inputs(unscaled));
  const std::vector<LseConvention> conventions = {
      {"lse-log2", [](double lse, double, double, double) { return lse / std::log(2.0); }},
      {"lse-without-max", [](double lse, double max_score, double, double) { return lse - max_score; }},
      {"lse-divided-by-scale", [](double lse, double, double scale, double) { return lse / scale; }},
      {"lse-of-unscaled-scores", [](double, double, double, double unscaled_lse) { return unscaled_lse; }},
  };
  for (const LseConvention& convention : conventions) {
    FailureEvidence e = healthy;
    for (size_t n = 0; n < e.run_lse->values.size(); ++n)
      e.run_lse->values[n] = convention.convert(e.reference.lse.values[n], e.reference.stats->max_score.values[n],
                                                c.problem.effective_scale(), unscaled_reference.lse.values[n]);
    e.kind = FailureKind::Lse;
    e.verdict.passed = false;
    const std::vector<std::string> names = names_of(diagnose(e));
    ASSERT_FALSE(names.empty()) << convention.planted << " named nothing";
    EXPECT_EQ(names.front(), convention.planted) << fmt::format("named [{}]", fmt::join(names, ", "));
  }
}

TEST(Catalogue, NamesAreUniqueAndEveryEntryIsStated) {
  const std::vector<diagnosis::Hypothesis> all = diagnosis::catalogue();
  std::vector<std::string> names;
  for (const diagnosis::Hypothesis& h : all) {
    EXPECT_FALSE(h.statement.empty()) << h.name;
    EXPECT_TRUE(h.test) << h.name;
    EXPECT_EQ(h.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-"), std::string::npos) << h.name;
    EXPECT_EQ(std::count(names.begin(), names.end(), h.name), 0) << "duplicate " << h.name;
    names.push_back(h.name);
  }
  EXPECT_GE(all.size(), 30u);
}

}  // namespace
}  // namespace attncheck
