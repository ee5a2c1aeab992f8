// The mutation test: every mutant in backends/mutants (a correct backend with one classic bug)
// must be caught by the quick profile. Each mutant is one test; it runs the properties in
// registration order and records the first that fails, the time it took and the shrunk case.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fmt/format.h>
#include <iostream>
#include <map>

#include "attncheck/engine.h"
#include "attncheck/simplify.h"

namespace attncheck {
namespace {

// The device-path mutants must be caught for the reason they exist, not by accident: what the
// failure must say (the engine's own words for each probe, harness/src/execute.cpp).
std::string expected_message(const std::string& mutant) {
  if (mutant == "mutant-deferred-write") return "never written by the backend, first at";
  if (mutant == "mutant-device-writes-past-output") return "out: out-of-bounds write after the end";
  if (mutant == "mutant-sticky-device-error")
    return "asynchronous device error after the call returned: an illegal memory access was encountered";
  return "";
}

// The hypothesis of the diagnosis catalogue (diagnosis/hypotheses/) that names each mutant's
// planted bug (backends/mutants/mutant_kernel.h). The layer's shared projection has none: the
// evidence describes the attention call only. A mutant listed here must have its bug named by
// some finding of the property that catches it.
std::string planted_hypothesis(const std::string& mutant) {
  static const std::map<std::string, std::string> planted = {
      {"mutant-transposed-axes", "layout-transposed"},
      {"mutant-ignores-strides", "layout-transposed"},
      {"mutant-gqa-modulo", "gqa-modulo"},
      {"mutant-scale-one-over-d", "scale-one-over-d"},
      {"mutant-no-max-subtraction", "no-max-subtraction"},
      {"mutant-causal-off-by-one", "causal-strict"},
      {"mutant-drops-last-tile", "last-key-tile-skipped-16"},
      {"mutant-nan-leak", "masked-keys-weighted-by-zero"},
      {"mutant-writes-past-output", "writes-past-output"},
      {"mutant-softmax-over-queries", "softmax-wrong-normalizer"},
      {"mutant-ignores-alignment", "causal-top-left"},
      {"mutant-window-exclusive", "window-exclusive"},
      {"mutant-empty-row-nan", "empty-row-nan"},
      {"mutant-pv-in-half", "pv-accumulated-in-f16"},
      {"mutant-modifies-q", "modifies-input"},
      {"mutant-last-row-unwritten", "trailing-rows-unwritten"},
      {"mutant-nondeterministic", "nondeterministic"},
      {"mutant-ignores-k-batch-stride", "k-batch-zero"},
      {"mutant-crash-on-single-key", "crash"},
      {"mutant-hang-on-single-head", "hang"},
      {"mutant-deferred-write", "trailing-rows-unwritten"},
      {"mutant-device-writes-past-output", "writes-past-output"},
      {"mutant-sticky-device-error", "asynchronous-device-fault"},
      {"mutant-lse-log2-window-exclusive", "lse-log2"},
  };
  const auto it = planted.find(mutant);
  return it == planted.end() ? "" : it->second;
}

// The dtype a mutant is run on: float32, or e4m3 for the fp8 mutants (which take fp8 inputs only
// through the fp8 family, property.h).
DType dtype_of(const std::string& mutant) { return mutant.rfind("mutant-fp8-", 0) == 0 ? DType::E4M3 : DType::F32; }

// The backward mutants' forward is correct, so a forward property that fails one of them has found
// something other than the planted bug: each must be caught by a property of the backward family,
// the one named here (the first, in registration order, whose check the bug breaks). The
// diagnosis catalogue describes the forward's evidence only, so they have no planted hypothesis.
std::string expected_backward_property(const std::string& mutant) {
  static const std::map<std::string, std::string> expected = {
      {"mutant-bwd-no-d-term", "backward-agreement"},
      {"mutant-bwd-dv-untransposed", "backward-agreement"},
      {"mutant-bwd-gqa-one-head", "backward-agreement"},
      {"mutant-bwd-no-softcap-derivative", "backward-agreement"},
      {"mutant-bwd-dk-without-scale", "backward-agreement"},
      {"mutant-bwd-unshifted-exp", "backward-agreement"},
      {"mutant-bwd-dq-random-order", "backward-determinism"},
      {"mutant-bwd-masked-keys-get-dk", "backward-agreement"},
      {"mutant-bwd-dq-lost-update", "backward-agreement"},
  };
  const auto it = expected.find(mutant);
  return it == expected.end() ? "" : it->second;
}

class MutantTest : public testing::Test {
 public:
  explicit MutantTest(std::string mutant) : mutant_(std::move(mutant)) {}

  void TestBody() override {
    const SuiteProfile quick = *find_suite_profile("quick");
    RunSettings settings;
    settings.cases = quick.cases;
    settings.max_size = quick.max_size;
    const char* seed = std::getenv("ATTNCHECK_SEED");
    settings.seed = seed ? std::strtoull(seed, nullptr, 10) : 20261123;
    // Isolated, as a run against an untrusted plug-in is: the crashing and hanging mutants must be
    // caught as failures of their case, not take the test down. Mutants answer the quick
    // profile's problems in milliseconds (its long cases in tens), so a 1 s limit leaves a wide
    // margin and bounds the hang mutant's time to catch: it is caught when the limit expires.
    settings.isolate = true;
    settings.timeout_seconds = 1;
    Backend backend = open_backend(mutant_);
    const auto start = std::chrono::steady_clock::now();
    for (const PropertyDef& property : all_properties()) {
      const PropertyOutcome outcome = run_property(property, backend, dtype_of(mutant_), settings);
      if (outcome.status != OutcomeStatus::Failed) continue;
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double to_catch = seconds - outcome.seconds + outcome.seconds_to_failure;
      RecordProperty("caught_by", property.name);
      RecordProperty("seconds_to_catch", fmt::format("{:.2f}", to_catch));
      RecordProperty("seconds", fmt::format("{:.2f}", seconds));
      RecordProperty("minimal_case", outcome.shrunk_case);
      std::cout << fmt::format("  {} caught by {} after {:.2f} s ({:.2f} s with the minimal case, diagnosis and further "
                               "failures)\n",
                               mutant_, property.name, to_catch, seconds);
      ASSERT_FALSE(outcome.failures.empty()) << "a failed outcome carries its findings";
      for (const FailureFinding& finding : outcome.failures) {
        std::vector<std::string> statements;
        for (const Diagnosis& d : finding.diagnoses) statements.push_back(d.statement);
        std::cout << fmt::format("  [{}] minimal case: {}\n    failure: {}\n    diagnosis: {}\n",
                                 failure_kind_name(finding.kind), finding.minimal_case,
                                 finding.message.substr(0, finding.message.find('\n')),
                                 statements.empty() ? "-" : fmt::format("{}", fmt::join(statements, " | ")));
        expect_one_minimal(property, backend, settings, finding);
      }
      RecordProperty("diagnosis", outcome.failures.front().diagnoses.empty() ? "" : outcome.failures.front().diagnoses.front().hypothesis);
      if (const std::string planted = planted_hypothesis(mutant_); !planted.empty()) {
        bool named = false;
        for (const FailureFinding& finding : outcome.failures)
          for (const Diagnosis& d : finding.diagnoses) named = named || d.hypothesis == planted;
        EXPECT_TRUE(named) << mutant_ << ": the diagnosis does not name the planted bug (" << planted << ")";
        std::cout << fmt::format("  planted bug {}: {}\n", planted, named ? "named" : "NOT named");
      }
      if (const std::string expected = expected_backward_property(mutant_); !expected.empty()) {
        EXPECT_EQ(property.name, expected) << mutant_ << " holds a backward bug and a correct forward";
      }
      if (const std::string expected = expected_message(mutant_); !expected.empty()) {
        EXPECT_NE(outcome.message.find(expected), std::string::npos)
            << mutant_ << " was caught, but not by the probe meant for it: " << outcome.message;
      }
      if (mutant_ == "mutant-deferred-write") {
        EXPECT_NE(outcome.message.find("read back after the stream was synchronized"), std::string::npos) << outcome.message;
      }
      return;
    }
    ADD_FAILURE() << mutant_ << " survived every property of the quick profile (seed " << settings.seed << ")";
  }

 private:
  // 1-minimal: every single simplification of the pinned case (an option removed, a dimension
  // shrunk) makes the property pass, or fail another way. The engine promises it; this checks it
  // from outside, with the same steps and the same pinned replay `--case` uses.
  void expect_one_minimal(const PropertyDef& property, Backend& backend, RunSettings settings, const FailureFinding& finding) {
    if (finding.pinned_case.empty()) return;  // a layer case: RapidCheck's shrunk case only
    settings.max_findings = 1;
    settings.simplify = false;
    for (const SimplificationStep& step : simplification_steps(parse_case(finding.pinned_case))) {
      settings.pinned_case = step.result;
      const PropertyOutcome smaller = run_property(property, backend, dtype_of(mutant_), settings);
      const bool same_failure = smaller.status == OutcomeStatus::Failed && !smaller.failures.empty() &&
                                smaller.failures.front().kind == finding.kind;
      EXPECT_FALSE(same_failure) << mutant_ << ": the case is not 1-minimal; '" << step.what
                                 << "' still fails the same way: " << step.result.describe();
    }
  }

  std::string mutant_;
};

}  // namespace
}  // namespace attncheck

int main(int argc, char** argv) {
  using namespace attncheck;
  testing::InitGoogleTest(&argc, argv);
  for (const std::string& name : builtin_backend_names()) {
    if (name.rfind("mutant-", 0) != 0) continue;
    std::string test_name;
    bool upper = true;
    for (char ch : name.substr(7)) {
      if (ch == '-') { upper = true; continue; }
      test_name += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(ch))) : ch;
      upper = false;
    }
    testing::RegisterTest("Mutants", test_name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                          [name]() -> testing::Test* { return new MutantTest(name); });
  }
  return RUN_ALL_TESTS();
}
