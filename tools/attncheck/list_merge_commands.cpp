// `attncheck list` and `attncheck merge`.
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "attncheck/backend_impl.h"
#include "attncheck/engine.h"
#include "attncheck/report.h"
#include "commands.h"
#include "console.h"

namespace attncheck::cli {

namespace {

// "f32,f16,e4m3" — the input dtypes a backend declares a profile for.
std::string supported_dtypes(const Backend& backend) {
  std::vector<std::string_view> names;
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::E4M3, DType::E5M2})
    if (backend.profile(d)) names.push_back(dtype_name(d));
  return names.empty() ? "none" : fmt::format("{}", fmt::join(names, ","));
}

int list_backends(const std::vector<std::string>& plugins, std::ostream& out, std::ostream& err) {
  struct Row {
    std::string name, origin, memory, dtypes, description;
  };
  std::vector<Row> rows;
  int status = kExitPassed;
  std::vector<std::string> specs = builtin_backend_names();
  specs.insert(specs.end(), plugins.begin(), plugins.end());
  for (const std::string& spec : specs) {
    try {
      Backend backend = open_backend(spec);
      const DLDevice device = backend.device();
      std::string memory = impl::device_string(device.device_type);
      if (device.device_type != kDLCPU) memory += fmt::format(":{}", device.device_id);
      for (char& c : memory) c = c == ' ' ? '-' : c;  // one word a column
      rows.push_back({std::string(backend.name()), backend.origin(), memory, supported_dtypes(backend),
                      std::string(backend.description())});
    } catch (const std::exception& e) {
      err << fmt::format("attncheck list: error: backend '{}': {}\n", spec, e.what());
      status = kExitUsage;
    }
  }
  std::size_t name_width = 4, origin_width = 6, memory_width = 6, dtype_width = 6;
  for (const Row& r : rows) {
    name_width = std::max(name_width, r.name.size());
    origin_width = std::max(origin_width, r.origin.size());
    memory_width = std::max(memory_width, r.memory.size());
    dtype_width = std::max(dtype_width, r.dtypes.size());
  }
  out << fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {}\n", "name", name_width, "origin", origin_width, "memory",
                     memory_width, "dtypes", dtype_width, "description");
  for (const Row& r : rows)
    out << fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {}\n", r.name, name_width, r.origin, origin_width, r.memory,
                       memory_width, r.dtypes, dtype_width, r.description);
  return status;
}

int list_properties(std::ostream& out) {
  std::size_t name_width = 4, family_width = 6;
  for (const PropertyDef& p : all_properties()) {
    name_width = std::max(name_width, p.name.size());
    family_width = std::max(family_width, p.family.size());
  }
  out << fmt::format("{:<{}}  {:<{}}  {}\n", "name", name_width, "family", family_width, "why");
  for (const PropertyDef& p : all_properties())
    out << fmt::format("{:<{}}  {:<{}}  {}{}\n", p.name, name_width, p.family, family_width, p.why,
                       p.needs_layer      ? " (needs forward_layer)"
                       : p.needs_backward ? " (needs a backward pass)"
                       : p.fp8_inputs     ? " (fp8 inputs: --dtype e4m3,e5m2)"
                                          : "");
  return kExitPassed;
}

int list_profiles(std::ostream& out) {
  out << fmt::format("{:<12}  {:>6}  {:>8}\n", "name", "cases", "max size");
  for (const SuiteProfile& p : suite_profiles()) out << fmt::format("{:<12}  {:>6}  {:>8}\n", p.name, p.cases, p.max_size);
  return kExitPassed;
}

}  // namespace

int list_command(const std::string& what, const std::vector<std::string>& plugins, std::ostream& out, std::ostream& err) {
  if (what != "backends" && !plugins.empty()) {
    err << fmt::format("attncheck list: error: plug-in paths are listed only with `list backends`, not `list {}`\n", what);
    return kExitUsage;
  }
  if (what == "backends") return list_backends(plugins, out, err);
  if (what == "properties") return list_properties(out);
  if (what == "profiles") return list_profiles(out);
  err << fmt::format("attncheck list: error: '{}' is not backends, properties or profiles\n", what);
  return kExitUsage;
}

int merge_command(const MergeOptions& options, const Environment& env, std::ostream& out, std::ostream& err) {
  try {
    std::vector<ShardReport> shards;
    for (const std::string& path : options.inputs) {
      std::ifstream in(path);
      if (!in) throw ReportError(fmt::format("{}: cannot open for reading", path));
      shards.push_back({path, read_json(in, path)});
    }
    const RunReport merged = merge_reports(shards, options.allow_missing);

    auto write = [](const std::string& path, std::string_view flag, auto writer) {
      if (path.empty()) return;
      std::ofstream file(path, std::ios::out | std::ios::trunc);
      if (!file) throw ReportError(fmt::format("{} '{}': cannot open for writing", flag, path));
      writer(file);
      file.close();
      if (!file) throw ReportError(fmt::format("{} '{}': writing the report failed", flag, path));
    };
    write(options.output, "OUT", [&](std::ostream& f) { write_json(f, merged); });
    write(options.junit_path, "--junit", [&](std::ostream& f) { write_junit(f, merged); });
    write(options.markdown_path, "--markdown", [&](std::ostream& f) { write_markdown(f, merged); });

    Console console(out, env.stdout_is_tty, env.stdout_is_tty && !env.no_color);
    console.line(fmt::format("Merged {} shard reports of backend {} (seed {}) into {}", shards.size(), merged.run.backend,
                             merged.run.seed, options.output));
    console.summary(merged);
    // The merge step is where a sharded CI run is gated, so it answers like `run` would have.
    return totals(merged).failed > 0 ? kExitFailed : kExitPassed;
  } catch (const ReportError& e) {
    err << "attncheck merge: error: " << e.what() << '\n';
    return kExitUsage;
  }
}

}  // namespace attncheck::cli
