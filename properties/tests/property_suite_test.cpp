// Runs every property against every built-in backend for f32, f16 and bf16 inputs, one gtest test
// each (registered at run time, so a new property or backend needs no edit here). The profile
// comes from ATTNCHECK_PROFILE (quick, standard, exhaustive) and the seed from ATTNCHECK_SEED.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <fmt/format.h>
#include <iostream>

#include "attncheck/engine.h"

namespace attncheck {
namespace {

// gtest names may not contain '-' or '_' comfortably: "cpu-flash" → "CpuFlash".
std::string camel(std::string_view text) {
  std::string out;
  bool upper = true;
  for (char ch : text) {
    if (ch == '-' || ch == '_' || ch == '@' || ch == '.') {
      upper = true;
      continue;
    }
    out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(ch))) : ch;
    upper = false;
  }
  return out;
}

class PropertyTest : public testing::Test {
 public:
  PropertyTest(std::string backend, const PropertyDef* property, DType dtype, RunSettings settings)
      : backend_(std::move(backend)), property_(property), dtype_(dtype), settings_(std::move(settings)) {}

  void TestBody() override {
    Backend backend = open_backend(backend_);
    const PropertyOutcome outcome = run_property(*property_, backend, dtype_, settings_);
    RecordProperty("cases", outcome.cases_passed);
    RecordProperty("worst_ratio", fmt::format("{:.3g}", outcome.worst_ratio));
    switch (outcome.status) {
      case OutcomeStatus::Skipped: GTEST_SKIP() << outcome.message;
      case OutcomeStatus::Failed:
        ADD_FAILURE() << property_->name << " failed on " << backend_ << " (" << dtype_name(dtype_) << "):\n"
                      << outcome.message << "\n  shrunk case: " << outcome.shrunk_case
                      << "\n  reproduce: " << reproduce_command(outcome, backend_);
        return;
      case OutcomeStatus::Passed:
        if (outcome.cases_passed == 0) GTEST_SKIP() << "no case was supported: " << outcome.message;
        std::cout << fmt::format("  {} cases, worst bound ratio {:.3g}{}\n", outcome.cases_passed, outcome.worst_ratio,
                                 outcome.cases_skipped ? fmt::format(", {} declined", outcome.cases_skipped) : "");
        return;
    }
  }

 private:
  std::string backend_;
  const PropertyDef* property_;
  DType dtype_;
  RunSettings settings_;
};

RunSettings settings_from_environment() {
  RunSettings settings;
  const char* profile_name = std::getenv("ATTNCHECK_PROFILE");
  const auto profile = find_suite_profile(profile_name ? profile_name : "quick");
  if (!profile) {
    std::cerr << "ATTNCHECK_PROFILE=" << profile_name << " is not quick, standard or exhaustive\n";
    std::exit(2);
  }
  settings.cases = profile->cases;
  settings.max_size = profile->max_size;
  settings.sizes = profile->sizes;
  const char* seed = std::getenv("ATTNCHECK_SEED");
  settings.seed = seed ? std::strtoull(seed, nullptr, 10) : 20261123;
  std::cout << "Using seed=" << settings.seed << " profile=" << profile->name << " (ATTNCHECK_SEED, ATTNCHECK_PROFILE)\n";
  return settings;
}

}  // namespace
}  // namespace attncheck

int main(int argc, char** argv) {
  using namespace attncheck;
  testing::InitGoogleTest(&argc, argv);
  const RunSettings settings = settings_from_environment();
  for (const std::string& backend : builtin_backend_names()) {
    if (backend.rfind("mutant-", 0) == 0) continue;  // mutants are the mutation test's business
    for (const PropertyDef& property : all_properties())
      for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::E4M3, DType::E5M2}) {
        if (!runs_on(property, dtype)) continue;  // fp8 inputs for the fp8 family only (property.h)
        const std::string suite = camel(backend);
        const std::string name = camel(property.name) + camel(dtype_name(dtype));
        testing::RegisterTest(suite.c_str(), name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                              [=, p = &property]() -> testing::Test* { return new PropertyTest(backend, p, dtype, settings); });
      }
  }
  return RUN_ALL_TESTS();
}
