// JUnit XML, in the shape of the Jenkins/Surefire schema (junit-10.xsd, a superset of Ant's):
// testsuites > testsuite (one per backend.dtype) > testcase (one per property) > failure|skipped.
#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "attncheck/report.h"

namespace attncheck {

namespace {

// Attribute values lose raw line breaks and tabs to attribute-value normalization, so there they
// are written as character references; in character data they are kept as they are.
std::string escape(std::string_view raw, bool attribute) {
  const std::string text = sanitize_utf8(raw);
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;  // also keeps "]]>" out of character data
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      case '\n': out += attribute ? "&#10;" : "\n"; break;
      case '\r': out += "&#13;"; break;
      case '\t': out += attribute ? "&#9;" : "\t"; break;
      default:
        // XML 1.0 forbids the other C0 controls even as character references.
        if (c < 0x20 || c == 0x7F) out += "\xEF\xBF\xBD";
        else out += ch;
    }
  }
  return out;
}

std::string attr(std::string_view text) { return escape(text, true); }
std::string seconds(double s) { return fmt::format("{:.3f}", s >= 0 ? s : 0.0); }

std::string failure_body(const UnitResult& u) {
  std::string body;
  if (!u.failure_kind.empty()) body += fmt::format("failure kind: {}\n", u.failure_kind);
  if (u.shrunk_verdict) body += fmt::format("verdict: {}\n", u.shrunk_verdict->summary);
  if (const std::string accuracy = accuracy_phrase(u); !accuracy.empty()) body += fmt::format("{}\n", accuracy);
  if (!u.shrunk_case.empty()) body += fmt::format("shrunk case: {}\n", u.shrunk_case);
  if (!u.reproduce_command.empty()) body += fmt::format("reproduce: {}\n", u.reproduce_command);
  if (!u.message.empty()) body += fmt::format("{}\n", u.message);
  return body;
}

// One line: a failure attribute is shown in one line by every dashboard.
std::string headline(const UnitResult& u) {
  if (u.message.empty() && u.shrunk_verdict) return u.shrunk_verdict->summary;
  return message_headline(u.message);
}

}  // namespace

std::string xml_escape(std::string_view text) { return attr(text); }

void write_junit(std::ostream& out, const RunReport& report) {
  const RunMetadata& run = report.run;
  // Suites in the order their dtype first appears, so the file follows the run's order.
  std::vector<std::string> dtypes;
  for (const UnitResult& u : report.units)
    if (std::find(dtypes.begin(), dtypes.end(), u.dtype) == dtypes.end()) dtypes.push_back(u.dtype);

  const ReportTotals all = totals(report);
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out << fmt::format("<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">\n",
                     attr(fmt::format("attncheck {}", run.backend)), all.units, all.failed, all.skipped,
                     seconds(all.seconds));
  const std::string timestamp = run.started_at.empty() ? "1970-01-01T00:00:00" : run.started_at;
  const std::string hostname = run.hostname.empty() ? "localhost" : run.hostname;
  for (std::size_t id = 0; id < dtypes.size(); ++id) {
    const std::string suite = fmt::format("{}.{}", run.backend, dtypes[id]);
    RunReport part;
    for (const UnitResult& u : report.units)
      if (u.dtype == dtypes[id]) part.units.push_back(u);
    const ReportTotals t = totals(part);
    out << fmt::format(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\" "
        "timestamp=\"{}\" hostname=\"{}\" id=\"{}\" package=\"attncheck\">\n",
        attr(suite), t.units, t.failed, t.skipped, seconds(t.seconds), attr(timestamp), attr(hostname), id);
    out << "    <properties>\n";
    const std::pair<std::string_view, std::string> properties[] = {
        {"attncheck_version", run.attncheck_version},
        {"backend", run.backend_spec},
        {"backend_origin", run.backend_origin},
        {"profile", run.profile},
        {"cases", std::to_string(run.cases)},
        {"seed", std::to_string(run.seed)},
        {"shard", shard_name(run.shard)},
        {"property_filter", run.property_filter},
        {"problem_filter", run.problem_filter},
        {"accuracy_factor", run.accuracy_factor ? fmt::format("{:g}", *run.accuracy_factor) : std::string("off")},
    };
    for (const auto& [name, value] : properties)
      out << fmt::format("      <property name=\"{}\" value=\"{}\"/>\n", attr(name), attr(value));
    out << "    </properties>\n";
    for (const UnitResult& u : part.units) {
      out << fmt::format("    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"", attr(u.property), attr(suite),
                         seconds(u.seconds));
      switch (u.status) {
        case UnitStatus::Passed: out << "/>\n"; break;
        case UnitStatus::Skipped:
          out << fmt::format(">\n      <skipped message=\"{}\"/>\n    </testcase>\n", attr(headline(u)));
          break;
        case UnitStatus::Failed:
          out << fmt::format(">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
                             attr(headline(u)), u.failure_kind == "accuracy" ? "accuracy" : "conformance",
                             escape(failure_body(u), false));
          break;
      }
    }
    out << "    <system-out/>\n    <system-err/>\n  </testsuite>\n";
  }
  out << "</testsuites>\n";
}

}  // namespace attncheck
