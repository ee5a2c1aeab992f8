// Markdown for a CI job summary ($GITHUB_STEP_SUMMARY, GitLab's report pages): the verdict in the
// heading, every unit in one table, and per failure what a reader needs to act on it.
#include <algorithm>

#include <fmt/format.h>

#include "attncheck/report.h"

namespace attncheck {

namespace {

std::string_view status_cell(UnitStatus status) {
  switch (status) {
    case UnitStatus::Passed: return "✅ passed";
    case UnitStatus::Failed: return "❌ failed";
    case UnitStatus::Skipped: return "⏭️ skipped";
  }
  return "?";
}

std::string ratio_cell(const UnitResult& u) {
  // A ratio of 0 with no judged case means "nothing measured", not "exact".
  if (u.cases == 0 && u.worst_ratio == 0) return "–";
  return fmt::format("{:.3g}", u.worst_ratio);
}

// Fenced so that quotes and backslashes in a command survive; a longer fence than any run of
// backticks inside keeps the block closed where it should be.
std::string fenced(std::string_view text) {
  std::size_t longest = 0, run = 0;
  for (char c : text) {
    run = c == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  const std::string fence(std::max<std::size_t>(3, longest + 1), '`');
  return fmt::format("{}\n{}\n{}\n", fence, sanitize_utf8(text), fence);
}

// A code span outside a table: only the backticks need care (a longer delimiter, CommonMark §6.1).
std::string inline_code(std::string_view raw) {
  std::string text = sanitize_utf8(raw);
  std::replace(text.begin(), text.end(), '\n', ' ');
  const std::string ticks = text.find('`') == std::string::npos ? "`" : "`` ";
  return ticks + text + (ticks.size() > 1 ? " ``" : "`");
}

}  // namespace

std::string markdown_cell(std::string_view raw) {
  const std::string text = sanitize_utf8(raw);
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    switch (c) {
      case '|': out += "\\|"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '\r': break;
      case '\n':
        if (i + 1 < text.size()) out += "<br>";
        break;
      default: out += c;
    }
  }
  return out;
}

void write_markdown(std::ostream& out, const RunReport& report) {
  const RunMetadata& run = report.run;
  const ReportTotals t = totals(report);
  const bool all_skipped = t.units > 0 && t.skipped == t.units;
  const std::string_view mark = t.failed > 0 ? "❌" : (all_skipped ? "⏭️" : "✅");
  out << fmt::format("## {} attncheck: `{}` — {} passed, {} failed, {} skipped\n\n", mark, markdown_cell(run.backend),
                     t.passed, t.failed, t.skipped);
  std::string shard = run.merged_shards > 0 ? fmt::format("merged from {} shards", run.merged_shards)
                                            : fmt::format("shard {}", shard_name(run.shard));
  out << fmt::format("Backend `{}` ({}) · profile {} ({} cases) · seed {} · {} · attncheck {} · {:.1f} s\n\n",
                     markdown_cell(run.backend_spec), markdown_cell(run.backend_origin), markdown_cell(run.profile),
                     run.cases, run.seed, shard, markdown_cell(run.attncheck_version), run.seconds);
  if (!run.property_filter.empty()) out << fmt::format("Property filter: {}\n\n", inline_code(run.property_filter));
  if (!run.problem_filter.empty()) out << fmt::format("Problem filter: {}\n\n", inline_code(run.problem_filter));

  out << "| property | dtype | status | worst ratio | accuracy | cases | declined | time | note |\n";
  out << "|---|---|---|---:|---|---:|---:|---:|---|\n";
  for (const UnitResult& u : report.units) {
    std::string note = u.status == UnitStatus::Passed ? "" : markdown_cell(message_headline(u.message));
    if (u.failure_kind == "accuracy") note = "accuracy failure: " + note;
    // Not measured (no accuracy factor, or no case judged against the reference) reads as the
    // ratio column does for a unit without a ratio.
    const std::string accuracy = accuracy_phrase(u);
    out << fmt::format("| {} | {} | {} | {} | {} | {} | {} | {:.2f} s | {} |\n", markdown_cell(u.property),
                       markdown_cell(u.dtype), status_cell(u.status), ratio_cell(u), accuracy.empty() ? std::string("–") : markdown_cell(accuracy),
                       u.cases, u.skipped, u.seconds, note);
  }

  if (t.failed == 0) return;
  out << "\n### Failures\n";
  for (const UnitResult& u : report.units) {
    if (u.status != UnitStatus::Failed) continue;
    out << fmt::format("\n#### {} ({})\n\n", markdown_cell(u.property), markdown_cell(u.dtype));
    if (!u.message.empty()) out << fenced(u.message);
    if (u.shrunk_verdict) out << "\nVerdict of the shrunk case:\n\n" << fenced(u.shrunk_verdict->summary);
    if (!u.shrunk_case.empty()) out << "\nShrunk case:\n\n" << fenced(u.shrunk_case);
    if (!u.reproduce_command.empty()) out << "\nReproduce:\n\n" << fenced(u.reproduce_command);
  }
}

}  // namespace attncheck
