#include "console.h"

#include <algorithm>
#include <array>
#include <map>
#include <vector>

#include <fmt/color.h>
#include <fmt/format.h>

#include "attncheck/engine.h"

namespace attncheck::cli {

namespace {

std::string ratio_text(const UnitResult& u) {
  if (u.cases == 0 && u.worst_ratio == 0) return "-";
  return fmt::format("{:.3g}", u.worst_ratio);
}

}  // namespace

void Console::progress(std::string_view text) {
  if (!tty_) return;
  // \r plus "erase to end of line": the next progress or result line replaces this one.
  out_ << "\r\x1b[K" << text << std::flush;
  progress_shown_ = true;
}

void Console::line(std::string_view text) {
  if (progress_shown_) out_ << "\r\x1b[K";
  progress_shown_ = false;
  out_ << text << '\n' << std::flush;
}

std::string Console::paint(std::string_view text, UnitStatus status) const {
  if (!color_) return std::string(text);
  const fmt::color colour = status == UnitStatus::Passed   ? fmt::color::green
                            : status == UnitStatus::Failed ? fmt::color::red
                                                           : fmt::color::yellow;
  return fmt::format("{}", fmt::styled(text, fmt::fg(colour) | fmt::emphasis::bold));
}

std::string Console::label(UnitStatus status) const {
  switch (status) {
    case UnitStatus::Passed: return paint("PASS", status);
    case UnitStatus::Failed: return paint("FAIL", status);
    case UnitStatus::Skipped: return paint("SKIP", status);
  }
  return "????";
}

void Console::unit_line(const UnitResult& u, std::size_t position, std::size_t count) {
  const int width = static_cast<int>(std::to_string(count).size());
  std::string text = fmt::format("[{:>{}}/{}] {}  {} {}", position, width, count, label(u.status), u.property, u.dtype);
  switch (u.status) {
    case UnitStatus::Passed:
      text += fmt::format("  {} cases  worst r={}  {:.2f} s", u.cases, ratio_text(u), u.seconds);
      if (u.skipped > 0) text += fmt::format("  ({} declined: {})", u.skipped, describe_decline_reasons(u.decline_reasons, 2));
      if (const std::string accuracy = accuracy_phrase(u); !accuracy.empty()) text += "  " + accuracy;
      break;
    case UnitStatus::Skipped: text += fmt::format("  ({})", message_headline(u.message)); break;
    case UnitStatus::Failed:
      if (!u.findings.empty()) {
        // The verdict and case are printed once, in the failure's section after the table.
        std::vector<std::string> kinds;
        for (const FindingResult& f : u.findings) kinds.push_back(f.kind);
        text += fmt::format("  after {} cases  {:.2f} s: {} ({}; see below)", u.cases, u.seconds,
                            u.findings.size() == 1 ? "1 failure" : fmt::format("{} distinct failures", u.findings.size()),
                            fmt::join(kinds, ", "));
        break;
      }
      text += fmt::format("  after {} cases  {:.2f} s: {}{}", u.cases, u.seconds,
                          u.failure_kind == "accuracy" ? "accuracy failure: " : "", message_headline(u.message));
      break;
  }
  line(text);
}

std::vector<std::string> Console::declined_dtypes(const RunReport& report) {
  std::map<std::string, bool> all_declined;
  for (const UnitResult& u : report.units) {
    const bool declined = u.status == UnitStatus::Skipped && u.message == fmt::format("{} inputs are not supported", u.dtype);
    auto [it, inserted] = all_declined.emplace(u.dtype, declined);
    if (!inserted) it->second = it->second && declined;
  }
  std::vector<std::string> dtypes;
  for (const std::string& dtype : report.run.dtypes)
    if (all_declined.count(dtype) && all_declined[dtype]) dtypes.push_back(dtype);
  return dtypes;
}

void Console::summary(const RunReport& report) {
  const std::vector<std::string> declined = declined_dtypes(report);
  auto is_declined = [&](const UnitResult& u) { return std::find(declined.begin(), declined.end(), u.dtype) != declined.end(); };
  static constexpr std::array<std::string_view, 9> kHeader = {
      "property", "dtype", "status", "worst ratio", "accuracy", "tau/|O|", "cases", "declined", "time"};
  std::vector<std::array<std::string, 9>> rows;
  std::vector<const UnitResult*> row_units;
  for (const UnitResult& u : report.units) {
    if (is_declined(u)) continue;
    row_units.push_back(&u);
    rows.push_back({u.property, u.dtype, std::string(unit_status_name(u.status)), ratio_text(u),
                    u.worst_accuracy_ratio ? fmt::format("{:.3g}", *u.worst_accuracy_ratio) : "-",
                    u.worst_guaranteed_relative_accuracy > 0 ? fmt::format("{:.3g}", u.worst_guaranteed_relative_accuracy)
                                                             : "-",
                    std::to_string(u.cases), std::to_string(u.skipped), fmt::format("{:.2f} s", u.seconds)});
  }
  std::array<std::size_t, 9> width{};
  for (std::size_t c = 0; c < width.size(); ++c) {
    width[c] = kHeader[c].size();
    for (const auto& row : rows) width[c] = std::max(width[c], row[c].size());
  }
  // Text columns left-aligned, numbers right-aligned; the status is coloured after padding so
  // that escape codes do not count towards the widths.
  auto format_row = [&](const auto& cells, const UnitResult* unit) {
    std::string text;
    for (std::size_t c = 0; c < cells.size(); ++c) {
      const std::string_view cell = cells[c];
      std::string padded = c < 3 ? fmt::format("{:<{}}", cell, width[c]) : fmt::format("{:>{}}", cell, width[c]);
      if (c == 2 && unit != nullptr) padded = paint(padded, unit->status);
      text += "  " + padded;
    }
    return text;
  };
  line("");
  line(format_row(kHeader, nullptr));
  std::size_t total_width = 0;
  for (std::size_t w : width) total_width += w + 2;
  line(fmt::format("  {:-<{}}", "", total_width - 2));
  for (std::size_t i = 0; i < rows.size(); ++i) line(format_row(rows[i], row_units[i]));
  if (!declined.empty()) {
    std::size_t units = 0;
    for (const UnitResult& u : report.units) units += is_declined(u) ? 1 : 0;
    line(fmt::format("  {}: the backend declines these inputs; {} units skipped", fmt::join(declined, ", "), units));
  }

  for (const UnitResult& u : report.units) {
    if (u.status != UnitStatus::Failed) continue;
    line("");
    const std::size_t count = u.findings.size();
    line(fmt::format("{} {} {}{}{}", label(u.status), u.property, u.dtype,
                     u.failure_kind == "accuracy" ? " (accuracy failure: conforms to its declaration)" : "",
                     count > 1 ? fmt::format(": {} distinct failures", count) : ""));
    if (u.findings.empty()) {
      // A failure with no finding (the engine could not run the property): its message says why.
      if (!u.message.empty()) line(fmt::format("  {}", u.message));
      if (!u.shrunk_case.empty()) line(fmt::format("  case:      {}", u.shrunk_case));
      if (!u.reproduce_command.empty()) line(fmt::format("  reproduce: {}", u.reproduce_command));
      continue;
    }
    for (std::size_t n = 0; n < count; ++n) {
      const FindingResult& f = u.findings[n];
      const std::string indent = count > 1 ? "    " : "  ";
      if (count > 1)
        line(fmt::format("  {}. {}{}", n + 1, f.kind, f.excluded.empty() ? "" : fmt::format(" (searched with {})", f.excluded)));
      else
        line(fmt::format("  kind:      {}", f.kind));
      line(fmt::format("{}case:      {}", indent, f.minimal_case));
      line(fmt::format("{}failure:   {}", indent, f.message));
      for (std::size_t d = 0; d < f.diagnoses.size(); ++d)
        line(fmt::format("{}{}{}", indent, d == 0 ? "diagnosis: " : "           ", f.diagnoses[d].second));
      if (f.diagnoses.empty()) line(fmt::format("{}diagnosis: no hypothesis of the catalogue reproduces the output", indent));
      if (!f.simplifications.empty())
        line(fmt::format("{}removed:   {}", indent, fmt::join(f.simplifications, "; ")));
      if (!f.reproduce_command.empty()) line(fmt::format("{}reproduce: {}", indent, f.reproduce_command));
    }
  }

  const ReportTotals t = totals(report);
  line("");
  line(fmt::format("{} units: {} passed, {} failed, {} skipped ({:.1f} s)", t.units, t.passed, t.failed, t.skipped,
                   report.run.seconds));
  // A backend that checked nothing must not read like a green run: say why, once.
  std::map<std::string, int> reasons;
  std::size_t judged = 0;
  for (const UnitResult& u : report.units) {
    judged += static_cast<std::size_t>(u.cases) + (u.status == UnitStatus::Failed ? 1 : 0);
    for (const auto& [reason, count] : u.decline_reasons) reasons[reason] += count;
  }
  if (t.units > 0 && judged == 0 && !reasons.empty())
    line(fmt::format("the backend declined every drawn case, nothing was checked: {}", describe_decline_reasons(reasons, 2)));
}

}  // namespace attncheck::cli
