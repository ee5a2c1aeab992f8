/// \file expectations.h
/// \brief Expectation files: what a run of a kernel with known issues is expected to give, per
/// property × dtype, so CI can gate on "nothing new" instead of "nothing failing".
///
/// `attncheck run --expect FILE` exits 0 when every unit's outcome is the one the file expects and
/// 1 when one differs: a new failure, or an expected failure that now passes (a fixed bug: remove
/// its entry, so it cannot come back unnoticed). Format and matching rules: tools/README.md,
/// "Expectation files".
#pragma once

#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/report.h"

namespace attncheck {

/// PassOrFail: a unit measured to pass on some machines and fail on others with the same pinned
/// library (its reason says what differs); it must not be skipped. Needs a reason and a link, as
/// a failure does.
enum class ExpectedOutcome : std::uint8_t { Pass, Fail, Skip, PassOrFail };
std::string_view expected_outcome_name(ExpectedOutcome outcome);  ///< "pass", "fail", "skip", "pass-or-fail"

inline constexpr std::string_view kExpectationsFormat = "attncheck-expectations";
inline constexpr int kExpectationsVersion = 1;

/// One entry. `property` is a property's name or "*", `dtype` "f32", "f16", "bf16" or "*".
struct Expectation {
  std::string property;
  std::string dtype;
  ExpectedOutcome expect = ExpectedOutcome::Pass;
  std::string reason;  ///< required for fail and skip: what the kernel does, in one line
  std::string link;    ///< required for fail and pass-or-fail: where the finding is written up
};

struct Expectations {
  std::string source;   ///< file name, for messages
  std::string backend;  ///< the backend the file is for (its table's name); empty: any
  std::vector<Expectation> entries;
};

/// Parses and validates a file: unknown keys, an unknown property or dtype, a fail without reason
/// or link, two entries for the same (property, dtype) are ReportErrors naming the entry.
Expectations read_expectations(std::istream& in, std::string_view source, const std::vector<std::string>& properties);

/// The entry that decides (property, dtype): exact property and dtype, then the property with
/// dtype "*", then "*" with the dtype, then "*" with "*". nullptr: no entry, the unit must pass.
const Expectation* find_expectation(const Expectations& file, std::string_view property, std::string_view dtype);

struct ExpectationMismatch {
  const UnitResult* unit = nullptr;
  ExpectedOutcome expected = ExpectedOutcome::Pass;
  const Expectation* entry = nullptr;  ///< nullptr: expected to pass by default
};

struct ExpectationCheck {
  int units = 0;
  int expected_failures = 0;  ///< units that failed as the file says they do
  int expected_skips = 0;
  std::vector<ExpectationMismatch> mismatches;
  bool ok() const { return mismatches.empty(); }
};

ExpectationCheck check_expectations(const Expectations& file, const RunReport& report);

/// "empty-rows f32: expected to fail (reason), but it passed: remove the entry" and the like.
std::string describe(const ExpectationMismatch& mismatch);

}  // namespace attncheck
