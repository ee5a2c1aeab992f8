// `attncheck run`: plans the units, opens the backend, runs each unit through the engine and
// writes the reports. Everything that can be wrong with the invocation (a bad regex, an unknown
// backend, a report path that cannot be written) is found before the first property runs, so a
// long run never ends in a usage error.
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <map>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <regex>
#include <set>

#include <fmt/format.h>

#include "attncheck/coverage.h"
#include "attncheck/engine.h"
#include "attncheck/expectations.h"
#include "attncheck/report.h"
#include "attncheck/shard.h"
#include "commands.h"
#include "console.h"
#include "attncheck/failure_saver.h"

namespace attncheck::cli {

namespace {

std::vector<std::string> parse_dtype_list(const std::string& list) {
  std::vector<std::string> dtypes;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t comma = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, comma - start);
    const auto dtype = parse_dtype(item);
    if (!dtype) throw UsageError(fmt::format("--dtype '{}': '{}' is not a dtype (use f32, f16, bf16, e4m3, e5m2)", list, item));
    const std::string name(dtype_name(*dtype));
    if (std::find(dtypes.begin(), dtypes.end(), name) != dtypes.end())
      throw UsageError(fmt::format("--dtype '{}': {} is listed twice", list, name));
    dtypes.push_back(name);
    start = comma + 1;
  }
  return dtypes;
}

std::uint64_t resolve_seed(const RunOptions& options, const Environment& env) {
  if (options.seed) return *options.seed;
  if (!env.seed) return kDefaultSeed;
  std::uint64_t seed = 0;
  const std::string& text = *env.seed;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), seed);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size())
    throw UsageError(fmt::format("ATTNCHECK_SEED='{}': expected an unsigned 64-bit integer", text));
  return seed;
}

Shard resolve_shard(const RunOptions& options, const Environment& env) {
  // --shard wins over the environment: an explicit flag is the more specific request.
  if (options.shard) return parse_shard(*options.shard);
  return shard_from_gtest_variables(env.gtest_total_shards ? env.gtest_total_shards->c_str() : nullptr,
                                    env.gtest_shard_index ? env.gtest_shard_index->c_str() : nullptr)
      .value_or(Shard{});
}

// Opened (and truncated) before the run so that a path that cannot be written is a usage error
// at once, not after an hour of checking.
std::unique_ptr<std::ofstream> open_report(const std::string& path, std::string_view flag) {
  if (path.empty()) return nullptr;
  auto file = std::make_unique<std::ofstream>(path, std::ios::out | std::ios::trunc);
  if (!*file) throw UsageError(fmt::format("{} '{}': cannot open for writing ({})", flag, path, std::strerror(errno)));
  return file;
}

void finish_report(std::ofstream* file, const std::string& path, std::string_view flag) {
  if (file == nullptr) return;
  file->close();
  if (!*file) throw UsageError(fmt::format("{} '{}': writing the report failed", flag, path));
}

std::string utc_now() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
}

std::string host_name() {
  char buffer[256] = {};
  if (gethostname(buffer, sizeof buffer - 1) != 0) return "localhost";
  return buffer;
}

const PropertyDef& find_property(const std::string& name) {
  for (const PropertyDef& p : all_properties())
    if (p.name == name) return p;
  throw std::logic_error(fmt::format("planned property '{}' is not registered", name));
}

// Which coverage cells (coverage.h) the run's cases reached, over all units, and which it never
// did: a generator or filter that starves a cell shows here.
std::string coverage_summary(const RunReport& report, const CoverageScope& scope) {
  std::map<std::string, long> counts;
  for (const UnitResult& unit : report.units)
    for (const auto& [cell, count] : unit.coverage) counts[cell] += count;
  return coverage_summary(all_coverage_cells(scope), counts);
}

int run(const RunOptions& options, const Environment& env, std::ostream& out) {
  const std::uint64_t seed = resolve_seed(options, env);
  // First, before anything can fail or print: the one number that reproduces this run.
  out << fmt::format("Using seed={}\n", seed) << std::flush;

  const auto profile = find_suite_profile(options.profile);
  if (!profile) throw UsageError(fmt::format("--profile '{}': not a profile (quick, standard, exhaustive)", options.profile));
  if (options.cases && *options.cases < 1) throw UsageError(fmt::format("--cases {}: must be at least 1", *options.cases));
  const std::vector<std::string> dtypes = parse_dtype_list(options.dtypes);
  const Shard shard = resolve_shard(options, env);
  if (env.gtest_shard_status_file) {
    // GoogleTest's protocol: a test binary that understands sharding creates this file.
    std::ofstream status(*env.gtest_shard_status_file);
    if (!status) throw UsageError(fmt::format("GTEST_SHARD_STATUS_FILE '{}': cannot create", *env.gtest_shard_status_file));
  }

  // --direction keeps the properties of one pass (PropertyDef::needs_backward); the plan, its
  // shards and the expectations then speak of those alone.
  std::vector<std::string> names;
  for (const PropertyDef& p : all_properties())
    if (p.needs_backward ? includes_backward(options.direction) : includes_forward(options.direction)) names.push_back(p.name);
  if (names.empty())
    throw UsageError(fmt::format("--direction {}: none of the {} properties checks that pass (see `attncheck list properties`)",
                                 direction_name(options.direction), all_properties().size()));
  // fp8 dtypes pair with the fp8 family only, the others with every other property (property.h).
  const std::vector<PlannedUnit> plan = plan_units(names, options.property_regex, dtypes, [](const std::string& property, const std::string& dtype) {
    for (const PropertyDef& def : all_properties())
      if (def.name == property) return runs_on(def, *parse_dtype(dtype));
    return true;
  });
  if (plan.empty())
    throw UsageError(fmt::format("--property '{}' matches none of the {} properties{} (see `attncheck list properties`)",
                                 options.property_regex, names.size(),
                                 options.direction == Direction::Both
                                     ? std::string()
                                     : fmt::format(" of direction {}", direction_name(options.direction))));
  const std::vector<PlannedUnit> mine = select_shard(plan, shard);

  if (!options.reproduce.empty())
    if (auto why = reproduce_string_problem(options.reproduce)) throw UsageError(fmt::format("--reproduce: {}", *why));

  RunSettings settings;
  settings.cases = options.cases.value_or(profile->cases);
  settings.max_size = profile->max_size;
  settings.sizes = options.size_class ? *size_mix_for_class(*options.size_class) : profile->sizes;
  settings.seed = seed;
  settings.reproduce = options.reproduce;
  settings.max_findings = options.max_findings;
  settings.simplify = !options.no_simplify;
  if (!options.pinned_case.empty()) {
    if (!options.reproduce.empty()) throw UsageError("--case and --reproduce: give one of them, not both");
    try {
      settings.pinned_case = parse_case(options.pinned_case);
      settings.pinned_case->problem.validate();
    } catch (const std::exception& e) {
      throw UsageError(fmt::format("--case '{}': {}", options.pinned_case, e.what()));
    }
    if (std::find(dtypes.begin(), dtypes.end(), std::string(dtype_name(settings.pinned_case->dtype))) == dtypes.end())
      throw UsageError(fmt::format("--case is a {} case, but --dtype '{}' does not include {}", dtype_name(settings.pinned_case->dtype),
                                   options.dtypes, dtype_name(settings.pinned_case->dtype)));
  }
  settings.accuracy_factor = options.accuracy_factor;
  if (!options.problem_regex.empty()) {
    std::shared_ptr<const std::regex> filter;
    try {
      filter = std::make_shared<const std::regex>(options.problem_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw UsageError(fmt::format("--problem '{}': not a valid regular expression ({})", options.problem_regex, e.what()));
    }
    settings.problem_filter = [filter](const std::string& description) { return std::regex_search(description, *filter); };
  }

  std::optional<Expectations> expectations;
  if (!options.expect_path.empty()) {
    std::ifstream file(options.expect_path);
    if (!file) throw UsageError(fmt::format("--expect '{}': cannot open ({})", options.expect_path, std::strerror(errno)));
    try {
      // Every registered property is a known name: one file serves runs of either direction.
      std::vector<std::string> known;
      for (const PropertyDef& p : all_properties()) known.push_back(p.name);
      expectations = read_expectations(file, options.expect_path, known);
    } catch (const ReportError& e) {
      throw UsageError(fmt::format("--expect: {}", e.what()));
    }
  }

  auto junit = open_report(options.junit_path, "--junit");
  auto json = open_report(options.json_path, "--json");
  auto markdown = open_report(options.markdown_path, "--markdown");
  auto html = open_report(options.html_path, "--html");
  std::optional<FailureSaver> saver;
  if (!options.save_failures_dir.empty()) {
    try {
      saver.emplace(options.save_failures_dir);
    } catch (const FixtureError& e) {
      throw UsageError(fmt::format("--save-failures {}", e.what()));
    }
  }

  Backend backend = [&] {
    try {
      return open_backend(options.backend);
    } catch (const LoadError& e) {
      throw UsageError(fmt::format("--backend '{}': {}", options.backend, e.what()));
    }
  }();

  if (expectations && !expectations->backend.empty() && expectations->backend != backend.name())
    throw UsageError(fmt::format("--expect '{}' is for backend {}, but --backend '{}' is {}", options.expect_path,
                                 expectations->backend, options.backend, backend.name()));

  // Untrusted code runs isolated by default: a plug-in's crash must not take the run down.
  settings.isolate = options.isolate.value_or(backend.origin() != "built-in");
  settings.timeout_seconds = options.timeout_seconds;

  RunReport report;
  RunMetadata& run = report.run;
  run.attncheck_version = env.version;
  run.backend = std::string(backend.name());
  run.backend_spec = options.backend;
  run.backend_origin = backend.origin();
  run.profile = profile->name;
  run.cases = settings.cases;
  run.max_size = settings.max_size;
  run.seed = seed;
  run.property_filter = options.property_regex;
  run.problem_filter = options.problem_regex;
  run.dtypes = dtypes;
  run.reproduce = options.reproduce;
  run.accuracy_factor = options.accuracy_factor;
  run.shard = shard;
  run.total_units = plan.size();
  run.started_at = utc_now();
  run.hostname = host_name();
  CoverageScope coverage_scope;
  coverage_scope.sizes = settings.sizes;
  for (const std::string& name : dtypes) {
    coverage_scope.dtypes.push_back(*parse_dtype(name));
    std::optional<NumericsProfile> declared;
    try {
      declared = backend.profile(*parse_dtype(name));
    } catch (const std::exception&) {
      continue;  // get_profile's failure is reported by every unit of that dtype
    }
    if (!declared) coverage_scope.declined_dtypes[*parse_dtype(name)] = fmt::format("the backend declines {} inputs", name);
    if (declared)
      for (const std::string& convention : declared->declared_conventions())
        run.declared_conventions.push_back(fmt::format("{}: {}", name, convention));
  }

  Console console(out, env.stdout_is_tty, env.stdout_is_tty && !env.no_color);
  console.line(fmt::format("attncheck {}: backend {} ({}), profile {} ({} cases, size <= {}), {}", env.version, run.backend,
                           run.backend_origin, run.profile, run.cases, run.max_size,
                           shard.count > 1 ? fmt::format("shard {}: {} of {} units", shard_name(shard), mine.size(), plan.size())
                                           : fmt::format("{} units", plan.size())));
  for (const std::string& convention : run.declared_conventions) console.line(fmt::format("  {}", convention));

  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < mine.size(); ++i) {
    const PlannedUnit& planned = mine[i];
    console.progress(fmt::format("[{}/{}] running {} {} ...", i + 1, mine.size(), planned.property, planned.dtype));
    const DType dtype = *parse_dtype(planned.dtype);
    PropertyOutcome outcome;
    try {
      outcome = run_property(find_property(planned.property), backend, dtype, settings);
    } catch (const std::exception& e) {
      // The engine turns a backend's misbehaviour into a failed outcome; anything else escaping
      // it must still fail the gate, never pass it.
      outcome.property = planned.property;
      outcome.backend = run.backend;
      outcome.dtype = dtype;
      outcome.status = OutcomeStatus::Failed;
      outcome.message = fmt::format("the engine threw: {}", e.what());
      outcome.seed = seed;
    }
    UnitResult unit = to_unit_result(outcome, planned.index, options.backend);
    // The engine's command replays property, dtype and seed; a problem filter changes which
    // cases are drawn, so it must travel with the command too.
    if (!unit.reproduce_command.empty() && !options.problem_regex.empty())
      unit.reproduce_command += fmt::format(" --problem '{}'", options.problem_regex);
    // A dtype the backend declines as a whole is said once, after the loop, not once per unit.
    const bool declined_dtype = unit.status == UnitStatus::Skipped && unit.message == fmt::format("{} inputs are not supported", unit.dtype);
    if (!declined_dtype) console.unit_line(unit, i + 1, mine.size());
    if (saver)
      for (const std::string& line : saver->save(outcome, options.backend)) console.line(line);
    report.units.push_back(std::move(unit));
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const std::string& dtype : Console::declined_dtypes(report))
    console.line(fmt::format("{}: not supported by the backend ({} inputs are not supported); every {} unit skipped", dtype,
                             dtype, dtype));

  console.summary(report);
  console.line(coverage_summary(report, coverage_scope));
  if (json) write_json(*json, report);
  if (junit) write_junit(*junit, report);
  if (markdown) write_markdown(*markdown, report);
  if (html) write_html(*html, report);
  finish_report(json.get(), options.json_path, "--json");
  finish_report(junit.get(), options.junit_path, "--junit");
  finish_report(markdown.get(), options.markdown_path, "--markdown");
  finish_report(html.get(), options.html_path, "--html");

  if (saver) {
    console.line(fmt::format("--save-failures: {} regression fixture(s) written to {}{}; check them with `attncheck verify "
                             "--backend {} {}`",
                             saver->written(), saver->dir().string(),
                             saver->unchanged() > 0 ? fmt::format(" ({} already there, unchanged)", saver->unchanged()) : "",
                             options.backend, saver->dir().string()));
    if (!saver->errors().empty())
      throw UsageError(fmt::format("--save-failures '{}': {} fixture(s) could not be written: {}", options.save_failures_dir,
                                   saver->errors().size(), fmt::join(saver->errors(), "; ")));
  }
  const ReportTotals t = totals(report);
  if (t.units > 0 && t.skipped == t.units && options.require_backend)
    throw UsageError(fmt::format("--require-backend: backend {} checked nothing; every unit was skipped (first reason: {})",
                                 run.backend, report.units.front().message));
  if (expectations) {
    const ExpectationCheck check = check_expectations(*expectations, report);
    if (check.ok()) {
      console.line(fmt::format("expectations {}: all {} units as expected ({} expected failures, {} expected skips)",
                               options.expect_path, check.units, check.expected_failures, check.expected_skips));
      return kExitPassed;
    }
    console.line(fmt::format("expectations {}: {} of {} units differ:", options.expect_path, check.mismatches.size(),
                             check.units));
    for (const ExpectationMismatch& mismatch : check.mismatches) console.line(fmt::format("  {}", describe(mismatch)));
    return kExitFailed;
  }
  return t.failed > 0 ? kExitFailed : kExitPassed;
}

}  // namespace

int run_command(const RunOptions& options, const Environment& env, std::ostream& out, std::ostream& err) {
  try {
    return run(options, env, out);
  } catch (const UsageError& e) {
    out << std::flush;
    err << "attncheck run: error: " << e.what() << '\n';
    return kExitUsage;
  }
}

}  // namespace attncheck::cli
