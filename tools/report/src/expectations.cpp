// Expectation files: parsing with errors that name the entry, the most-specific-entry rule, and
// the comparison with a run.
#include "attncheck/expectations.h"

#include <algorithm>
#include <istream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace attncheck {

using nlohmann::json;

std::string_view expected_outcome_name(ExpectedOutcome outcome) {
  switch (outcome) {
    case ExpectedOutcome::Pass: return "pass";
    case ExpectedOutcome::Fail: return "fail";
    case ExpectedOutcome::Skip: return "skip";
    case ExpectedOutcome::PassOrFail: return "pass-or-fail";
  }
  return "?";
}

namespace {

std::optional<ExpectedOutcome> parse_outcome(std::string_view name) {
  for (ExpectedOutcome o : {ExpectedOutcome::Pass, ExpectedOutcome::Fail, ExpectedOutcome::Skip, ExpectedOutcome::PassOrFail})
    if (expected_outcome_name(o) == name) return o;
  return std::nullopt;
}

std::string string_field(const json& object, const char* key, const std::string& where, bool required) {
  const auto it = object.find(key);
  if (it == object.end()) {
    if (required) throw ReportError(fmt::format("{}: '{}' is missing", where, key));
    return {};
  }
  if (!it->is_string()) throw ReportError(fmt::format("{}.{}: expected a string, got {}", where, key, it->type_name()));
  return it->get<std::string>();
}

void reject_unknown_keys(const json& object, std::initializer_list<std::string_view> known, const std::string& where) {
  for (const auto& [key, value] : object.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      throw ReportError(fmt::format("{}: unknown key '{}' (known: {})", where, key, fmt::join(known, ", ")));
}

bool matches(const UnitResult& unit, ExpectedOutcome expected) {
  switch (expected) {
    case ExpectedOutcome::Pass: return unit.status == UnitStatus::Passed;
    case ExpectedOutcome::Fail: return unit.status == UnitStatus::Failed;
    case ExpectedOutcome::Skip: return unit.status == UnitStatus::Skipped;
    case ExpectedOutcome::PassOrFail: return unit.status == UnitStatus::Passed || unit.status == UnitStatus::Failed;
  }
  return false;
}

}  // namespace

Expectations read_expectations(std::istream& in, std::string_view source, const std::vector<std::string>& properties) {
  Expectations file;
  file.source = std::string(source);
  json document;
  try {
    document = json::parse(in);
  } catch (const json::parse_error& e) {
    throw ReportError(fmt::format("{}: not JSON ({})", source, e.what()));
  }
  const std::string top = std::string(source);
  if (!document.is_object()) throw ReportError(fmt::format("{}: expected a JSON object", source));
  reject_unknown_keys(document, {"format", "version", "backend", "units"}, top);
  if (string_field(document, "format", top, true) != kExpectationsFormat)
    throw ReportError(fmt::format("{}: format is '{}', expected '{}'", source, document["format"].get<std::string>(),
                                  kExpectationsFormat));
  if (!document.contains("version") || !document["version"].is_number_integer() ||
      document["version"].get<int>() != kExpectationsVersion)
    throw ReportError(fmt::format("{}: version must be {} (this attncheck reads that version)", source, kExpectationsVersion));
  file.backend = string_field(document, "backend", top, false);
  if (!document.contains("units") || !document["units"].is_array())
    throw ReportError(fmt::format("{}: 'units' must be an array of entries", source));

  std::set<std::pair<std::string, std::string>> seen;
  const json& units = document["units"];
  for (std::size_t i = 0; i < units.size(); ++i) {
    const std::string where = fmt::format("{}: units[{}]", source, i);
    const json& entry = units[i];
    if (!entry.is_object()) throw ReportError(fmt::format("{}: expected an object", where));
    reject_unknown_keys(entry, {"property", "dtype", "expect", "reason", "link"}, where);
    Expectation e;
    e.property = string_field(entry, "property", where, true);
    e.dtype = string_field(entry, "dtype", where, true);
    const std::string outcome = string_field(entry, "expect", where, true);
    e.reason = string_field(entry, "reason", where, false);
    e.link = string_field(entry, "link", where, false);
    if (e.property != "*" && std::find(properties.begin(), properties.end(), e.property) == properties.end())
      throw ReportError(fmt::format("{}: property '{}' does not exist (see `attncheck list properties`)", where, e.property));
    if (e.dtype != "*" && e.dtype != "f32" && e.dtype != "f16" && e.dtype != "bf16")
      throw ReportError(fmt::format("{}: dtype '{}' is not f32, f16, bf16 or *", where, e.dtype));
    const auto parsed = parse_outcome(outcome);
    if (!parsed) throw ReportError(fmt::format("{}: expect '{}' is not pass, fail, skip or pass-or-fail", where, outcome));
    e.expect = *parsed;
    if (e.expect != ExpectedOutcome::Pass && e.reason.empty())
      throw ReportError(fmt::format("{}: an expected {} needs a 'reason'", where, outcome));
    if ((e.expect == ExpectedOutcome::Fail || e.expect == ExpectedOutcome::PassOrFail) && e.link.empty())
      throw ReportError(fmt::format("{}: an expected failure needs a 'link' to where it is written up", where));
    if (!seen.emplace(e.property, e.dtype).second)
      throw ReportError(fmt::format("{}: a second entry for property {} dtype {}", where, e.property, e.dtype));
    file.entries.push_back(std::move(e));
  }
  return file;
}

const Expectation* find_expectation(const Expectations& file, std::string_view property, std::string_view dtype) {
  const Expectation* best = nullptr;
  int best_rank = -1;
  for (const Expectation& e : file.entries) {
    const bool property_exact = e.property == property, dtype_exact = e.dtype == dtype;
    if (!(property_exact || e.property == "*") || !(dtype_exact || e.dtype == "*")) continue;
    // A named property is more specific than a named dtype: an entry for one property's failure
    // must not be overridden by a blanket entry for the dtype.
    const int rank = (property_exact ? 2 : 0) + (dtype_exact ? 1 : 0);
    if (rank > best_rank) best = &e, best_rank = rank;
  }
  return best;
}

ExpectationCheck check_expectations(const Expectations& file, const RunReport& report) {
  ExpectationCheck check;
  for (const UnitResult& unit : report.units) {
    ++check.units;
    const Expectation* entry = find_expectation(file, unit.property, unit.dtype);
    const ExpectedOutcome expected = entry ? entry->expect : ExpectedOutcome::Pass;
    if (!matches(unit, expected)) {
      check.mismatches.push_back({&unit, expected, entry});
      continue;
    }
    if (expected == ExpectedOutcome::Fail) ++check.expected_failures;
    if (expected == ExpectedOutcome::Skip) ++check.expected_skips;
  }
  return check;
}

std::string describe(const ExpectationMismatch& m) {
  const UnitResult& unit = *m.unit;
  const std::string name = fmt::format("{} {}", unit.property, unit.dtype);
  const std::string headline = unit.message.empty() ? std::string() : fmt::format(": {}", message_headline(unit.message));
  const std::string why = m.entry && !m.entry->reason.empty() ? fmt::format(" ({})", m.entry->reason) : std::string();
  switch (m.expected) {
    case ExpectedOutcome::Pass:
      return fmt::format("{}: expected to pass, but it {}{}", name, unit_status_name(unit.status), headline);
    case ExpectedOutcome::Fail:
      if (unit.status == UnitStatus::Passed)
        return fmt::format("{}: expected to fail{}, but it passed: if the bug is fixed, remove the entry", name, why);
      return fmt::format("{}: expected to fail{}, but it was skipped{}", name, why, headline);
    case ExpectedOutcome::Skip:
      return fmt::format("{}: expected to be skipped{}, but it {}{}", name, why, unit_status_name(unit.status), headline);
    case ExpectedOutcome::PassOrFail:
      return fmt::format("{}: expected to pass or fail{}, but it was skipped{}", name, why, headline);
  }
  return name;
}

}  // namespace attncheck
