/// \file report.h
/// \brief The results of one `attncheck run` as plain data, and the three report formats CI
/// consumes: JSON (the archival form, read back by `attncheck merge` and by drift tracking),
/// JUnit XML (test dashboards) and Markdown (a job summary).
///
/// The data model does not depend on the engine: a report read back from disk months later is the
/// same type as one produced now. to_unit_result() is the one bridge from the engine's
/// PropertyOutcome. The JSON schema is documented in tools/README.md; bump kReportSchemaVersion
/// when a field changes meaning or disappears (adding a field does not need a bump).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "attncheck/shard.h"

namespace attncheck {

struct PropertyOutcome;

/// "format" in every JSON report, so that a stray JSON file is refused with a clear message.
inline constexpr std::string_view kReportFormat = "attncheck-report";
inline constexpr int kReportSchemaVersion = 1;

/// A report cannot be read, written or merged: one line saying what and where.
class ReportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class UnitStatus : std::uint8_t { Passed, Failed, Skipped };
std::string_view unit_status_name(UnitStatus status);  ///< "passed", "failed", "skipped"
std::optional<UnitStatus> parse_unit_status(std::string_view name);

/// The metrics of the shrunk failing case's verdict worth tracking over time (numerics/README.md
/// §4.3).
struct VerdictMetrics {
  double max_ratio = 0;           ///< max |Ô − O| / τ: the gated metric
  double nmse = 0;
  double max_abs_error = 0;
  double max_ulps_row_scale = 0;
  std::string summary;            ///< Verdict::summary(), one line
  bool operator==(const VerdictMetrics&) const = default;
};

/// A small matrix for the HTML report: the bound ratio r = |Ô − O| / τ over two axes of a
/// failing case (NaN where an element is not judged), or the allowed-key pattern (1 allowed,
/// 0 masked). Rows × cols ≤ 64 × 64: larger axes are reduced by taking the maximum over blocks.
struct Heatmap {
  std::string title;     ///< "r over query row × output column, batch 0, head 1"
  std::string row_axis;  ///< "query row"
  std::string col_axis;  ///< "output column"
  std::int64_t rows = 0, cols = 0;
  std::int64_t row_block = 1, col_block = 1;  ///< elements per cell along each axis (1: exact)
  std::vector<double> values;                 ///< row-major
  bool pattern = false;  ///< values are the allowed-key pattern (1/0), not ratios r
  bool operator==(const Heatmap&) const = default;
};

/// One distinct failure of a unit (PropertyOutcome::failures), as reports keep it.
struct FindingResult {
  std::string kind;              ///< failure_kind_name: "output", "lse", "nan-placement", …
  std::string message;
  std::string minimal_case;
  std::string pinned_case;
  std::vector<std::string> simplifications;
  std::string excluded;
  std::vector<std::pair<std::string, std::string>> diagnoses;  ///< hypothesis name, statement
  std::optional<VerdictMetrics> verdict;
  std::string reproduce_command;  ///< replays this finding (`--case` pins its case)
  std::vector<Heatmap> heatmaps;  ///< from the evidence; empty when there was none
  bool operator==(const FindingResult&) const = default;
};

/// One unit of work: one property for one input dtype.
struct UnitResult {
  std::size_t index = 0;        ///< position in the unsplit run's unit list (see plan.h)
  std::string property;
  std::string dtype;            ///< "f32", "f16", "bf16"
  UnitStatus status = UnitStatus::Skipped;
  std::string message;          ///< failure description or skip reason; empty when passed
  int cases = 0;                ///< cases judged and passed
  int skipped = 0;              ///< cases the backend declined
  /// The backend's own reasons for the declined cases (supports(), or kAttncheckNotSupported
  /// from a call) and how many cases each: what the author's supports() turned away.
  std::map<std::string, int> decline_reasons;
  double worst_ratio = 0;       ///< largest bound ratio among judged cases
  std::string worst_case;       ///< AttentionCase::describe() of that case
  /// The accuracy verdict (numerics/README.md §4.5), when the run measured it (--accuracy-factor):
  /// the largest kernel/baseline error ratio (max or aggregate) among judged cases, and its case.
  std::optional<double> worst_accuracy_ratio;
  std::string worst_accuracy_case;
  /// The largest τ / max(|O|, A) among judged cases: the weakest accuracy the profile guaranteed.
  double worst_guaranteed_relative_accuracy = 0;
  /// On failure: "accuracy" when the kernel conformed to its declaration but exceeded the
  /// accuracy factor, else "conformance"; empty unless failed.
  std::string failure_kind;
  std::string shrunk_case;      ///< on failure: the minimal failing case
  std::optional<VerdictMetrics> shrunk_verdict;
  std::string reproduce;        ///< on failure: RapidCheck's reproduce string
  std::string reproduce_command;  ///< on failure: the command line that replays it
  std::vector<FindingResult> findings;  ///< on failure: every distinct failure, the first first
  double seconds = 0;
  std::map<std::string, int> coverage;  ///< judged cases per coverage cell
  bool operator==(const UnitResult&) const = default;
};

/// What was run, where and how: enough to tell whether two shard reports belong together.
struct RunMetadata {
  std::string attncheck_version;
  std::string backend;          ///< the backend's own name (from its table)
  std::string backend_spec;     ///< what was given to --backend: a name or a path
  std::string backend_origin;   ///< "built-in" or the library path
  std::string profile;          ///< quick | standard | exhaustive
  int cases = 0;                ///< cases per unit (the profile's, or --cases)
  int max_size = 0;
  std::uint64_t seed = 0;
  std::string property_filter;  ///< --property regex ("" = all)
  std::string problem_filter;   ///< --problem regex ("" = all)
  std::vector<std::string> dtypes;
  std::string reproduce;        ///< --reproduce, when replaying
  std::optional<double> accuracy_factor;  ///< --accuracy-factor (unset: accuracy not measured)
  Shard shard;                  ///< {0, 1} for an unsplit or merged run
  std::size_t total_units = 0;  ///< units of the unsplit run, before sharding
  int merged_shards = 0;        ///< 0, or how many shard reports were merged into this one
  std::string started_at;       ///< UTC, "YYYY-MM-DDTHH:MM:SS" (the JUnit timestamp format)
  std::string hostname;
  double seconds = 0;           ///< wall time of the whole run
  /// "f32: declared: masked keys are weighted by zero, …": each dtype's declared departures
  /// from the strict conventions (NumericsProfile::declared_conventions), once per dtype.
  std::vector<std::string> declared_conventions;
  bool operator==(const RunMetadata&) const = default;
};

struct RunReport {
  RunMetadata run;
  std::vector<UnitResult> units;  ///< ascending index
  bool operator==(const RunReport&) const = default;
};

struct ReportTotals {
  std::size_t units = 0, passed = 0, failed = 0, skipped = 0;
  double seconds = 0;
};
ReportTotals totals(const RunReport& report);

/// The unit's accuracy numbers in one phrase for every report format: "accuracy ratio ≤ 1.3,
/// τ/|O| ≤ 0.00012" (the ratio only when the run measured it; empty when nothing was judged).
std::string accuracy_phrase(const UnitResult& unit);

/// The engine's outcome as a report unit. `backend_spec` goes into the reproduce command.
UnitResult to_unit_result(const PropertyOutcome& outcome, std::size_t index, const std::string& backend_spec);

// --- JSON --------------------------------------------------------------------------------------
nlohmann::json to_json(const RunReport& report);
/// Throws ReportError naming the missing or mistyped field ("units[3].status: …").
RunReport report_from_json(const nlohmann::json& json);
/// Pretty-printed, with invalid UTF-8 replaced (a backend's message may hold any bytes).
void write_json(std::ostream& out, const RunReport& report);
/// `source` names the input in error messages (a file name).
RunReport read_json(std::istream& in, std::string_view source);

// --- JUnit XML -----------------------------------------------------------------------------------
/// <testsuites> with one <testsuite name="backend.dtype"> per dtype, one <testcase
/// classname="backend.dtype" name="property"> per unit, <failure> or <skipped> with a message.
/// Satisfies both the Ant and the Jenkins JUnit schemas.
void write_junit(std::ostream& out, const RunReport& report);
/// Text escaped for XML 1.0 attribute values and character data: markup characters become
/// entities, characters XML 1.0 forbids (most C0 controls) and invalid UTF-8 become U+FFFD.
std::string xml_escape(std::string_view text);

// --- Markdown ------------------------------------------------------------------------------------
/// A heading, a totals line, a table of every unit and a section per failure (for
/// $GITHUB_STEP_SUMMARY and the like).
void write_markdown(std::ostream& out, const RunReport& report);
/// Text safe inside one Markdown table cell: '|' escaped, line breaks as <br>, HTML escaped.
std::string markdown_cell(std::string_view text);

// --- HTML ----------------------------------------------------------------------------------------
/// One self-contained page (inline CSS and SVG, no script, nothing fetched): the run's metadata,
/// the table of every unit, per failing unit and finding its minimal case, diagnosis,
/// simplifications, verdict, reproduce command and heatmaps (r on a log colour scale, +inf and
/// "not judged" distinct, the allowed-key pattern beside them), and the coverage grid.
void write_html(std::ostream& out, const RunReport& report);
/// Text safe in HTML character data and quoted attribute values: & < > " ' become references,
/// invalid UTF-8 and the C0 controls other than tab and line feed become U+FFFD.
std::string html_escape(std::string_view text);

// --- Merging shards ------------------------------------------------------------------------------
struct ShardReport {
  std::string source;  ///< file name, for error messages
  RunReport report;
};
/// Combines the reports of the n shards of one run into the report of the unsplit run. Throws
/// ReportError when they do not belong together (different backend, seed, filters, profile,
/// dtypes, shard count or unit count), when two cover the same shard or unit, when a unit sits in
/// the wrong shard, or when units are missing (unless `allow_missing`).
RunReport merge_reports(const std::vector<ShardReport>& shards, bool allow_missing = false);

/// The line of a (possibly multi-line) failure or skip message that says what went wrong, for
/// one-line listings. RapidCheck prefixes an RC_FAIL description with "file:line:" and the
/// failing expression; those lines are skipped.
std::string message_headline(std::string_view message);

/// Replaces invalid UTF-8 sequences with U+FFFD.
std::string sanitize_utf8(std::string_view text);

}  // namespace attncheck
