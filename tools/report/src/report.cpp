// The report model, its JSON form and the bridge from the engine's outcomes.
#include "attncheck/report.h"

#include <cmath>
#include <algorithm>
#include <limits>
#include <regex>

#include <fmt/format.h>

#include "attncheck/engine.h"
#include "attncheck/heatmaps.h"

namespace attncheck {

using nlohmann::json;

std::string_view unit_status_name(UnitStatus status) {
  switch (status) {
    case UnitStatus::Passed: return "passed";
    case UnitStatus::Failed: return "failed";
    case UnitStatus::Skipped: return "skipped";
  }
  return "?";
}

std::optional<UnitStatus> parse_unit_status(std::string_view name) {
  for (UnitStatus s : {UnitStatus::Passed, UnitStatus::Failed, UnitStatus::Skipped})
    if (unit_status_name(s) == name) return s;
  return std::nullopt;
}

ReportTotals totals(const RunReport& report) {
  ReportTotals t;
  for (const UnitResult& u : report.units) {
    ++t.units;
    t.seconds += u.seconds;
    switch (u.status) {
      case UnitStatus::Passed: ++t.passed; break;
      case UnitStatus::Failed: ++t.failed; break;
      case UnitStatus::Skipped: ++t.skipped; break;
    }
  }
  return t;
}

std::string accuracy_phrase(const UnitResult& u) {
  std::string text;
  if (u.worst_accuracy_ratio) text = fmt::format("accuracy ratio ≤ {:.3g}", *u.worst_accuracy_ratio);
  if (u.worst_guaranteed_relative_accuracy > 0)
    text += fmt::format("{}τ/|O| ≤ {:.3g}", text.empty() ? "" : ", ", u.worst_guaranteed_relative_accuracy);
  return text;
}

namespace {

VerdictMetrics verdict_metrics(const Verdict& v) {
  return VerdictMetrics{v.max_ratio, v.nmse, v.max_abs_error, v.max_ulps_row_scale, v.summary()};
}

}  // namespace

UnitResult to_unit_result(const PropertyOutcome& outcome, std::size_t index, const std::string& backend_spec) {
  UnitResult unit;
  unit.index = index;
  unit.property = outcome.property;
  unit.dtype = std::string(dtype_name(outcome.dtype));
  switch (outcome.status) {
    case OutcomeStatus::Passed: unit.status = UnitStatus::Passed; break;
    case OutcomeStatus::Failed: unit.status = UnitStatus::Failed; break;
    case OutcomeStatus::Skipped: unit.status = UnitStatus::Skipped; break;
  }
  unit.message = outcome.message;
  unit.cases = outcome.cases_passed;
  unit.skipped = outcome.cases_skipped;
  unit.decline_reasons = outcome.decline_reasons;
  unit.worst_ratio = outcome.worst_ratio;
  unit.worst_case = outcome.worst_case;
  unit.worst_accuracy_ratio = outcome.worst_accuracy_ratio;
  unit.worst_accuracy_case = outcome.worst_accuracy_case;
  unit.worst_guaranteed_relative_accuracy = outcome.worst_guaranteed_relative_accuracy;
  if (outcome.status == OutcomeStatus::Failed) unit.failure_kind = outcome.accuracy_failure ? "accuracy" : "conformance";
  unit.shrunk_case = outcome.shrunk_case;
  if (outcome.shrunk_verdict) unit.shrunk_verdict = verdict_metrics(*outcome.shrunk_verdict);
  unit.reproduce = outcome.reproduce;
  // Only a failure has something to replay; a reproduce command for a pass would mislead.
  if (outcome.status == OutcomeStatus::Failed && !outcome.reproduce.empty())
    unit.reproduce_command = reproduce_command(outcome, backend_spec);
  for (const FailureFinding& f : outcome.failures) {
    FindingResult finding;
    finding.kind = std::string(failure_kind_name(f.kind));
    finding.message = f.message;
    finding.minimal_case = f.minimal_case;
    finding.pinned_case = f.pinned_case;
    finding.simplifications = f.simplifications;
    finding.excluded = f.excluded;
    for (const Diagnosis& d : f.diagnoses) finding.diagnoses.emplace_back(d.hypothesis, d.statement);
    if (f.verdict) finding.verdict = verdict_metrics(*f.verdict);
    if (!f.pinned_case.empty()) finding.reproduce_command = finding_reproduce_command(outcome, f, backend_spec);
    if (f.evidence) finding.heatmaps = failure_heatmaps(*f.evidence);
    unit.findings.push_back(std::move(finding));
  }
  // The first finding's --case command replays the minimal case; RapidCheck's string, the
  // shrunk one (kept in `reproduce` for an exact replay of the search).
  if (!unit.findings.empty() && !unit.findings.front().reproduce_command.empty())
    unit.reproduce_command = unit.findings.front().reproduce_command;
  unit.seconds = outcome.seconds;
  unit.coverage = outcome.coverage;
  return unit;
}

std::string sanitize_utf8(std::string_view text) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    std::uint32_t min = 0;
    if (c < 0x80) length = 1;
    else if ((c & 0xE0) == 0xC0) length = 2, min = 0x80;
    else if ((c & 0xF0) == 0xE0) length = 3, min = 0x800;
    else if ((c & 0xF8) == 0xF0) length = 4, min = 0x10000;
    bool valid = length > 0 && i + length <= text.size();
    std::uint32_t code = length == 1 ? c : (c & (0x7F >> length));
    for (std::size_t k = 1; valid && k < length; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      valid = (cc & 0xC0) == 0x80;
      code = (code << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are invalid UTF-8 too.
    if (valid && length > 1) valid = code >= min && code <= 0x10FFFF && !(code >= 0xD800 && code <= 0xDFFF);
    if (valid) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out.append(kReplacement);
      ++i;
    }
  }
  return out;
}

std::string message_headline(std::string_view message) {
  std::vector<std::string_view> lines;
  for (std::size_t start = 0; start <= message.size();) {
    const std::size_t end = std::min(message.find('\n', start), message.size());
    lines.push_back(message.substr(start, end - start));
    start = end + 1;
  }
  // RapidCheck's shape: "path/file.cpp:56:", the expression, a blank line, then the message.
  static const std::regex location(R"(^\S+:[0-9]+:$)");
  std::size_t first = 0;
  if (!lines.empty() && std::regex_match(lines[0].begin(), lines[0].end(), location)) {
    while (first < lines.size() && !lines[first].empty()) ++first;
  }
  for (std::size_t i = first; i < lines.size(); ++i)
    if (!lines[i].empty()) return std::string(lines[i]);
  return lines.empty() ? std::string() : std::string(lines[0]);
}

// --- JSON ----------------------------------------------------------------------------------------

namespace {

// JSON has no infinity or NaN; a failing kernel produces both (a NaN output has an infinite bound
// ratio), and drift tracking must not read them as 0. They are written as strings.
json number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return value;
}

std::string path_of(std::string_view parent, std::string_view key) {
  return parent.empty() ? std::string(key) : fmt::format("{}.{}", parent, key);
}

const json& field(const json& object, std::string_view key, std::string_view parent) {
  if (!object.is_object()) throw ReportError(fmt::format("{}: expected a JSON object", parent.empty() ? "report" : parent));
  const auto it = object.find(key);
  if (it == object.end()) throw ReportError(fmt::format("{}: missing", path_of(parent, key)));
  return *it;
}

[[noreturn]] void wrong_type(std::string_view parent, std::string_view key, std::string_view expected, const json& value) {
  throw ReportError(fmt::format("{}: expected {}, found {}", path_of(parent, key), expected, value.type_name()));
}

std::string get_string(const json& object, std::string_view key, std::string_view parent) {
  const json& value = field(object, key, parent);
  if (!value.is_string()) wrong_type(parent, key, "a string", value);
  return value.get<std::string>();
}

template <typename Int>
Int get_integer(const json& object, std::string_view key, std::string_view parent) {
  const json& value = field(object, key, parent);
  if (!value.is_number_integer()) wrong_type(parent, key, "an integer", value);
  if constexpr (std::is_unsigned_v<Int>) {
    if (value.is_number_unsigned()) return value.get<Int>();
    if (value.get<std::int64_t>() < 0) wrong_type(parent, key, "a non-negative integer", value);
  }
  return value.get<Int>();
}

// A number as number() writes it; `path` names it in the error.
double number_value(const json& value, std::string_view path) {
  if (value.is_number()) return value.get<double>();
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  wrong_type("", path, "a number (or \"inf\", \"-inf\", \"nan\")", value);
}

double get_number(const json& object, std::string_view key, std::string_view parent) {
  return number_value(field(object, key, parent), path_of(parent, key));
}

json metadata_json(const RunMetadata& m) {
  return json{{"attncheck_version", m.attncheck_version},
              {"backend", m.backend},
              {"backend_spec", m.backend_spec},
              {"backend_origin", m.backend_origin},
              {"profile", m.profile},
              {"cases", m.cases},
              {"max_size", m.max_size},
              {"seed", m.seed},
              {"property_filter", m.property_filter},
              {"problem_filter", m.problem_filter},
              {"dtypes", m.dtypes},
              {"reproduce", m.reproduce},
              {"accuracy_factor", m.accuracy_factor ? json(number(*m.accuracy_factor)) : json(nullptr)},
              {"shard", {{"index", m.shard.index}, {"count", m.shard.count}}},
              {"total_units", m.total_units},
              {"merged_shards", m.merged_shards},
              {"started_at", m.started_at},
              {"hostname", m.hostname},
              {"seconds", number(m.seconds)},
              {"declared_conventions", m.declared_conventions}};
}

RunMetadata metadata_from_json(const json& j) {
  const std::string p = "run";
  RunMetadata m;
  m.attncheck_version = get_string(j, "attncheck_version", p);
  m.backend = get_string(j, "backend", p);
  m.backend_spec = get_string(j, "backend_spec", p);
  m.backend_origin = get_string(j, "backend_origin", p);
  m.profile = get_string(j, "profile", p);
  m.cases = get_integer<int>(j, "cases", p);
  m.max_size = get_integer<int>(j, "max_size", p);
  m.seed = get_integer<std::uint64_t>(j, "seed", p);
  m.property_filter = get_string(j, "property_filter", p);
  m.problem_filter = get_string(j, "problem_filter", p);
  const json& dtypes = field(j, "dtypes", p);
  if (!dtypes.is_array()) wrong_type(p, "dtypes", "an array", dtypes);
  for (std::size_t i = 0; i < dtypes.size(); ++i) {
    if (!dtypes[i].is_string()) wrong_type(p, fmt::format("dtypes[{}]", i), "a string", dtypes[i]);
    m.dtypes.push_back(dtypes[i].get<std::string>());
  }
  m.reproduce = get_string(j, "reproduce", p);
  if (const auto it = j.find("accuracy_factor"); it != j.end() && !it->is_null())
    m.accuracy_factor = get_number(j, "accuracy_factor", p);
  const json& shard = field(j, "shard", p);
  m.shard.index = get_integer<int>(shard, "index", "run.shard");
  m.shard.count = get_integer<int>(shard, "count", "run.shard");
  if (m.shard.count < 1 || m.shard.index < 0 || m.shard.index >= m.shard.count)
    throw ReportError(fmt::format("run.shard: {}/{} is not a shard (need 0 <= index < count)", m.shard.index, m.shard.count));
  m.total_units = get_integer<std::size_t>(j, "total_units", p);
  m.merged_shards = get_integer<int>(j, "merged_shards", p);
  m.started_at = get_string(j, "started_at", p);
  m.hostname = get_string(j, "hostname", p);
  m.seconds = get_number(j, "seconds", p);
  // Added without a schema bump: absent in older reports.
  if (const auto it = j.find("declared_conventions"); it != j.end()) {
    if (!it->is_array()) wrong_type(p, "declared_conventions", "an array", *it);
    for (std::size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string()) wrong_type(p, fmt::format("declared_conventions[{}]", i), "a string", (*it)[i]);
      m.declared_conventions.push_back((*it)[i].get<std::string>());
    }
  }
  return m;
}

json verdict_json(const std::optional<VerdictMetrics>& v) {
  if (!v) return nullptr;
  return json{{"max_ratio", number(v->max_ratio)},
              {"nmse", number(v->nmse)},
              {"max_abs_error", number(v->max_abs_error)},
              {"max_ulps_row_scale", number(v->max_ulps_row_scale)},
              {"summary", v->summary}};
}

std::optional<VerdictMetrics> verdict_from_json(const json& j, std::string_view key, const std::string& parent) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  const std::string p = path_of(parent, key);
  return VerdictMetrics{get_number(*it, "max_ratio", p), get_number(*it, "nmse", p), get_number(*it, "max_abs_error", p),
                        get_number(*it, "max_ulps_row_scale", p), get_string(*it, "summary", p)};
}

const json& get_array(const json& object, std::string_view key, std::string_view parent) {
  const json& value = field(object, key, parent);
  if (!value.is_array()) wrong_type(parent, key, "an array", value);
  return value;
}

std::vector<std::string> get_strings(const json& object, std::string_view key, std::string_view parent) {
  std::vector<std::string> strings;
  const json& array = get_array(object, key, parent);
  for (std::size_t i = 0; i < array.size(); ++i) {
    if (!array[i].is_string()) wrong_type(parent, fmt::format("{}[{}]", key, i), "a string", array[i]);
    strings.push_back(array[i].get<std::string>());
  }
  return strings;
}

json heatmap_json(const Heatmap& m) {
  json values = json::array();
  for (double v : m.values) values.push_back(number(v));
  return json{{"title", m.title},         {"row_axis", m.row_axis},   {"col_axis", m.col_axis},
              {"rows", m.rows},           {"cols", m.cols},           {"row_block", m.row_block},
              {"col_block", m.col_block}, {"pattern", m.pattern},       {"values", std::move(values)}};
}

Heatmap heatmap_from_json(const json& j, const std::string& p) {
  Heatmap m;
  m.title = get_string(j, "title", p);
  m.row_axis = get_string(j, "row_axis", p);
  m.col_axis = get_string(j, "col_axis", p);
  m.rows = get_integer<std::int64_t>(j, "rows", p);
  m.cols = get_integer<std::int64_t>(j, "cols", p);
  m.row_block = get_integer<std::int64_t>(j, "row_block", p);
  m.col_block = get_integer<std::int64_t>(j, "col_block", p);
  if (m.rows < 0 || m.cols < 0 || m.row_block < 1 || m.col_block < 1)
    throw ReportError(fmt::format("{}: {} × {} cells of {} × {} elements is not a heatmap", p, m.rows, m.cols,
                                  m.row_block, m.col_block));
  const json& pattern = field(j, "pattern", p);
  if (!pattern.is_boolean()) wrong_type(p, "pattern", "a boolean", pattern);
  m.pattern = pattern.get<bool>();
  const json& values = get_array(j, "values", p);
  if (static_cast<std::int64_t>(values.size()) != m.rows * m.cols)
    throw ReportError(fmt::format("{}.values: {} values for {} × {} cells", p, values.size(), m.rows, m.cols));
  for (std::size_t i = 0; i < values.size(); ++i)
    m.values.push_back(number_value(values[i], fmt::format("{}.values[{}]", p, i)));
  return m;
}

json finding_json(const FindingResult& f) {
  json diagnoses = json::array();
  for (const auto& [hypothesis, statement] : f.diagnoses)
    diagnoses.push_back(json{{"hypothesis", hypothesis}, {"statement", statement}});
  json heatmaps = json::array();
  for (const Heatmap& m : f.heatmaps) heatmaps.push_back(heatmap_json(m));
  return json{{"kind", f.kind},
              {"message", f.message},
              {"minimal_case", f.minimal_case},
              {"pinned_case", f.pinned_case},
              {"simplifications", f.simplifications},
              {"excluded", f.excluded},
              {"diagnoses", std::move(diagnoses)},
              {"verdict", verdict_json(f.verdict)},
              {"reproduce_command", f.reproduce_command},
              {"heatmaps", std::move(heatmaps)}};
}

FindingResult finding_from_json(const json& j, const std::string& p) {
  FindingResult f;
  f.kind = get_string(j, "kind", p);
  f.message = get_string(j, "message", p);
  f.minimal_case = get_string(j, "minimal_case", p);
  f.pinned_case = get_string(j, "pinned_case", p);
  f.simplifications = get_strings(j, "simplifications", p);
  f.excluded = get_string(j, "excluded", p);
  const json& diagnoses = get_array(j, "diagnoses", p);
  for (std::size_t i = 0; i < diagnoses.size(); ++i) {
    const std::string dp = fmt::format("{}.diagnoses[{}]", p, i);
    f.diagnoses.emplace_back(get_string(diagnoses[i], "hypothesis", dp), get_string(diagnoses[i], "statement", dp));
  }
  f.verdict = verdict_from_json(j, "verdict", p);
  f.reproduce_command = get_string(j, "reproduce_command", p);
  const json& heatmaps = get_array(j, "heatmaps", p);
  for (std::size_t i = 0; i < heatmaps.size(); ++i)
    f.heatmaps.push_back(heatmap_from_json(heatmaps[i], fmt::format("{}.heatmaps[{}]", p, i)));
  return f;
}

json unit_json(const UnitResult& u) {
  json findings = json::array();
  for (const FindingResult& f : u.findings) findings.push_back(finding_json(f));
  return json{{"index", u.index},
              {"property", u.property},
              {"dtype", u.dtype},
              {"status", unit_status_name(u.status)},
              {"message", u.message},
              {"cases", u.cases},
              {"skipped", u.skipped},
              {"decline_reasons", u.decline_reasons},
              {"worst_ratio", number(u.worst_ratio)},
              {"worst_case", u.worst_case},
              {"worst_accuracy_ratio", u.worst_accuracy_ratio ? json(number(*u.worst_accuracy_ratio)) : json(nullptr)},
              {"worst_accuracy_case", u.worst_accuracy_case},
              {"worst_guaranteed_relative_accuracy", number(u.worst_guaranteed_relative_accuracy)},
              {"failure_kind", u.failure_kind},
              {"shrunk_case", u.shrunk_case},
              {"shrunk_verdict", verdict_json(u.shrunk_verdict)},
              {"reproduce", u.reproduce},
              {"reproduce_command", u.reproduce_command},
              {"findings", std::move(findings)},
              {"seconds", number(u.seconds)},
              {"coverage", u.coverage}};
}

UnitResult unit_from_json(const json& j, std::size_t position) {
  const std::string p = fmt::format("units[{}]", position);
  UnitResult u;
  u.index = get_integer<std::size_t>(j, "index", p);
  u.property = get_string(j, "property", p);
  u.dtype = get_string(j, "dtype", p);
  const std::string status = get_string(j, "status", p);
  const auto parsed = parse_unit_status(status);
  if (!parsed) throw ReportError(fmt::format("{}.status: '{}' is not passed, failed or skipped", p, status));
  u.status = *parsed;
  u.message = get_string(j, "message", p);
  u.cases = get_integer<int>(j, "cases", p);
  u.skipped = get_integer<int>(j, "skipped", p);
  u.worst_ratio = get_number(j, "worst_ratio", p);
  u.worst_case = get_string(j, "worst_case", p);
  u.shrunk_case = get_string(j, "shrunk_case", p);
  // The accuracy fields were added after the first schema; older reports lack them.
  if (const auto it = j.find("worst_accuracy_ratio"); it != j.end() && !it->is_null())
    u.worst_accuracy_ratio = get_number(j, "worst_accuracy_ratio", p);
  if (j.contains("worst_accuracy_case")) u.worst_accuracy_case = get_string(j, "worst_accuracy_case", p);
  if (j.contains("worst_guaranteed_relative_accuracy"))
    u.worst_guaranteed_relative_accuracy = get_number(j, "worst_guaranteed_relative_accuracy", p);
  if (j.contains("failure_kind")) u.failure_kind = get_string(j, "failure_kind", p);
  u.shrunk_verdict = verdict_from_json(j, "shrunk_verdict", p);
  u.reproduce = get_string(j, "reproduce", p);
  u.reproduce_command = get_string(j, "reproduce_command", p);
  // Added without a schema bump: reports written before findings existed lack them.
  if (j.contains("findings")) {
    const json& findings = get_array(j, "findings", p);
    for (std::size_t i = 0; i < findings.size(); ++i)
      u.findings.push_back(finding_from_json(findings[i], fmt::format("{}.findings[{}]", p, i)));
  }
  u.seconds = get_number(j, "seconds", p);
  // Both maps were added after the first schema; older reports simply lack them.
  for (auto [field, target] : {std::pair{"coverage", &u.coverage}, std::pair{"decline_reasons", &u.decline_reasons}}) {
    const auto it = j.find(field);
    if (it == j.end()) continue;
    if (!it->is_object()) wrong_type(p, field, "an object", *it);
    for (const auto& [key, count] : it->items()) {
      if (!count.is_number_integer()) wrong_type(p + "." + field, key, "an integer", count);
      (*target)[key] = count.get<int>();
    }
  }
  return u;
}

}  // namespace

json to_json(const RunReport& report) {
  const ReportTotals t = totals(report);
  json units = json::array();
  for (const UnitResult& u : report.units) units.push_back(unit_json(u));
  return json{{"format", kReportFormat},
              {"schema_version", kReportSchemaVersion},
              {"run", metadata_json(report.run)},
              // Derived from units; written for readers that only want the headline, ignored on read.
              {"summary", {{"units", t.units}, {"passed", t.passed}, {"failed", t.failed}, {"skipped", t.skipped}}},
              {"units", std::move(units)}};
}

RunReport report_from_json(const json& j) {
  const std::string format = get_string(j, "format", "");
  if (format != kReportFormat)
    throw ReportError(fmt::format("format: '{}' is not an attncheck report (expected '{}')", format, kReportFormat));
  const int version = get_integer<int>(j, "schema_version", "");
  if (version != kReportSchemaVersion)
    throw ReportError(fmt::format("schema_version: {} is not supported (this attncheck reads version {})", version,
                                  kReportSchemaVersion));
  RunReport report;
  report.run = metadata_from_json(field(j, "run", ""));
  const json& units = field(j, "units", "");
  if (!units.is_array()) wrong_type("", "units", "an array", units);
  for (std::size_t i = 0; i < units.size(); ++i) report.units.push_back(unit_from_json(units[i], i));
  return report;
}

void write_json(std::ostream& out, const RunReport& report) {
  out << to_json(report).dump(2, ' ', false, json::error_handler_t::replace) << '\n';
}

RunReport read_json(std::istream& in, std::string_view source) {
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    throw ReportError(fmt::format("{}: not valid JSON ({})", source, e.what()));
  }
  try {
    return report_from_json(j);
  } catch (const ReportError& e) {
    throw ReportError(fmt::format("{}: {}", source, e.what()));
  }
}

}  // namespace attncheck
