// The HTML report: one file a reader can open anywhere, mail or archive as a CI artifact. It must
// not fetch anything (artifacts are viewed offline, and a report must look the same in a year),
// so the style is inline and the heatmaps are inline SVG; it has no script at all.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "attncheck/report.h"

namespace attncheck {

std::string html_escape(std::string_view raw) {
  const std::string text = sanitize_utf8(raw);
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        // C0 controls are parse errors in HTML (and invisible); tab and line feed are text.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') out += "\xEF\xBF\xBD";
        else out += c;
    }
  }
  return out;
}

namespace {

std::string escaped(std::string_view text) { return html_escape(text); }

std::string ratio_text(double r) {
  if (std::isnan(r)) return "not judged";
  if (std::isinf(r)) return r > 0 ? "+inf" : "-inf";
  return fmt::format("{:.3g}", r);
}

// --- Colour scale ----------------------------------------------------------------------------
// r is judged against 1 (|Ô − O| ≤ τ), and in a failing case it spans decades, so the scale is
// logarithmic and splits at r = 1: blues within τ (10^-3 and below palest), oranges to dark red
// above (10^3 and beyond darkest). +inf (a NaN or Inf output against a finite reference) is black
// and "not judged" a hatched grey, so neither can be read as a ratio.
constexpr double kDecades = 3;

struct Rgb {
  double r, g, b;
};

std::string mix(Rgb from, Rgb to, double t) {
  t = std::clamp(t, 0.0, 1.0);
  auto channel = [&](double a, double b) { return static_cast<int>(std::lround(a + (b - a) * t)); };
  return fmt::format("#{:02x}{:02x}{:02x}", channel(from.r, to.r), channel(from.g, to.g), channel(from.b, to.b));
}

constexpr Rgb kWithinLow{247, 251, 255}, kWithinHigh{66, 133, 190};
constexpr Rgb kFailingLow{253, 208, 140}, kFailingHigh{140, 0, 0};
constexpr std::string_view kInfinite = "#000000";
constexpr std::string_view kNotJudged = "url(#not-judged)";
constexpr std::string_view kAllowed = "#2f3b52", kMasked = "#ffffff";

std::string ratio_colour(double r) {
  if (std::isnan(r)) return std::string(kNotJudged);
  if (std::isinf(r)) return std::string(kInfinite);
  if (r <= 1) return mix(kWithinLow, kWithinHigh, r <= 0 ? 0.0 : 1 + std::log10(r) / kDecades);
  return mix(kFailingLow, kFailingHigh, std::log10(r) / kDecades);
}

// --- SVG -------------------------------------------------------------------------------------

// "3" for an exact cell, "64–127" for a block (the last one clipped to the axis length, which the
// map does not keep; the block's first element is what a reader needs to locate it).
std::string cell_range(std::int64_t cell, std::int64_t block) {
  if (block == 1) return std::to_string(cell);
  return fmt::format("{}–{}", cell * block, cell * block + block - 1);
}

void write_heatmap(std::ostream& out, const Heatmap& map) {
  // Cells of 4 to 22 px, so that a 64-wide map stays within about 300 px and a 2-wide one is legible.
  const std::int64_t longest = std::max<std::int64_t>({map.rows, map.cols, 1});
  const int cell = static_cast<int>(std::clamp<std::int64_t>(300 / longest, 4, 22));
  const int left = 34, top = 18;
  // Room for the axis titles even around a 1 × 1 map (a 1-minimal case often is one).
  const std::int64_t row_title_end = top + std::max<std::int64_t>(map.rows * cell, 80);
  const std::int64_t width = std::max<std::int64_t>(left + map.cols * cell + 4, 150), height = row_title_end + 4;
  out << "<figure class=\"heatmap\">\n";
  out << fmt::format("<figcaption>{}", escaped(map.title));
  if (map.row_block > 1 || map.col_block > 1)
    out << fmt::format(" <span class=\"note\">(each cell the maximum over {} {} × {} {})</span>", map.row_block,
                       escaped(map.row_axis), map.col_block, escaped(map.col_axis));
  out << "</figcaption>\n";
  out << fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" "
      "aria-label=\"{}\">\n",
      width, height, width, height, escaped(map.title));
  out << fmt::format("<text x=\"{}\" y=\"11\" class=\"axis\">{} →</text>\n", left, escaped(map.col_axis));
  out << fmt::format("<text x=\"10\" y=\"{}\" class=\"axis\" transform=\"rotate(-90 10 {})\" text-anchor=\"start\">← {}</text>\n",
                     row_title_end, row_title_end, escaped(map.row_axis));
  out << fmt::format("<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">0</text>\n", left - 3, top + cell - 2);
  if (map.rows > 1)
    out << fmt::format("<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{}</text>\n", left - 3,
                       top + map.rows * cell - 2, (map.rows - 1) * map.row_block);
  for (std::int64_t i = 0; i < map.rows; ++i)
    for (std::int64_t j = 0; j < map.cols; ++j) {
      const double v = map.values[static_cast<std::size_t>(i * map.cols + j)];
      const std::string fill = map.pattern ? std::string(v > 0 ? kAllowed : kMasked) : ratio_colour(v);
      const std::string what = map.pattern ? (v > 0 ? "allowed" : "masked") : "r = " + ratio_text(v);
      out << fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{} {}, {} {}: {}</title></rect>\n",
                         left + j * cell, top + i * cell, cell, cell, fill, escaped(map.row_axis),
                         cell_range(i, map.row_block), escaped(map.col_axis), cell_range(j, map.col_block), what);
    }
  out << fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#555\" stroke-width=\"1\"/>\n",
                     left, top, map.cols * cell, map.rows * cell);
  out << "</svg>\n</figure>\n";
}

// The hatch for "not judged", defined once per page; every heatmap refers to it by id.
void write_svg_definitions(std::ostream& out) {
  out << "<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\"><defs>"
         "<pattern id=\"not-judged\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\">"
         "<rect width=\"6\" height=\"6\" fill=\"#e6e6e6\"/><path d=\"M0 6L6 0\" stroke=\"#9a9a9a\" stroke-width=\"1\"/>"
         "</pattern></defs></svg>\n";
}

void write_legend(std::ostream& out) {
  const int width = 360, bar_top = 4, bar_height = 14;
  out << "<div class=\"legend\">\n";
  out << fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"48\" viewBox=\"0 0 {} 48\" "
                     "role=\"img\" aria-label=\"colour scale of r\">\n",
                     width + 20, width + 20);
  // The bar: 60 steps of log10(r) from −3 to 3, so the colour at r = 1 sits at the middle.
  const int steps = 60;
  for (int s = 0; s < steps; ++s) {
    const double r = std::pow(10.0, -kDecades + 2 * kDecades * (s + 0.5) / steps);
    out << fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>", 10 + s * width / steps, bar_top,
                       width / steps + 1, bar_height, ratio_colour(r));
  }
  out << fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#000\" stroke-width=\"2\"/>\n", 10 + width / 2,
                     bar_top - 2, 10 + width / 2, bar_top + bar_height + 2);
  for (int d = 0; d <= 2 * static_cast<int>(kDecades); ++d) {
    const int exponent = d - static_cast<int>(kDecades);
    const std::string label = exponent == 0 ? "1" : fmt::format("10^{}", exponent);
    out << fmt::format("<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{}</text>", 10 + d * width / 6,
                       bar_top + bar_height + 12, label);
  }
  out << fmt::format("<text x=\"10\" y=\"{}\" class=\"tick\">r ≤ 1: within τ</text>", bar_top + bar_height + 26);
  out << fmt::format("<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">r &gt; 1: failing</text>", 10 + width,
                     bar_top + bar_height + 26);
  out << "</svg>\n";
  out << "<ul class=\"swatches\">"
      << fmt::format("<li><span class=\"swatch\" style=\"background:{}\"></span>+inf: NaN or Inf where the reference is finite</li>", kInfinite)
      << "<li><span class=\"swatch hatch\"></span>not judged by τ (non-finite reference, row with no allowed key)</li>"
      << fmt::format("<li><span class=\"swatch\" style=\"background:{}\"></span>allowed key</li>", kAllowed)
      << fmt::format("<li><span class=\"swatch\" style=\"background:{}\"></span>masked key</li>", kMasked) << "</ul>\n";
  out << "<p class=\"note\">r = |Ô − O| / τ, colour on a log scale; τ from the backend's declared numerics "
         "profile (numerics/README.md). Blocks of a long axis show their maximum.</p>\n";
  out << "</div>\n";
}

// --- Page sections ---------------------------------------------------------------------------

constexpr std::string_view kStyle = R"(
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       background: #fff; margin: 24px auto; max-width: 1180px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; }
h3 { font-size: 16px; margin: 20px 0 6px; } h4 { font-size: 14px; margin: 14px 0 4px; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { border: 1px solid #c8c8c8; padding: 3px 7px;
       text-align: left; vertical-align: top; } th { background: #f0f0f0; } td.num { text-align: right; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
code, pre { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 6px 8px; white-space: pre-wrap; word-break: break-word; }
code.command { display: block; background: #f6f6f6; border: 1px solid #ddd; padding: 6px 8px; white-space: pre-wrap;
       word-break: break-all; user-select: all; }
.passed { color: #0b6b2b; font-weight: 600; } .failed { color: #a30000; font-weight: 600; } .skipped { color: #666; }
tr.failing td { background: #fff3f3; } td.num { white-space: nowrap; } .note { color: #555; font-size: 12.5px; }
section.unit { border: 1px solid #d8d8d8; border-left: 4px solid #a30000; padding: 4px 14px 10px; margin: 14px 0;
       page-break-inside: avoid; }
article.finding { border-top: 1px dashed #ccc; margin-top: 10px; }
.maps { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure.heatmap { margin: 6px 0; } figure.heatmap figcaption { font-size: 12.5px; max-width: 340px; margin-bottom: 2px; }
svg text.axis { font: 11px sans-serif; fill: #333; } svg text.tick { font: 10px sans-serif; fill: #333; }
.legend { border: 1px solid #ddd; padding: 6px 10px; margin: 8px 0; display: inline-block; }
ul.swatches { list-style: none; padding: 0; margin: 4px 0; display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12.5px; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #555; vertical-align: -2px; margin-right: 5px; }
.swatch.hatch { background: repeating-linear-gradient(-45deg, #e6e6e6 0 3px, #9a9a9a 3px 4px); }
table.coverage td { text-align: right; min-width: 3.2em; } table.coverage td.missed { background: #ffe9c7; color: #8a4b00;
       font-weight: 600; } table.coverage td.reached { background: #eef6ee; }
@media print { body { margin: 0; max-width: none; } * { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
)";

std::string_view status_word(UnitStatus status) { return unit_status_name(status); }

std::string ratio_cell(const UnitResult& u) {
  // A ratio of 0 with no judged case means "nothing measured", not "exact".
  if (u.cases == 0 && u.worst_ratio == 0) return "–";
  return escaped(ratio_text(u.worst_ratio));
}

void write_metadata(std::ostream& out, const RunReport& report) {
  const RunMetadata& run = report.run;
  auto row = [&](std::string_view key, const std::string& value) {
    if (!value.empty()) out << fmt::format("<dt>{}</dt><dd>{}</dd>\n", key, value);
  };
  out << "<dl class=\"meta\">\n";
  row("backend", fmt::format("<code>{}</code> ({}), given as <code>{}</code>", escaped(run.backend),
                             escaped(run.backend_origin), escaped(run.backend_spec)));
  row("profile", fmt::format("{} ({} cases per unit, size ≤ {})", escaped(run.profile), run.cases, run.max_size));
  row("seed", std::to_string(run.seed));
  std::string dtypes;
  for (const std::string& d : run.dtypes) dtypes += (dtypes.empty() ? "" : ", ") + escaped(d);
  row("dtypes", dtypes);
  if (!run.property_filter.empty()) row("property filter", "<code>" + escaped(run.property_filter) + "</code>");
  if (!run.problem_filter.empty()) row("problem filter", "<code>" + escaped(run.problem_filter) + "</code>");
  if (!run.reproduce.empty()) row("replaying", "<code>" + escaped(run.reproduce) + "</code>");
  if (run.accuracy_factor) row("accuracy factor", fmt::format("{:g}", *run.accuracy_factor));
  row("started", escaped(run.started_at) + (run.started_at.empty() ? "" : " UTC") +
                     (run.hostname.empty() ? "" : " on " + escaped(run.hostname)));
  row("time", fmt::format("{:.1f} s", run.seconds));
  if (run.merged_shards > 0) row("shards", fmt::format("merged from {}", run.merged_shards));
  else if (run.shard.count > 1) row("shard", escaped(shard_name(run.shard)));
  row("attncheck", escaped(run.attncheck_version));
  std::string conventions;
  for (const std::string& c : run.declared_conventions) conventions += escaped(c) + "<br>";
  row("declared conventions", conventions);
  out << "</dl>\n";
}

void write_summary(std::ostream& out, const RunReport& report) {
  out << "<h2>Units</h2>\n<table class=\"units\">\n<thead><tr><th>property</th><th>dtype</th><th>status</th>"
         "<th>cases</th><th>declined</th><th>worst r</th><th>time</th><th>note</th></tr></thead>\n<tbody>\n";
  for (const UnitResult& u : report.units) {
    const std::string_view status = status_word(u.status);
    std::string property = escaped(u.property);
    if (u.status == UnitStatus::Failed) property = fmt::format("<a href=\"#unit-{}\">{}</a>", u.index, property);
    std::string note = u.status == UnitStatus::Passed ? "" : escaped(message_headline(u.message));
    if (u.failure_kind == "accuracy") note = "accuracy failure: " + note;
    if (u.findings.size() > 1) note += fmt::format(" ({} distinct failures)", u.findings.size());
    out << fmt::format("<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td>"
                       "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2f} s</td><td>{}</td></tr>\n",
                       u.status == UnitStatus::Failed ? "failing" : "", property, escaped(u.dtype), status, status, u.cases, u.skipped, ratio_cell(u), u.seconds,
                       note);
  }
  out << "</tbody>\n</table>\n";
}

void write_text_block(std::ostream& out, std::string_view label, const std::string& text) {
  if (text.empty()) return;
  out << fmt::format("<h4>{}</h4>\n<pre>{}</pre>\n", label, escaped(text));
}

void write_command(std::ostream& out, const std::string& command) {
  if (command.empty()) return;
  out << fmt::format("<h4>Reproduce</h4>\n<code class=\"command\">{}</code>\n", escaped(command));
}

void write_finding(std::ostream& out, const FindingResult& f, std::size_t number, std::size_t count) {
  out << "<article class=\"finding\">\n";
  out << fmt::format("<h4>Finding {} of {}: {}</h4>\n", number, count, escaped(f.kind));
  if (!f.message.empty()) out << fmt::format("<pre>{}</pre>\n", escaped(f.message));
  write_text_block(out, "Minimal case", f.minimal_case);
  if (!f.pinned_case.empty() && f.pinned_case != f.minimal_case) write_text_block(out, "Case as drawn (--case)", f.pinned_case);
  out << "<h4>Diagnosis</h4>\n";
  if (f.diagnoses.empty()) {
    out << "<p class=\"note\">No hypothesis of the catalogue reproduces the kernel's output.</p>\n";
  } else {
    out << "<ul>\n";
    for (const auto& [hypothesis, statement] : f.diagnoses)
      out << fmt::format("<li><code>{}</code>: {}</li>\n", escaped(hypothesis), escaped(statement));
    out << "</ul>\n";
  }
  if (!f.simplifications.empty()) {
    out << "<h4>Simplified after shrinking</h4>\n<ul>\n";
    for (const std::string& s : f.simplifications) out << fmt::format("<li><code>{}</code></li>\n", escaped(s));
    out << "</ul>\n";
  }
  if (!f.excluded.empty())
    out << fmt::format("<p><strong>Searched with excluded:</strong> {}</p>\n", escaped(f.excluded));
  if (f.verdict) write_text_block(out, "Verdict", f.verdict->summary);
  write_command(out, f.reproduce_command);
  if (!f.heatmaps.empty()) {
    write_legend(out);
    out << "<div class=\"maps\">\n";
    for (const Heatmap& map : f.heatmaps) write_heatmap(out, map);
    out << "</div>\n";
  }
  out << "</article>\n";
}

void write_failures(std::ostream& out, const RunReport& report) {
  bool any = false;
  for (const UnitResult& u : report.units) {
    if (u.status != UnitStatus::Failed) continue;
    if (!any) out << "<h2>Failures</h2>\n";
    any = true;
    out << fmt::format("<section class=\"unit\" id=\"unit-{}\">\n<h3>{} ({})</h3>\n", u.index, escaped(u.property),
                       escaped(u.dtype));
    if (u.findings.empty()) {
      // A report of an engine without findings (or read from an older JSON): the unit's own fields.
      if (!u.message.empty()) out << fmt::format("<pre>{}</pre>\n", escaped(u.message));
      write_text_block(out, "Shrunk case", u.shrunk_case);
      if (u.shrunk_verdict) write_text_block(out, "Verdict of the shrunk case", u.shrunk_verdict->summary);
      write_command(out, u.reproduce_command);
    } else {
      for (std::size_t i = 0; i < u.findings.size(); ++i) write_finding(out, u.findings[i], i + 1, u.findings.size());
    }
    out << "</section>\n";
  }
}

// The coverage cells are "<variant> <dtype> mask=<kind> causal=<alignment>" (property.h); every
// combination of these axes is a cell a run can reach, so one it never reached shows as missed.
constexpr std::string_view kVariants[] = {"mha", "mqa", "gqa"};
constexpr std::string_view kMasks[] = {"none", "bool", "bias"};
constexpr std::string_view kCausal[] = {"none", "top-left", "bottom-right", "offset", "key-lengths"};

void write_coverage(std::ostream& out, const RunReport& report) {
  std::map<std::string, long> reached;
  for (const UnitResult& u : report.units)
    for (const auto& [cell, count] : u.coverage) reached[cell] += count;
  out << "<h2>Coverage</h2>\n";
  if (reached.empty()) {
    out << "<p class=\"note\">No case was judged: no coverage to show.</p>\n";
    return;
  }
  std::set<std::string> in_grid;
  std::size_t cells = 0, missed = 0;
  std::ostringstream grids;
  for (const std::string& dtype : report.run.dtypes) {
    grids << fmt::format("<h4>{}</h4>\n<table class=\"coverage\">\n<thead><tr><th>variant</th><th>mask</th>", escaped(dtype));
    for (std::string_view c : kCausal) grids << fmt::format("<th>causal={}</th>", c);
    grids << "</tr></thead>\n<tbody>\n";
    for (std::string_view variant : kVariants)
      for (std::string_view mask : kMasks) {
        grids << fmt::format("<tr><th>{}</th><th>{}</th>", variant, mask);
        for (std::string_view causal : kCausal) {
          const std::string cell = fmt::format("{} {} mask={} causal={}", variant, dtype, mask, causal);
          in_grid.insert(cell);
          ++cells;
          const auto it = reached.find(cell);
          if (it == reached.end() || it->second == 0) {
            ++missed;
            grids << "<td class=\"missed\" title=\"never reached\">never</td>";
          } else {
            grids << fmt::format("<td class=\"reached\">{}</td>", it->second);
          }
        }
        grids << "</tr>\n";
      }
    grids << "</tbody>\n</table>\n";
  }
  out << fmt::format("<p>{} of {} cells (variant × dtype × mask × causal) reached; judged cases per cell, "
                     "<span class=\"missed\">never</span> marks a cell no case reached.</p>\n",
                     cells - missed, cells);
  out << grids.str();
  std::vector<std::pair<std::string, long>> others;
  for (const auto& entry : reached)
    if (!in_grid.count(entry.first)) others.push_back(entry);
  if (others.empty()) return;
  out << "<h4>Other cells</h4>\n<table class=\"coverage\">\n<thead><tr><th>cell</th><th>cases</th></tr></thead>\n<tbody>\n";
  for (const auto& [cell, count] : others)
    out << fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", escaped(cell), count);
  out << "</tbody>\n</table>\n";
}

}  // namespace

void write_html(std::ostream& out, const RunReport& report) {
  const ReportTotals t = totals(report);
  const std::string verdict = fmt::format("{} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped);
  out << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      << fmt::format("<title>attncheck: {} — {}</title>\n", escaped(report.run.backend), verdict)
      << "<style>" << kStyle << "</style>\n</head>\n<body>\n";
  write_svg_definitions(out);
  out << fmt::format("<h1>attncheck: <code>{}</code> — <span class=\"{}\">{}</span></h1>\n", escaped(report.run.backend),
                     t.failed > 0 ? "failed" : "passed", verdict);
  write_metadata(out, report);
  write_summary(out, report);
  write_failures(out, report);
  write_coverage(out, report);
  out << "</body>\n</html>\n";
}

}  // namespace attncheck
