// `attncheck generate`, `verify` and `reference`: golden fixtures made, checked and extended by
// the same engine that runs the properties (fixtures/include/attncheck/golden.h).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <fmt/format.h>

#include "attncheck/golden.h"
#include "attncheck/report.h"
#include "commands.h"

namespace attncheck::cli {
namespace fs = std::filesystem;

int generate_command(const GenerateOptions& options, std::ostream& out, std::ostream& err) {
  const std::optional<ReferenceIsa> isa = parse_reference_isa(options.reference_isa);
  if (!isa) {
    err << fmt::format("attncheck generate: --reference-isa {} is not one of auto, baseline, avx2, avx512\n",
                       options.reference_isa);
    return kExitUsage;
  }
  std::vector<GeneratedFixture> fixtures;
  try {
    fixtures = generate_suite(options.suite, options.seed, *isa);
  } catch (const std::invalid_argument& e) {  // an unknown suite, or (ProblemError) an ISA this CPU lacks
    err << "attncheck generate: " << e.what() << "\n";
    return kExitUsage;
  }  catch (const FixtureError& e) {  // a suite's fixture its own reader would refuse: a bug here, reported, not a crash
    err << "attncheck generate: suite '" << options.suite << "' built a fixture it cannot write: " << e.what() << "\n";
    return kExitFailed;
  }
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) {
    err << fmt::format("attncheck generate: cannot create '{}': {}\n", options.out_dir, ec.message());
    return kExitUsage;
  }
  std::uintmax_t bytes = 0;
  for (const GeneratedFixture& g : fixtures) {
    const fs::path path = fs::path(options.out_dir) / g.file_name;
    try {
      write_fixture(path, g.fixture);
    } catch (const FixtureError& e) {
      err << "attncheck generate: " << e.what() << "\n";
      return kExitUsage;
    }
    bytes += fs::file_size(path);
  }
  out << fmt::format("wrote {} fixtures of suite '{}' (seed {}, {:.1f} KiB) to {}\n", fixtures.size(), options.suite,
                     options.seed, static_cast<double>(bytes) / 1024.0, options.out_dir);
  return kExitPassed;
}

namespace {

std::vector<fs::path> fixture_files(const std::vector<std::string>& paths, std::ostream& err, bool& missing) {
  std::vector<fs::path> files;
  for (const std::string& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<fs::path> in_dir;
      for (const auto& entry : fs::directory_iterator(p))
        if (entry.path().extension() == ".safetensors" || entry.path().extension() == ".json") in_dir.push_back(entry.path());
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else if (fs::exists(p)) {
      files.emplace_back(p);
    } else {
      err << fmt::format("{}: no such file or directory\n", p);
      missing = true;
    }
  }
  return files;
}

}  // namespace

int verify_command(const VerifyOptions& options, std::ostream& out, std::ostream& err) {
  std::optional<Backend> backend;
  try {
    backend.emplace(open_backend(options.backend));
  } catch (const LoadError& e) {
    err << fmt::format("attncheck verify: --backend '{}': {}\n", options.backend, e.what());
    return kExitUsage;
  }
  // Opened before any fixture runs, so that an unwritable path is a usage error at once.
  std::ofstream html;
  if (!options.html_path.empty()) {
    html.open(options.html_path, std::ios::out | std::ios::trunc);
    if (!html) {
      err << fmt::format("attncheck verify: --html '{}': cannot open for writing ({})\n", options.html_path,
                         std::strerror(errno));
      return kExitUsage;
    }
  }
  // The HTML report's units: one per fixture (per dtype for a toy case), named by its file.
  RunReport report;
  report.run.backend = std::string(backend->name());
  report.run.backend_spec = options.backend;
  report.run.backend_origin = backend->origin();
  report.run.profile = "fixtures";
  bool unreadable = false;
  const std::vector<fs::path> files = fixture_files(options.paths, err, unreadable);
  int passed = 0, failed = 0, skipped = 0;
  auto tally = [&](const std::string& label, DType dtype, const FixtureVerdict& verdict) {
    const char* word = verdict.status == FixtureStatus::Passed ? "PASS" : verdict.status == FixtureStatus::Failed ? "FAIL" : "SKIP";
    out << fmt::format("{} {}  {}\n", word, label, verdict.message);
    passed += verdict.status == FixtureStatus::Passed;
    failed += verdict.status == FixtureStatus::Failed;
    skipped += verdict.status == FixtureStatus::Skipped;
    UnitResult unit;
    unit.index = report.units.size();
    unit.property = label;
    unit.dtype = std::string(dtype_name(dtype));
    unit.status = verdict.status == FixtureStatus::Passed   ? UnitStatus::Passed
                  : verdict.status == FixtureStatus::Failed ? UnitStatus::Failed
                                                            : UnitStatus::Skipped;
    unit.message = verdict.message;
    unit.cases = verdict.status == FixtureStatus::Passed ? 1 : 0;
    if (verdict.verdict) {
      const Verdict& v = *verdict.verdict;
      unit.worst_ratio = v.max_ratio;
      unit.shrunk_verdict = VerdictMetrics{v.max_ratio, v.nmse, v.max_abs_error, v.max_ulps_row_scale, v.summary()};
    }
    if (verdict.gradient_verdict) unit.worst_ratio = verdict.gradient_verdict->max_ratio;
    if (std::find(report.run.dtypes.begin(), report.run.dtypes.end(), unit.dtype) == report.run.dtypes.end())
      report.run.dtypes.push_back(unit.dtype);
    report.units.push_back(std::move(unit));
  };
  // --direction: a forward verdict per file (per dtype for a toy case), as always, and a backward
  // one labelled "(backward)" for a file that has a backward pass. Asked for the backward alone,
  // a file without one is a skip that says so, so that every file named is accounted for.
  const bool forward = includes_forward(options.direction);
  auto judge_backward = [&](bool has_backward) {
    return options.direction == Direction::Backward || (includes_backward(options.direction) && has_backward);
  };
  for (const fs::path& path : files) {
    // A .json file is a hand-derived toy case (fixtures/toy): checked in every dtype, since its
    // integer inputs are exact in each.
    if (path.extension() == ".json") {
      try {
        const ToyCase toy = read_toy_case(path);
        for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
          if (forward)
            tally(fmt::format("{} ({})", path.filename().string(), dtype_name(dtype)), dtype,
                  verify_toy_case(*backend, toy, dtype));
          if (judge_backward(toy.backward.has_value()))
            tally(fmt::format("{} ({}, backward)", path.filename().string(), dtype_name(dtype)), dtype,
                  verify_toy_case_backward(*backend, toy, dtype));
        }
      } catch (const FixtureError& e) {
        err << e.what() << "\n";  // one line, naming the file
        unreadable = true;
      } catch (const std::exception& e) {
        err << fmt::format("{}: {}\n", path.string(), e.what());
        unreadable = true;
      }
      continue;
    }
    Fixture fixture;
    try {
      fixture = read_fixture(path);
    } catch (const FixtureError& e) {
      err << e.what() << "\n";  // one line, naming the file
      unreadable = true;
      continue;
    }
    try {
      if (forward) tally(path.filename().string(), fixture.input_dtype, verify_fixture(*backend, fixture));
      if (judge_backward(fixture.has_backward()))
        tally(path.filename().string() + " (backward)", fixture.input_dtype, verify_fixture_backward(*backend, fixture));
    } catch (const std::exception& e) {
      err << fmt::format("{}: {}\n", path.string(), e.what());
      unreadable = true;
    }
  }
  out << fmt::format("{} passed, {} failed, {} skipped\n", passed, failed, skipped);
  if (html.is_open()) {
    write_html(html, report);
    html.close();
    if (!html) {
      err << fmt::format("attncheck verify: --html '{}': writing the report failed\n", options.html_path);
      return kExitUsage;
    }
  }
  if (unreadable) return kExitUsage;
  return failed > 0 ? kExitFailed : kExitPassed;
}

int reference_command(const ReferenceCommandOptions& options, std::ostream& out, std::ostream& err) {
  try {
    Fixture fixture = read_fixture(options.input);
    fixture = with_reference_outputs(std::move(fixture));
    write_fixture(options.output, fixture);
    out << fmt::format("wrote {} with the reference's out{}{} ({})\n", options.output,
                       fixture.tensors.count("lse") ? " and lse" : "",
                       fixture.has_backward() ? ", dq, dk and dv" : "", fixture.problem.describe());
    return kExitPassed;
  } catch (const FixtureError& e) {
    err << e.what() << "\n";
  } catch (const ProblemError& e) {
    err << fmt::format("{}: {}\n", options.input, e.what());
  }
  return kExitUsage;
}

}  // namespace attncheck::cli
