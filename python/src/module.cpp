// attncheck._engine: the C++ engine as a Python extension. Nothing here re-implements the suite:
// a run is run_property for each planned unit, the report is tools/report's RunReport written
// with write_json, expectations are expectations.h's, the reference is reference_attention and
// verification is golden.h's verify_toy_case / verify_fixture. The Python package (python/attncheck)
// only converts arguments and results.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <unistd.h>

#include "attncheck/engine.h"
#include "attncheck/failure_saver.h"
#include "attncheck/expectations.h"
#include "attncheck/fixture.h"
#include "attncheck/golden.h"
#include "attncheck/reference.h"
#include "attncheck/varlen.h"
#include "attncheck/report.h"
#include "attncheck/shard.h"
#include "attncheck/toy_case.h"
#include "module_types.h"
#include "python_backend.h"

#ifndef ATTNCHECK_VERSION
#error "ATTNCHECK_VERSION must be defined by the build"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace attncheck::python {
namespace {

// --- DLPack export ----------------------------------------------------------------------------------
// The DLPack 1.0 versioned struct (dlpack.h >= 1.0). The installed dlpack.h may be older, so it
// is declared here from the specification; its DLTensor member is the same struct in both.
struct DLPackVersionV1 {
  std::uint32_t major, minor;
};
struct DLManagedTensorVersionedV1 {
  DLPackVersionV1 version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersionedV1* self);
  std::uint64_t flags;
  DLTensor dl_tensor;
};
constexpr std::uint64_t kDLPackFlagReadOnly = 1ULL << 0;

struct VersionedExport {
  DLManagedTensorVersionedV1 managed{};
  std::array<std::int64_t, 4> shape{}, strides{};
};
struct LegacyExport {
  DLManagedTensor managed{};
  std::array<std::int64_t, 4> shape{}, strides{};
};

// A capsule of the suite's buffer: the deleter frees the descriptor only, never the data, which
// the suite owns (so the capsule, and any array made from it, must not outlive the call).
nb::object export_dlpack(const CallTensor& t, nb::handle stream, nb::handle max_version, nb::handle dl_device, nb::handle copy) {
  (void)stream;  // host memory: nothing to order (DLPack: stream is None for kDLCPU)
  t.check_alive();
  if (!copy.is_none() && nb::cast<bool>(copy))
    throw nb::buffer_error("the suite's tensors are exported without copying (copy=True is not supported)");
  if (!dl_device.is_none()) {
    const auto device = nb::cast<std::pair<int, int>>(dl_device);
    if (device.first != t.tensor.device.device_type || device.second != t.tensor.device.device_id)
      throw nb::buffer_error("the suite's tensors live in host memory (kDLCPU); no other device is offered");
  }
  const bool versioned = !max_version.is_none() && nb::cast<std::pair<int, int>>(max_version).first >= 1;
  if (versioned) {
    auto* e = new VersionedExport;
    e->shape = t.shape;
    e->strides = t.strides;
    e->managed.version = {1, 0};
    e->managed.manager_ctx = e;
    e->managed.deleter = [](DLManagedTensorVersionedV1* self) { delete static_cast<VersionedExport*>(self->manager_ctx); };
    e->managed.flags = t.writable ? 0 : kDLPackFlagReadOnly;
    e->managed.dl_tensor = t.tensor;
    e->managed.dl_tensor.shape = e->shape.data();
    e->managed.dl_tensor.strides = e->strides.data();
    PyObject* capsule = PyCapsule_New(&e->managed, "dltensor_versioned", [](PyObject* self) {
      if (PyCapsule_IsValid(self, "dltensor_versioned")) {  // never consumed: ours to free
        auto* m = static_cast<DLManagedTensorVersionedV1*>(PyCapsule_GetPointer(self, "dltensor_versioned"));
        if (m->deleter) m->deleter(m);
      }
    });
    if (capsule == nullptr) {
      delete e;
      throw nb::python_error();
    }
    return nb::steal(capsule);
  }
  auto* e = new LegacyExport;
  e->shape = t.shape;
  e->strides = t.strides;
  e->managed.manager_ctx = e;
  e->managed.deleter = [](DLManagedTensor* self) { delete static_cast<LegacyExport*>(self->manager_ctx); };
  e->managed.dl_tensor = t.tensor;
  e->managed.dl_tensor.shape = e->shape.data();
  e->managed.dl_tensor.strides = e->strides.data();
  PyObject* capsule = PyCapsule_New(&e->managed, "dltensor", [](PyObject* self) {
    if (PyCapsule_IsValid(self, "dltensor")) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(self, "dltensor"));
      if (m->deleter) m->deleter(m);
    }
  });
  if (capsule == nullptr) {
    delete e;
    throw nb::python_error();
  }
  return nb::steal(capsule);
}

nb::tuple int_tuple(const std::int64_t* values, int n) {
  nb::list list;
  for (int i = 0; i < n; ++i) list.append(values[i]);
  return nb::tuple(list);
}

// --- arguments ----------------------------------------------------------------------------------------

DType dtype_argument(const std::string& name, const char* what) {
  const auto dtype = parse_dtype(name);
  if (!dtype) throw nb::value_error(fmt::format("{}: '{}' is not a dtype (use f32, f16, bf16 or f64)", what, name).c_str());
  return *dtype;
}

std::optional<DType> optional_dtype(const std::optional<std::string>& name, const char* what) {
  if (!name) return std::nullopt;
  return dtype_argument(*name, what);
}

std::optional<std::string> optional_name(const std::optional<DType>& dtype) {
  if (!dtype) return std::nullopt;
  return std::string(dtype_name(*dtype));
}

// --- the plug-in wrapper ---------------------------------------------------------------------------

// A C plug-in (or a built-in backend) seen from Python with the backend protocol, so that the same
// kernel can be run through the Python path and through the CLI and compared bit for bit.
class Plugin {
 public:
  explicit Plugin(const std::string& spec) : spec_(spec), backend_(load(spec)) {}

  const std::string& spec() const { return spec_; }
  std::string name() const { return std::string(backend_.name()); }
  std::string description() const { return std::string(backend_.description()); }
  bool has_problem_profiles() const { return backend_.has_problem_profiles(); }
  bool has_layer() const { return backend_.has_layer(); }

  std::optional<NumericsProfile> profile(const std::string& dtype) const {
    return backend_.profile(dtype_argument(dtype, "profile"));
  }
  std::optional<NumericsProfile> problem_profile(const Problem& problem, const std::string& dtype) const {
    return backend_.profile(problem, dtype_argument(dtype, "problem_profile"));
  }
  std::optional<std::string> supports(const Problem& problem, const std::string& dtype) const {
    return backend_.unsupported_reason(problem, dtype_argument(dtype, "supports"));
  }
  void forward(const Problem&, const AttentionTensorSet& tensors) {
    if (tensors.abi_tensors == nullptr) throw nb::value_error("forward: the tensors' call has already returned");
    attncheck_backend* table = backend_.table();
    attncheck_status status;
    {
      nb::gil_scoped_release release;
      status = table->forward(table, &tensors.abi_problem, tensors.abi_tensors);
    }
    raise_status(status, table);
  }
  void forward_layer(const LayerProblem&, const LayerTensorSet& tensors) {
    if (tensors.abi_tensors == nullptr) throw nb::value_error("forward_layer: the tensors' call has already returned");
    attncheck_backend* table = backend_.table();
    if (table->forward_layer == nullptr) throw nb::value_error("this backend has no forward_layer");
    attncheck_status status;
    {
      nb::gil_scoped_release release;
      status = table->forward_layer(table, &tensors.abi_problem, tensors.abi_tensors);
    }
    raise_status(status, table);
  }

 private:
  static Backend load(const std::string& spec) {
    try {
      return open_backend(spec);
    } catch (const LoadError& e) {
      throw nb::value_error(e.what());
    }
  }
  // The plug-in's status as the exception the bridge maps back to the same status.
  static void raise_status(attncheck_status status, const attncheck_backend* table) {
    if (status == kAttncheckOk) return;
    const char* message = table->last_error(table);
    PyObject* type = status == kAttncheckNotSupported     ? unsupported_error
                     : status == kAttncheckInvalidProblem ? invalid_problem_error
                                                          : PyExc_RuntimeError;
    PyErr_SetString(type, message != nullptr ? message : "(no message)");
    throw nb::python_error();
  }

  std::string spec_;
  Backend backend_;
};

// --- running ------------------------------------------------------------------------------------------

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

struct RunArguments {
  std::string profile = "quick";
  std::optional<int> cases;
  std::optional<std::string> size_class;
  std::string property_regex;
  std::string problem_regex;
  std::vector<std::string> dtypes = {"f32", "f16", "bf16"};
  std::uint64_t seed = 0;
  std::string reproduce;
  std::optional<double> accuracy_factor;
  std::string expect_path;
  std::string backend_spec;
  std::string save_failures_dir;  ///< --save-failures
  std::string pinned_case;        ///< --case
};

// The run of `attncheck run` (tools/attncheck/run_command.cpp) for an open backend: the same
// settings, the same engine call per unit, the same report and expectation check. Returns the
// JSON report and, with an expectation file, the check's outcome.
nb::dict run_units(Backend& backend, const RunArguments& a) {
  const auto profile = find_suite_profile(a.profile);
  if (!profile) throw nb::value_error(fmt::format("profile '{}': not a profile (quick, standard, exhaustive)", a.profile).c_str());
  if (a.cases && *a.cases < 1) throw nb::value_error(fmt::format("cases={}: must be at least 1", *a.cases).c_str());
  std::vector<std::string> dtypes;
  for (const std::string& d : a.dtypes) {
    const std::string name(dtype_name(dtype_argument(d, "dtypes")));
    if (name == "f64") throw nb::value_error("dtypes: f64 is not an input dtype of the suite (use f32, f16, bf16)");
    if (std::find(dtypes.begin(), dtypes.end(), name) != dtypes.end())
      throw nb::value_error(fmt::format("dtypes: {} is listed twice", name).c_str());
    dtypes.push_back(name);
  }
  std::vector<std::string> names;
  for (const PropertyDef& p : all_properties()) names.push_back(p.name);
  std::vector<PlannedUnit> plan;
  try {
    plan = plan_units(names, a.property_regex, dtypes, [](const std::string& property, const std::string& dtype) {
    for (const PropertyDef& def : all_properties())
      if (def.name == property) return runs_on(def, *parse_dtype(dtype));
    return true;
  });
  } catch (const std::exception& e) {
    throw nb::value_error(fmt::format("properties '{}': {}", a.property_regex, e.what()).c_str());
  }
  if (plan.empty())
    throw nb::value_error(
        fmt::format("properties '{}' match none of the {} properties (attncheck.properties() lists them)", a.property_regex, names.size())
            .c_str());
  if (!a.reproduce.empty())
    if (auto why = reproduce_string_problem(a.reproduce)) throw nb::value_error(fmt::format("reproduce: {}", *why).c_str());
  std::optional<SizeMix> size_mix;
  if (a.size_class) {
    size_mix = size_mix_for_class(*a.size_class);
    if (!size_mix) throw nb::value_error(fmt::format("size_class '{}': use small, medium, long or all", *a.size_class).c_str());
  }

  RunSettings settings;
  settings.cases = a.cases.value_or(profile->cases);
  settings.max_size = profile->max_size;
  settings.sizes = size_mix.value_or(profile->sizes);
  settings.seed = a.seed;
  settings.reproduce = a.reproduce;
  settings.accuracy_factor = a.accuracy_factor;
  if (!a.problem_regex.empty()) {
    std::shared_ptr<const std::regex> filter;
    try {
      filter = std::make_shared<const std::regex>(a.problem_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw nb::value_error(fmt::format("problem '{}': not a valid regular expression ({})", a.problem_regex, e.what()).c_str());
    }
    settings.problem_filter = [filter](const std::string& description) { return std::regex_search(description, *filter); };
  }
  if (!a.pinned_case.empty()) {
    if (!a.reproduce.empty()) throw nb::value_error("case and reproduce: give one of them, not both");
    try {
      settings.pinned_case = parse_case(a.pinned_case);
      settings.pinned_case->problem.validate();
    } catch (const std::exception& e) {
      throw nb::value_error(fmt::format("case '{}': {}", a.pinned_case, e.what()).c_str());
    }
  }
  std::optional<FailureSaver> saver;
  if (!a.save_failures_dir.empty()) {
    try {
      saver.emplace(a.save_failures_dir);
    } catch (const FixtureError& e) {
      throw nb::value_error(fmt::format("save_failures {}", e.what()).c_str());
    }
  }
  std::vector<std::string> saved;
  // In-process always: the engine's isolation re-opens the backend by name or path in a forked
  // child, which a Python object cannot be (python/README.md, "Isolation").
  settings.isolate = backend.origin() != "built-in" && backend.origin() != "python";

  std::optional<Expectations> expectations;
  if (!a.expect_path.empty()) {
    std::ifstream file(a.expect_path);
    if (!file) throw nb::value_error(fmt::format("expect '{}': cannot open ({})", a.expect_path, std::strerror(errno)).c_str());
    try {
      expectations = read_expectations(file, a.expect_path, names);
    } catch (const ReportError& e) {
      throw nb::value_error(fmt::format("expect: {}", e.what()).c_str());
    }
    if (!expectations->backend.empty() && expectations->backend != backend.name())
      throw nb::value_error(fmt::format("expect '{}' is for backend {}, but this backend is {}", a.expect_path,
                                        expectations->backend, backend.name())
                                .c_str());
  }

  RunReport report;
  RunMetadata& run = report.run;
  run.attncheck_version = ATTNCHECK_VERSION;
  run.backend = std::string(backend.name());
  run.backend_spec = a.backend_spec;
  run.backend_origin = backend.origin();
  run.profile = profile->name;
  run.cases = settings.cases;
  run.max_size = settings.max_size;
  run.seed = a.seed;
  run.property_filter = a.property_regex;
  run.problem_filter = a.problem_regex;
  run.dtypes = dtypes;
  run.reproduce = a.reproduce;
  run.accuracy_factor = a.accuracy_factor;
  run.total_units = plan.size();
  run.started_at = utc_now();
  run.hostname = host_name();

  {
    nb::gil_scoped_release release;  // the backend's callbacks take it back
    for (const std::string& name : dtypes) {
      std::optional<NumericsProfile> declared;
      try {
        declared = backend.profile(*parse_dtype(name));
      } catch (const std::exception&) {
        continue;  // get_profile's failure is reported by every unit of that dtype
      }
      if (declared)
        for (const std::string& convention : declared->declared_conventions())
          run.declared_conventions.push_back(fmt::format("{}: {}", name, convention));
    }
    const auto start = std::chrono::steady_clock::now();
    for (const PlannedUnit& planned : plan) {
      const DType dtype = *parse_dtype(planned.dtype);
      PropertyOutcome outcome;
      try {
        outcome = run_property(find_property(planned.property), backend, dtype, settings);
      } catch (const std::exception& e) {
        outcome.property = planned.property;
        outcome.backend = run.backend;
        outcome.dtype = dtype;
        outcome.status = OutcomeStatus::Failed;
        outcome.message = fmt::format("the engine threw: {}", e.what());
        outcome.seed = a.seed;
      }
      if (saver)
        for (std::string& line : saver->save(outcome, a.backend_spec)) saved.push_back(std::move(line));
      UnitResult unit = to_unit_result(outcome, planned.index, a.backend_spec);
      if (!unit.reproduce_command.empty() && !a.problem_regex.empty())
        unit.reproduce_command += fmt::format(" --problem '{}'", a.problem_regex);
      report.units.push_back(std::move(unit));
    }
    run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  std::ostringstream json;
  write_json(json, report);
  nb::dict result;
  result["report_json"] = json.str();
  nb::list saved_lines;
  for (const std::string& line : saved) saved_lines.append(line);
  result["saved"] = saved_lines;
  if (saver && !saver->errors().empty())
    throw nb::value_error(fmt::format("save_failures '{}': {} fixture(s) could not be written: {}", a.save_failures_dir,
                                      saver->errors().size(), fmt::join(saver->errors(), "; "))
                              .c_str());
  if (expectations) {
    const ExpectationCheck check = check_expectations(*expectations, report);
    nb::dict outcome;
    outcome["file"] = a.expect_path;
    outcome["ok"] = check.ok();
    outcome["units"] = check.units;
    outcome["expected_failures"] = check.expected_failures;
    outcome["expected_skips"] = check.expected_skips;
    nb::list mismatches;
    for (const ExpectationMismatch& m : check.mismatches) mismatches.append(describe(m));
    outcome["mismatches"] = mismatches;
    result["expectations"] = outcome;
  } else {
    result["expectations"] = nb::none();
  }
  return result;
}

Backend python_backend(nb::object object, const std::string& name, const std::string& description) {
  attncheck_backend* table = make_python_backend_table(std::move(object), name, description);
  if (table == nullptr) throw std::runtime_error("cannot build the backend table");
  return Backend(table, "python");
}

nb::dict run_python(nb::object object, const std::string& name, const std::string& description, const RunArguments& a) {
  Backend backend = python_backend(std::move(object), name, description);
  nb::dict result = run_units(backend, a);
  {
    nb::gil_scoped_release release;  // ~Backend destroys the table, which takes the GIL itself
    Backend gone = std::move(backend);
  }
  return result;
}

nb::dict run_spec(const std::string& spec, const RunArguments& a) {
  Backend backend = [&] {
    try {
      return open_backend(spec);
    } catch (const LoadError& e) {
      throw nb::value_error(e.what());
    }
  }();
  return run_units(backend, a);
}

// --- verification -------------------------------------------------------------------------------------

nb::list verify_backend(Backend& backend, const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const std::string& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<fs::path> found;
      for (const auto& entry : fs::directory_iterator(p))
        if (entry.path().extension() == ".json" || entry.path().extension() == ".safetensors") found.push_back(entry.path());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(p)) {
      files.emplace_back(p);
    } else {
      throw nb::value_error(fmt::format("{}: no such file or directory", p).c_str());
    }
  }
  struct Row {
    std::string label, status, message;
  };
  std::vector<Row> rows;
  auto status_name = [](FixtureStatus s) {
    return s == FixtureStatus::Passed ? "passed" : s == FixtureStatus::Failed ? "failed" : "skipped";
  };
  {
    nb::gil_scoped_release release;
    for (const fs::path& path : files) {
      try {
        if (path.extension() == ".json") {
          const ToyCase toy = read_toy_case(path);
          for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
            const FixtureVerdict v = verify_toy_case(backend, toy, dtype);
            rows.push_back({fmt::format("{} ({})", path.filename().string(), dtype_name(dtype)), status_name(v.status), v.message});
          }
        } else {
          const FixtureVerdict v = verify_fixture(backend, read_fixture(path));
          rows.push_back({path.filename().string(), status_name(v.status), v.message});
        }
      } catch (const std::exception& e) {
        rows.push_back({path.filename().string(), "error", e.what()});
      }
    }
  }
  nb::list result;
  for (const Row& r : rows) result.append(nb::make_tuple(r.label, r.status, r.message));
  return result;
}

// --- the reference ----------------------------------------------------------------------------------

using DoubleArray = nb::ndarray<const double, nb::device::cpu>;

View4<const double> view_of(const DoubleArray& array, const char* name) {
  if (array.ndim() != 4) throw nb::value_error(fmt::format("{}: expected 4 dimensions, got {}", name, array.ndim()).c_str());
  View4<const double> view;
  view.data = array.data();
  for (int d = 0; d < 4; ++d) {
    view.shape[d] = static_cast<std::int64_t>(array.shape(d));
    view.strides[d] = static_cast<std::int64_t>(array.stride(d));
  }
  return view;
}

// A packed [T, H, D] array as a [1, T, H, D] view (varlen.h's packed form).
View4<const double> packed_view_of(const DoubleArray& array, const char* name) {
  if (array.ndim() != 3)
    throw nb::value_error(fmt::format("{}: a packed batch's tensor is [tokens, heads, dim], 3 dimensions, got {}", name,
                                      array.ndim()).c_str());
  View4<const double> view;
  view.data = array.data();
  view.shape = {1, static_cast<std::int64_t>(array.shape(0)), static_cast<std::int64_t>(array.shape(1)),
                static_cast<std::int64_t>(array.shape(2))};
  view.strides = {0, static_cast<std::int64_t>(array.stride(0)), static_cast<std::int64_t>(array.stride(1)),
                  static_cast<std::int64_t>(array.stride(2))};
  return view;
}

// The counts of cu_seqlens offsets ([B + 1], from 0, non-decreasing), checked against the problem.
std::vector<std::int64_t> counts_of(const Problem& problem, const std::optional<std::vector<std::int64_t>>& offsets,
                                    const char* name, std::int64_t tokens) {
  if (!offsets) throw nb::value_error(fmt::format("{}: the problem is a packed batch (varlen), but none is given", name).c_str());
  const std::vector<std::int64_t>& cu = *offsets;
  if (static_cast<std::int64_t>(cu.size()) != problem.batch + 1 || cu.front() != 0)
    throw nb::value_error(fmt::format("{}: expected B + 1 = {} offsets starting at 0, got {}", name, problem.batch + 1,
                                      cu.size()).c_str());
  std::vector<std::int64_t> counts;
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    if (cu[b + 1] < cu[b]) throw nb::value_error(fmt::format("{}: offset {} is below offset {}", name, b + 1, b).c_str());
    counts.push_back(cu[b + 1] - cu[b]);
  }
  if (cu.back() != tokens)
    throw nb::value_error(fmt::format("{}: the last offset is {}, but the packed tensor holds {} tokens", name, cu.back(),
                                      tokens).c_str());
  return counts;
}

nb::ndarray<nb::numpy, double> to_numpy(HostTensor tensor, int ndim_from) {
  auto* owned = new std::vector<double>(std::move(tensor.values));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<double>*>(p); });
  std::vector<size_t> shape;
  for (int d = ndim_from; d < 4; ++d) shape.push_back(static_cast<size_t>(tensor.shape[d]));
  return nb::ndarray<nb::numpy, double>(owned->data(), shape.size(), shape.data(), owner);
}

nb::tuple reference(const Problem& problem, const DoubleArray& q, const DoubleArray& k, const DoubleArray& v,
                    std::optional<DoubleArray> mask, std::optional<std::vector<std::int64_t>> key_lengths,
                    std::optional<std::vector<double>> alibi_slopes, std::optional<std::vector<double>> sinks,
                    std::optional<std::vector<std::int32_t>> block_table,
                    std::optional<std::vector<std::int64_t>> cu_seqlens_q, std::optional<std::vector<std::int64_t>> cu_seqlens_k,
                    std::optional<std::vector<double>> q_descale, std::optional<std::vector<double>> k_descale,
                    std::optional<std::vector<double>> v_descale) {
  const bool all_descales = q_descale && k_descale && v_descale, any_descale = q_descale || k_descale || v_descale;
  if (problem.has_descales() && !all_descales)
    throw nb::value_error("q_descale, k_descale, v_descale: the problem has descales; pass all three");
  if (!problem.has_descales() && any_descale) throw nb::value_error("descales: given, but the problem has none (descale=none)");
  if (problem.varlen) {
    // Packed q [Tq, Hq, Dk], k and v [Tk, Hkv, D] with their offsets (backend.h, ABI 2.5): unpacked
    // into the logical padded problem (varlen.h), and its outputs packed back, out [Tq, Hq, Dv] and
    // lse [Hq, Tq] as FlashAttention's varlen returns them.
    if (key_lengths) throw nb::value_error("key_lengths: a packed batch's key counts are cu_seqlens_k's; pass that instead");
    if (block_table || mask) throw nb::value_error("a packed batch takes no mask and no block table");
    const View4<const double> pq = packed_view_of(q, "q"), pk = packed_view_of(k, "k"), pv = packed_view_of(v, "v");
    if (pk.shape[1] != pv.shape[1]) throw nb::value_error("v: holds another token count than k");
    const std::vector<std::int64_t> queries = counts_of(problem, cu_seqlens_q, "cu_seqlens_q", pq.shape[1]);
    const std::vector<std::int64_t> keys = counts_of(problem, cu_seqlens_k, "cu_seqlens_k", pk.shape[1]);
    const std::vector<double> slopes = alibi_slopes.value_or(std::vector<double>{}), sink_logits = sinks.value_or(std::vector<double>{});
    AttentionResult result;
    HostTensor out, lse;
    try {
      nb::gil_scoped_release release;
      problem.validate();
      const HostTensor lq = unpack_sequences(problem, pq, queries, PackedRows::Queries, problem.q_len, 0.0);
      const HostTensor lk = unpack_sequences(problem, pk, keys, PackedRows::Keys, problem.k_len, 0.0);
      const HostTensor lv = unpack_sequences(problem, pv, keys, PackedRows::Keys, problem.k_len, 0.0);
      AttentionInputs inputs{lq.view(), lk.view(), lv.view(), {}, keys, slopes, sink_logits, {}, queries};
      result = reference_attention(problem, inputs);
      out = pack_sequences(problem, result.out.view(), queries, PackedRows::Queries);
      HostTensor rows = std::move(result.lse);  // [1, B, Hq, Lq] read as [B, Hq, Lq, 1]
      rows.shape = {problem.batch, problem.q_heads, problem.q_len, 1};
      const HostTensor packed = pack_sequences(problem, rows.view(), queries, PackedRows::Queries);  // [1, Tq, Hq, 1]
      lse = HostTensor({1, 1, problem.q_heads, packed.shape[1]});
      for (std::int64_t t = 0; t < packed.shape[1]; ++t)
        for (std::int64_t h = 0; h < problem.q_heads; ++h) lse(0, 0, h, t) = packed(0, t, h, 0);
    } catch (const ProblemError& e) {
      throw nb::value_error(e.what());
    }
    return nb::make_tuple(to_numpy(std::move(out), 1), to_numpy(std::move(lse), 2));
  }
  if (cu_seqlens_q || cu_seqlens_k) throw nb::value_error("cu_seqlens: given, but the problem is not a packed batch (varlen)");
  AttentionInputs inputs;
  inputs.q = view_of(q, "q");
  const std::vector<std::int32_t> table = block_table.value_or(std::vector<std::int32_t>{});
  if (problem.is_paged()) {
    // k and v are the page pools (problem.h); the reference gathers them through the table.
    if (!block_table) throw nb::value_error("block_table: the problem is paged, but no block table is given");
    inputs.paged = {view_of(k, "k"), view_of(v, "v"), table};
  } else {
    if (block_table) throw nb::value_error("block_table: given, but the problem's K and V are contiguous");
    inputs.k = view_of(k, "k");
    inputs.v = view_of(v, "v");
  }
  if (mask) inputs.mask = view_of(*mask, "mask");
  std::vector<std::int64_t> lengths = key_lengths.value_or(std::vector<std::int64_t>{});
  inputs.key_lengths = lengths;
  const std::vector<double> slopes = alibi_slopes.value_or(std::vector<double>{}), sink_logits = sinks.value_or(std::vector<double>{});
  inputs.alibi_slopes = slopes;  // [Hq] or [B, Hq] flattened row-major
  inputs.sinks = sink_logits;
  const std::vector<double> dq = q_descale.value_or(std::vector<double>{}), dk = k_descale.value_or(std::vector<double>{}),
                            dv = v_descale.value_or(std::vector<double>{});
  inputs.q_descale = dq;  // [1] or [B, Hkv] flattened row-major; q, k, v hold the stored values
  inputs.k_descale = dk;
  inputs.v_descale = dv;
  AttentionResult result;
  try {
    nb::gil_scoped_release release;
    problem.validate();
    result = reference_attention(problem, inputs);
  } catch (const ProblemError& e) {
    throw nb::value_error(e.what());
  }
  return nb::make_tuple(to_numpy(std::move(result.out), 0), to_numpy(std::move(result.lse), 1));
}

// --- fixtures -----------------------------------------------------------------------------------------

nb::dict fixture_to_python(const Fixture& f) {
  nb::dict d;
  d["kind"] = std::string(fixture_kind_name(f.kind));
  d["problem"] = f.problem;
  d["layer"] = f.layer;
  d["input_dtype"] = std::string(dtype_name(f.input_dtype));
  d["provenance"] = nb::make_tuple(f.provenance.generator, f.provenance.seed, f.provenance.attncheck_version);
  d["metadata"] = f.metadata;
  nb::dict tensors;
  for (const auto& [name, t] : f.tensors)
    tensors[name.c_str()] = nb::make_tuple(std::string(storage_type_name(t.type)), t.shape,
                                           nb::bytes(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size()));
  d["tensors"] = tensors;
  d["softmax_precision"] = optional_name(f.softmax_precision);
  d["empty_rows"] = std::string(empty_rows_name(f.empty_rows));
  return d;
}

Fixture fixture_from_python(const nb::dict& d) {
  Fixture f;
  auto get = [&](const char* key) -> nb::handle {
    if (!d.contains(key)) throw nb::value_error(fmt::format("fixture: '{}' is missing", key).c_str());
    return d[key];
  };
  const auto kind = parse_fixture_kind(nb::cast<std::string>(get("kind")));
  if (!kind) throw nb::value_error("fixture: 'kind' must be attention, layer or decode");
  f.kind = *kind;
  f.problem = nb::cast<Problem>(get("problem"));
  f.layer = nb::cast<std::string>(get("layer"));
  f.input_dtype = dtype_argument(nb::cast<std::string>(get("input_dtype")), "fixture input_dtype");
  const auto provenance = nb::cast<std::tuple<std::string, std::uint64_t, std::string>>(get("provenance"));
  f.provenance = {std::get<0>(provenance), std::get<1>(provenance), std::get<2>(provenance)};
  f.metadata = nb::cast<std::map<std::string, std::string>>(get("metadata"));
  for (auto [key, value] : nb::cast<nb::dict>(get("tensors"))) {
    const auto [type_name, shape, bytes] = nb::cast<std::tuple<std::string, std::vector<std::int64_t>, nb::bytes>>(value);
    const auto type = parse_storage_type(type_name);
    if (!type) throw nb::value_error(fmt::format("fixture tensor '{}': unknown storage type '{}'", nb::cast<std::string>(key), type_name).c_str());
    FixtureTensor t;
    t.type = *type;
    t.shape = shape;
    const auto* begin = reinterpret_cast<const std::byte*>(bytes.c_str());
    t.bytes.assign(begin, begin + bytes.size());
    f.tensors[nb::cast<std::string>(key)] = std::move(t);
  }
  if (d.contains("softmax_precision") && !d["softmax_precision"].is_none())
    f.softmax_precision = dtype_argument(nb::cast<std::string>(d["softmax_precision"]), "fixture softmax_precision");
  if (d.contains("empty_rows")) {
    const auto rows = parse_empty_rows(nb::cast<std::string>(d["empty_rows"]));
    if (!rows) throw nb::value_error("fixture: 'empty_rows' must be zero or nan");
    f.empty_rows = *rows;
  }
  return f;
}

// --- bindings -----------------------------------------------------------------------------------------

Problem make_problem(std::int64_t batch, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t q_len, std::int64_t k_len,
                     std::int64_t qk_dim, std::int64_t v_dim, std::optional<double> scale, double softcap, bool causal,
                     const std::string& alignment, std::int64_t diagonal_offset, std::int64_t window_left,
                     std::int64_t window_right, const std::string& mask, std::int64_t mask_batch, std::int64_t mask_heads,
                     std::int64_t mask_q_len, std::int64_t mask_k_len, bool has_key_lengths, const std::string& alibi,
                     bool sinks, const std::string& kv_storage, std::int64_t page_size, bool varlen,
                     const std::string& descale) {
  Problem p = Problem::of_shape(batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim);
  p.scale = scale;
  p.softcap = softcap;
  p.causal = causal;
  const auto a = parse_alignment(alignment);
  if (!a) throw nb::value_error(fmt::format("alignment '{}': use top-left, bottom-right, offset or key-lengths", alignment).c_str());
  p.alignment = *a;
  p.diagonal_offset = diagonal_offset;
  p.window_left = window_left;
  p.window_right = window_right;
  const auto m = parse_mask_kind(mask);
  if (!m) throw nb::value_error(fmt::format("mask '{}': use none, bool or bias", mask).c_str());
  p.mask = *m;
  p.mask_batch = mask_batch;
  p.mask_heads = mask_heads;
  p.mask_q_len = mask_q_len;
  p.mask_k_len = mask_k_len;
  p.has_key_lengths = has_key_lengths;
  const auto slopes = parse_alibi_slopes(alibi);
  if (!slopes) throw nb::value_error(fmt::format("alibi '{}': use none, head or batch-head", alibi).c_str());
  p.alibi = *slopes;
  p.sinks = sinks;
  const auto storage = parse_kv_storage(kv_storage);
  if (!storage) throw nb::value_error(fmt::format("kv_storage '{}': use contiguous, paged or paged-head", kv_storage).c_str());
  p.kv_storage = *storage;
  p.page_size = page_size;
  p.varlen = varlen;
  const auto descales = parse_descale(descale);
  if (!descales) throw nb::value_error(fmt::format("descale '{}': use none, tensor or head", descale).c_str());
  p.descale = *descales;
  try {
    p.validate();
  } catch (const ProblemError& e) {
    throw nb::value_error(e.what());
  }
  return p;
}

void bind_problem(nb::module_& m) {
  nb::class_<Problem>(m, "Problem", "One attention call (reference/include/attncheck/problem.h); read-only.")
      .def(nb::new_([](std::int64_t batch, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t q_len, std::int64_t k_len,
                       std::int64_t qk_dim, std::int64_t v_dim, std::optional<double> scale, double softcap, bool causal,
                       const std::string& alignment, std::int64_t diagonal_offset, std::int64_t window_left,
                       std::int64_t window_right, const std::string& mask, std::int64_t mask_batch, std::int64_t mask_heads,
                       std::int64_t mask_q_len, std::int64_t mask_k_len, bool has_key_lengths, const std::string& alibi,
                       bool sinks, const std::string& kv_storage, std::int64_t page_size, bool varlen,
                       const std::string& descale) {
             return make_problem(batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim, scale, softcap, causal, alignment,
                                 diagonal_offset, window_left, window_right, mask, mask_batch, mask_heads, mask_q_len,
                                 mask_k_len, has_key_lengths, alibi, sinks, kv_storage, page_size, varlen, descale);
           }),
           nb::kw_only(), "batch"_a = 1, "q_heads"_a = 1, "kv_heads"_a = 1, "q_len"_a = 1, "k_len"_a = 1, "qk_dim"_a = 1,
           "v_dim"_a = 1, "scale"_a = nb::none(), "softcap"_a = 0.0, "causal"_a = false, "alignment"_a = "top-left",
           "diagonal_offset"_a = 0, "window_left"_a = -1, "window_right"_a = -1, "mask"_a = "none", "mask_batch"_a = 1,
           "mask_heads"_a = 1, "mask_q_len"_a = 1, "mask_k_len"_a = 1, "has_key_lengths"_a = false, "alibi"_a = "none",
           "sinks"_a = false, "kv_storage"_a = "contiguous", "page_size"_a = 0, "varlen"_a = false, "descale"_a = "none")
      .def_static(
          "parse",
          [](const std::string& text) {
            try {
              return parse_problem(text);
            } catch (const ProblemError& e) {
              throw nb::value_error(e.what());
            }
          },
          "text"_a, "Parses Problem.describe()'s text (and a failure's shrunk case line).")
      .def_ro("batch", &Problem::batch)
      .def_ro("q_heads", &Problem::q_heads)
      .def_ro("kv_heads", &Problem::kv_heads)
      .def_ro("q_len", &Problem::q_len)
      .def_ro("k_len", &Problem::k_len)
      .def_ro("qk_dim", &Problem::qk_dim)
      .def_ro("v_dim", &Problem::v_dim)
      .def_prop_ro("scale", &Problem::effective_scale, "The scale applied (1/sqrt(Dk) when the problem leaves it unset).")
      .def_ro("softcap", &Problem::softcap)
      .def_ro("causal", &Problem::causal)
      .def_prop_ro("alignment", [](const Problem& p) { return std::string(alignment_name(p.alignment)); })
      .def_ro("diagonal_offset", &Problem::diagonal_offset)
      .def_ro("window_left", &Problem::window_left)
      .def_ro("window_right", &Problem::window_right)
      .def_prop_ro("mask", [](const Problem& p) { return std::string(mask_kind_name(p.mask)); })
      .def_ro("mask_batch", &Problem::mask_batch)
      .def_ro("mask_heads", &Problem::mask_heads)
      .def_ro("mask_q_len", &Problem::mask_q_len)
      .def_ro("mask_k_len", &Problem::mask_k_len)
      .def_ro("has_key_lengths", &Problem::has_key_lengths)
      .def_prop_ro("alibi", [](const Problem& p) { return std::string(alibi_slopes_name(p.alibi)); },
                   "ALiBi slopes: 'none', 'head' ([Hq]) or 'batch-head' ([B, Hq]); problem.h")
      .def_ro("sinks", &Problem::sinks, "One sink logit per query head, added to the softmax denominator; problem.h")
      .def_prop_ro("kv_storage", [](const Problem& p) { return std::string(kv_storage_name(p.kv_storage)); },
                   "K and V storage: 'contiguous', 'paged' ([pages, page, Hkv, D]) or 'paged-head' ([pages, Hkv, page, D])")
      .def_ro("page_size", &Problem::page_size, "Keys per page of a paged cache (0 when contiguous)")
      .def_ro("varlen", &Problem::varlen,
              "A packed variable-length batch: q_len and k_len are the longest sequence's, has_key_lengths is set; problem.h")
      .def_prop_ro("descale", [](const Problem& p) { return std::string(descale_name(p.descale)); },
                   "Descales of fp8 Q, K, V: 'none', 'tensor' ([1] each) or 'head' ([B, Hkv] each); problem.h")
      .def("effective_scale", &Problem::effective_scale)
      .def("group_size", &Problem::group_size)
      .def("kv_head_of", &Problem::kv_head_of, "h"_a)
      .def("has_window", &Problem::has_window)
      .def("describe", &Problem::describe)
      .def("__repr__", [](const Problem& p) { return fmt::format("attncheck.Problem.parse('{}')", p.describe()); })
      .def("__eq__", [](const Problem& a, const Problem& b) { return a == b; });

  nb::class_<LayerProblem>(m, "LayerProblem", "The multi-head attention layer (reference/include/attncheck/layer.h); read-only.")
      .def_ro("attention", &LayerProblem::attention)
      .def_ro("model_dim", &LayerProblem::model_dim)
      .def_ro("self_attention", &LayerProblem::self_attention)
      .def_ro("has_qkv_bias", &LayerProblem::has_qkv_bias)
      .def_ro("has_out_bias", &LayerProblem::has_out_bias)
      .def("describe", &LayerProblem::describe);
}

// Every NumericsProfile field as a read-write attribute; dtypes as "f32", "f16", "bf16", "f64",
// optional ones as None.
void bind_profile(nb::module_& m) {
  auto dtype_field = [](DType NumericsProfile::*field) {
    return std::make_pair(
        [field](const NumericsProfile& p) { return std::string(dtype_name(p.*field)); },
        [field](NumericsProfile& p, const std::string& name) { p.*field = dtype_argument(name, "profile dtype"); });
  };
  auto optional_field = [](std::optional<DType> NumericsProfile::*field) {
    return std::make_pair([field](const NumericsProfile& p) { return optional_name(p.*field); },
                          [field](NumericsProfile& p, const std::optional<std::string>& name) {
                            p.*field = optional_dtype(name, "profile dtype");
                          });
  };
  nb::class_<NumericsProfile> cls(m, "Profile",
                                  "A numerics profile (numerics/include/attncheck/numerics_profile.h): how the kernel computes, "
                                  "declared honestly; every tolerance is derived from it.");
  cls.def(nb::init<>());
  auto add_dtype = [&](const char* name, DType NumericsProfile::*field) {
    auto [get, set] = dtype_field(field);
    cls.def_prop_rw(name, get, set);
  };
  auto add_optional = [&](const char* name, std::optional<DType> NumericsProfile::*field) {
    auto [get, set] = optional_field(field);
    cls.def_prop_rw(name, get, set, nb::arg("value").none());
  };
  add_dtype("input", &NumericsProfile::input);
  add_dtype("score", &NumericsProfile::score);
  add_optional("score_accumulator", &NumericsProfile::score_accumulator);
  add_dtype("probability", &NumericsProfile::probability);
  add_dtype("accumulator", &NumericsProfile::accumulator);
  add_dtype("output", &NumericsProfile::output);
  cls.def_prop_rw(
      "accumulation_rounding",
      [](const NumericsProfile& p) { return std::string(p.accumulation_rounding == Rounding::Nearest ? "nearest" : "toward-zero"); },
      [](NumericsProfile& p, const std::string& name) {
        if (name == "nearest")
          p.accumulation_rounding = Rounding::Nearest;
        else if (name == "toward-zero")
          p.accumulation_rounding = Rounding::TowardZero;
        else
          throw nb::value_error(fmt::format("accumulation_rounding '{}': use nearest or toward-zero", name).c_str());
      });
  cls.def_rw("products_per_rounding", &NumericsProfile::products_per_rounding);
  cls.def_rw("softmax_block", &NumericsProfile::softmax_block);
  cls.def_rw("deterministic", &NumericsProfile::deterministic);
  cls.def_prop_rw(
      "empty_row", [](const NumericsProfile& p) { return std::string(empty_row_name(p.empty_row)); },
      [](NumericsProfile& p, const std::string& name) {
        const auto c = parse_empty_row(name);
        if (!c) throw nb::value_error(fmt::format("empty_row '{}': use {}, {} or {}", name, empty_row_name(EmptyRowConvention::Zeros),
                                                  empty_row_name(EmptyRowConvention::NaN), empty_row_name(EmptyRowConvention::MeanOfV))
                                          .c_str());
        p.empty_row = *c;
      });
  cls.def_rw("flushes_subnormals", &NumericsProfile::flushes_subnormals);
  cls.def_rw("accepts_strides", &NumericsProfile::accepts_strides);
  cls.def_rw("writes_lse", &NumericsProfile::writes_lse);
  cls.def_rw("exp_relative_error", &NumericsProfile::exp_relative_error);
  cls.def_rw("tanh_relative_error", &NumericsProfile::tanh_relative_error);
  add_optional("query_rounding", &NumericsProfile::query_rounding);
  add_optional("key_rounding", &NumericsProfile::key_rounding);
  add_optional("value_rounding", &NumericsProfile::value_rounding);
  add_optional("mask_dtype", &NumericsProfile::mask_dtype);
  add_optional("row_sum_accumulator", &NumericsProfile::row_sum_accumulator);
  cls.def_rw("keys_per_partial_sum", &NumericsProfile::keys_per_partial_sum);
  cls.def_rw("kv_splits", &NumericsProfile::kv_splits);
  cls.def_prop_rw(
      "empty_row_lse", [](const NumericsProfile& p) { return std::string(empty_row_lse_name(p.empty_row_lse)); },
      [](NumericsProfile& p, const std::string& name) {
        for (EmptyRowLse c : {EmptyRowLse::NegativeInfinity, EmptyRowLse::Zero, EmptyRowLse::Unspecified})
          if (empty_row_lse_name(c) == name) {
            p.empty_row_lse = c;
            return;
          }
        throw nb::value_error(fmt::format("empty_row_lse '{}': use {}, {} or {}", name, empty_row_lse_name(EmptyRowLse::NegativeInfinity),
                                          empty_row_lse_name(EmptyRowLse::Zero), empty_row_lse_name(EmptyRowLse::Unspecified))
                                  .c_str());
      });
  cls.def_rw("masked_keys_weighted_by_zero", &NumericsProfile::masked_keys_weighted_by_zero);
  cls.def("describe", &NumericsProfile::describe);
  cls.def("declared_conventions", &NumericsProfile::declared_conventions);
  cls.def("__repr__", [](const NumericsProfile& p) { return fmt::format("<attncheck.Profile {}>", p.describe()); });
  cls.def("__eq__", [](const NumericsProfile& a, const NumericsProfile& b) { return a == b; });
  cls.def("copy", [](const NumericsProfile& p) { return p; });
}

void bind_tensors(nb::module_& m) {
  nb::class_<CallTensor>(m, "Tensor",
                         "A tensor of one backend call: the suite's buffer exported through DLPack without a copy. "
                         "It is valid only during the call that received it.")
      .def("__dlpack__", &export_dlpack, nb::kw_only(), "stream"_a = nb::none(), "max_version"_a = nb::none(),
           "dl_device"_a = nb::none(), "copy"_a = nb::none())
      .def("__dlpack_device__",
           [](const CallTensor& t) { return nb::make_tuple(static_cast<int>(t.tensor.device.device_type), t.tensor.device.device_id); })
      .def_ro("name", &CallTensor::name)
      .def_ro("writable", &CallTensor::writable)
      .def_ro("alive", &CallTensor::alive)
      .def_prop_ro("shape", [](const CallTensor& t) { return int_tuple(t.shape.data(), t.tensor.ndim); })
      .def_prop_ro("strides", [](const CallTensor& t) { return int_tuple(t.strides.data(), t.tensor.ndim); },
                   "Strides in elements, as DLPack counts them.")
      .def_prop_ro("dtype", [](const CallTensor& t) { return impl::dtype_string(t.tensor.dtype); })
      .def_prop_ro("itemsize", [](const CallTensor& t) { return t.tensor.dtype.bits / 8; })
      .def_prop_ro("data_ptr", [](const CallTensor& t) {
        t.check_alive();
        return reinterpret_cast<std::uintptr_t>(t.tensor.data);
      })
      .def("__repr__", [](const CallTensor& t) {
        std::string shape;
        for (int d = 0; d < t.tensor.ndim; ++d) shape += (d ? ", " : "") + std::to_string(t.shape[d]);
        return fmt::format("<attncheck.Tensor {} [{}] {}{}>", t.name, shape, impl::dtype_string(t.tensor.dtype),
                           t.alive ? "" : " (expired)");
      });

  nb::class_<AttentionTensorSet>(m, "AttentionTensors", "The tensors of one forward call; None where the problem has none.")
      .def_ro("q", &AttentionTensorSet::q)
      .def_ro("k", &AttentionTensorSet::k)
      .def_ro("v", &AttentionTensorSet::v)
      .def_ro("mask", &AttentionTensorSet::mask)
      .def_ro("key_lengths", &AttentionTensorSet::key_lengths)
      .def_ro("out", &AttentionTensorSet::out)
      .def_ro("lse", &AttentionTensorSet::lse)
      .def_ro("alibi_slopes", &AttentionTensorSet::alibi_slopes, "[Hq] or [B, Hq] float32 (options 'alibi')")
      .def_ro("sinks", &AttentionTensorSet::sinks, "[Hq] float32 (options 'sinks')")
      .def_ro("block_table", &AttentionTensorSet::block_table, "[B, Lk / page] int32 (options 'paged')")
      .def_ro("cu_seqlens_q", &AttentionTensorSet::cu_seqlens_q, "[B + 1] int32 query offsets (options 'varlen')")
      .def_ro("cu_seqlens_k", &AttentionTensorSet::cu_seqlens_k, "[B + 1] int32 key offsets (options 'varlen')")
      .def_ro("q_descale", &AttentionTensorSet::q_descale, "[1] or [B, Hkv] float32 (options 'fp8')")
      .def_ro("k_descale", &AttentionTensorSet::k_descale, "[1] or [B, Hkv] float32 (options 'fp8')")
      .def_ro("v_descale", &AttentionTensorSet::v_descale, "[1] or [B, Hkv] float32 (options 'fp8')");
  nb::class_<LayerTensorSet>(m, "LayerTensors", "The tensors of one forward_layer call; None where the problem has none.")
      .def_ro("x", &LayerTensorSet::x)
      .def_ro("x_kv", &LayerTensorSet::x_kv)
      .def_ro("w_q", &LayerTensorSet::w_q)
      .def_ro("w_k", &LayerTensorSet::w_k)
      .def_ro("w_v", &LayerTensorSet::w_v)
      .def_ro("b_q", &LayerTensorSet::b_q)
      .def_ro("b_k", &LayerTensorSet::b_k)
      .def_ro("b_v", &LayerTensorSet::b_v)
      .def_ro("w_o", &LayerTensorSet::w_o)
      .def_ro("b_o", &LayerTensorSet::b_o)
      .def_ro("mask", &LayerTensorSet::mask)
      .def_ro("key_lengths", &LayerTensorSet::key_lengths)
      .def_ro("out", &LayerTensorSet::out);
}

RunArguments run_arguments(const std::string& profile, std::optional<int> cases, std::optional<std::string> size_class,
                           const std::string& property_regex, const std::string& problem_regex,
                           const std::vector<std::string>& dtypes, std::uint64_t seed, const std::string& reproduce,
                           std::optional<double> accuracy_factor, const std::string& expect_path, const std::string& backend_spec,
                           const std::string& save_failures_dir, const std::string& pinned_case) {
  RunArguments a;
  a.save_failures_dir = save_failures_dir;
  a.pinned_case = pinned_case;
  a.profile = profile;
  a.cases = cases;
  a.size_class = std::move(size_class);
  a.property_regex = property_regex;
  a.problem_regex = problem_regex;
  a.dtypes = dtypes;
  a.seed = seed;
  a.reproduce = reproduce;
  a.accuracy_factor = accuracy_factor;
  a.expect_path = expect_path;
  a.backend_spec = backend_spec;
  return a;
}

}  // namespace
}  // namespace attncheck::python

namespace attncheck::python {

void define_module(nb::module_& m) {
  m.doc() = "attncheck's C++ engine (properties, tolerance model, shrinking, reports) for Python backends";
  m.attr("__version__") = ATTNCHECK_VERSION;
  m.attr("default_seed") = 0x5EED;  // tools/attncheck/commands.h kDefaultSeed: the CLI's default

  unsupported_error = PyErr_NewExceptionWithDoc(
      "attncheck.Unsupported", "Raised by a backend's forward to decline the problem (a skip, like supports()).", PyExc_Exception,
      nullptr);
  invalid_problem_error = PyErr_NewExceptionWithDoc(
      "attncheck.InvalidProblem", "Raised by a backend for tensors inconsistent with the problem (kAttncheckInvalidProblem).",
      PyExc_ValueError, nullptr);
  m.attr("Unsupported") = nb::handle(unsupported_error);
  m.attr("InvalidProblem") = nb::handle(invalid_problem_error);

  bind_problem(m);
  bind_profile(m);
  bind_tensors(m);

  nb::class_<Plugin>(m, "Plugin", "A built-in backend or C plug-in, speaking the Python backend protocol.")
      .def(nb::init<const std::string&>(), "spec"_a)
      .def_prop_ro("spec", &Plugin::spec)
      .def_prop_ro("name", &Plugin::name)
      .def_prop_ro("description", &Plugin::description)
      .def_prop_ro("has_problem_profiles", &Plugin::has_problem_profiles)
      .def_prop_ro("has_layer", &Plugin::has_layer)
      .def("profile", &Plugin::profile, "dtype"_a)
      .def("problem_profile", &Plugin::problem_profile, "problem"_a, "dtype"_a)
      .def("supports", &Plugin::supports, "problem"_a, "dtype"_a)
      .def("forward", &Plugin::forward, "problem"_a, "tensors"_a)
      .def("forward_layer", &Plugin::forward_layer, "problem"_a, "tensors"_a);

  m.def(
      "properties",
      [] {
        std::vector<std::tuple<std::string, std::string, std::string, bool, bool, std::vector<std::string>>> list;
        for (const PropertyDef& p : all_properties()) {
          std::vector<std::string> dtypes;
          for (const DType d : {DType::F32, DType::F16, DType::BF16, DType::E4M3, DType::E5M2})
            if (runs_on(p, d)) dtypes.emplace_back(dtype_name(d));
          list.emplace_back(p.name, p.family, p.why, p.needs_layer, p.needs_backward, std::move(dtypes));
        }
        return list;
      },
      "(name, family, why, needs_layer, needs_backward, dtypes) of every property, in registration order; dtypes are "
      "the input dtypes it runs on (f32, f16, bf16, or the fp8 e4m3 and e5m2).");
  m.def(
      "suite_profiles",
      [] {
        std::vector<std::tuple<std::string, int, int>> list;
        for (const SuiteProfile& p : suite_profiles()) list.emplace_back(p.name, p.cases, p.max_size);
        return list;
      },
      "(name, cases, max_size) of quick, standard and exhaustive.");
  m.def("builtin_backends", &builtin_backend_names);

  m.def(
      "run_python",
      [](nb::object backend, const std::string& name, const std::string& description, const std::string& profile,
         std::optional<int> cases, std::optional<std::string> size_class, const std::string& property_regex,
         const std::string& problem_regex, const std::vector<std::string>& dtypes, std::uint64_t seed,
         const std::string& reproduce, std::optional<double> accuracy_factor, const std::string& expect_path,
         const std::string& backend_spec, const std::string& save_failures, const std::string& pinned_case) {
        return run_python(std::move(backend), name, description,
                          run_arguments(profile, cases, std::move(size_class), property_regex, problem_regex, dtypes, seed,
                                        reproduce, accuracy_factor, expect_path, backend_spec, save_failures, pinned_case));
      },
      "backend"_a, "name"_a, "description"_a, "profile"_a, "cases"_a.none(), "size_class"_a.none(), "property_regex"_a,
      "problem_regex"_a, "dtypes"_a, "seed"_a, "reproduce"_a, "accuracy_factor"_a.none(), "expect_path"_a, "backend_spec"_a,
      "save_failures"_a, "pinned_case"_a);
  m.def(
      "run_spec",
      [](const std::string& spec, const std::string& profile, std::optional<int> cases, std::optional<std::string> size_class,
         const std::string& property_regex, const std::string& problem_regex, const std::vector<std::string>& dtypes,
         std::uint64_t seed, const std::string& reproduce, std::optional<double> accuracy_factor, const std::string& expect_path,
         const std::string& save_failures, const std::string& pinned_case) {
        return run_spec(spec, run_arguments(profile, cases, std::move(size_class), property_regex, problem_regex, dtypes, seed,
                                            reproduce, accuracy_factor, expect_path, spec, save_failures, pinned_case));
      },
      "spec"_a, "profile"_a, "cases"_a.none(), "size_class"_a.none(), "property_regex"_a, "problem_regex"_a, "dtypes"_a,
      "seed"_a, "reproduce"_a, "accuracy_factor"_a.none(), "expect_path"_a, "save_failures"_a, "pinned_case"_a);

  m.def(
      "verify_python",
      [](nb::object backend, const std::string& name, const std::vector<std::string>& paths) {
        Backend b = python_backend(std::move(backend), name, "");
        nb::list rows = verify_backend(b, paths);
        nb::gil_scoped_release release;
        Backend gone = std::move(b);
        return rows;
      },
      "backend"_a, "name"_a, "paths"_a);
  m.def(
      "verify_spec",
      [](const std::string& spec, const std::vector<std::string>& paths) {
        Backend b = [&] {
          try {
            return open_backend(spec);
          } catch (const LoadError& e) {
            throw nb::value_error(e.what());
          }
        }();
        return verify_backend(b, paths);
      },
      "spec"_a, "paths"_a);

  m.def("reference", &reference, "problem"_a, "q"_a, "k"_a, "v"_a, "mask"_a.none() = nb::none(),
        "key_lengths"_a.none() = nb::none(), "alibi_slopes"_a.none() = nb::none(), "sinks"_a.none() = nb::none(),
        "block_table"_a.none() = nb::none(), "cu_seqlens_q"_a.none() = nb::none(), "cu_seqlens_k"_a.none() = nb::none(),
        "q_descale"_a.none() = nb::none(), "k_descale"_a.none() = nb::none(), "v_descale"_a.none() = nb::none(),
        "The double-precision reference (reference_attention): returns (out [B, Hq, Lq, Dv], lse [B, Hq, Lq]). "
        "alibi_slopes: [Hq] or [B, Hq] flattened row-major; sinks: [Hq]; a paged problem's k and v are its page "
        "pools and block_table [B, Lk / page] is flattened row-major. A packed batch (varlen) takes q [Tq, Hq, Dk], "
        "k and v [Tk, Hkv, D] with cu_seqlens_q and cu_seqlens_k ([B + 1] offsets), and returns out [Tq, Hq, Dv] "
        "and lse [Hq, Tq]. A descaled problem (fp8 inputs) takes the stored values in q, k, v (decoded to float) and "
        "q_descale, k_descale, v_descale ([1] or [B, Hkv] flattened row-major); the reference dequantizes them.");

  m.def(
      "read_fixture",
      [](const std::string& path) {
        try {
          return fixture_to_python(read_fixture(path));
        } catch (const FixtureError& e) {
          throw nb::value_error(e.what());
        }
      },
      "path"_a);
  m.def(
      "write_fixture",
      [](const std::string& path, const nb::dict& fixture) {
        try {
          write_fixture(path, fixture_from_python(fixture));
        } catch (const FixtureError& e) {
          throw nb::value_error(e.what());
        }
      },
      "path"_a, "fixture"_a);
  m.def(
      "with_reference_outputs",
      [](const nb::dict& fixture) {
        try {
          return fixture_to_python(with_reference_outputs(fixture_from_python(fixture)));
        } catch (const FixtureError& e) {
          throw nb::value_error(e.what());
        } catch (const ProblemError& e) {
          throw nb::value_error(e.what());
        }
      },
      "fixture"_a, "The fixture with out and lse computed by the double reference from its inputs.");
}

}  // namespace attncheck::python
