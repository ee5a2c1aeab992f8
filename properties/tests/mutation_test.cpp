// The mutation test: every mutant in backends/mutants (a correct backend with one classic bug)
// must be caught by the quick profile. Each mutant is one test; it runs the properties in
// registration order and records the first that fails, the time it took and the shrunk case.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fmt/format.h>
#include <iostream>

#include "attncheck/engine.h"

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
    // caught as failures of their case, not take the test down. Mutants answer tiny problems in
    // milliseconds, so a short limit only shortens the hang mutant's shrinking.
    settings.isolate = true;
    settings.timeout_seconds = 2;
    Backend backend = open_backend(mutant_);
    const auto start = std::chrono::steady_clock::now();
    for (const PropertyDef& property : all_properties()) {
      const PropertyOutcome outcome = run_property(property, backend, DType::F32, settings);
      if (outcome.status != OutcomeStatus::Failed) continue;
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      RecordProperty("caught_by", property.name);
      RecordProperty("seconds", fmt::format("{:.2f}", seconds));
      RecordProperty("shrunk_case", outcome.shrunk_case);
      std::cout << fmt::format("  {} caught by {} after {:.2f} s\n  shrunk case: {}\n  verdict: {}\n", mutant_,
                               property.name, seconds, outcome.shrunk_case,
                               outcome.message.substr(0, outcome.message.find('\n')));
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
