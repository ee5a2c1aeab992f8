// `attncheck bench`: backends' speeds side by side and beside the reference's, on cases each has
// just passed — a wrong kernel has no speed worth reporting. Every backend gets the same inputs.
// `--direction` times the forward pass, the backward pass (validated by its gradients), or both.
#include <bit>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <fmt/ranges.h>
#include <optional>
#include <fmt/format.h>
#include <sstream>

#include "attncheck/case.h"
#include "attncheck/execute.h"
#include "attncheck/gradient_tolerance.h"
#include "attncheck/memory_domain.h"
#include "commands.h"

namespace attncheck::cli {
namespace {

struct Shape {
  std::int64_t batch, heads, length, dim;
};

Shape parse_shape(const std::string& text) {
  Shape s{};
  char c1 = 0, c2 = 0, c3 = 0;
  std::istringstream in(text);
  if (!(in >> s.batch >> c1 >> s.heads >> c2 >> s.length >> c3 >> s.dim) || c1 != ',' || c2 != ',' || c3 != ',' ||
      !in.eof() || s.batch < 1 || s.heads < 1 || s.length < 1 || s.dim < 1)
    throw ProblemError(fmt::format("--shape '{}': expected B,H,L,D with positive integers", text));
  return s;
}

template <class F>
double best_seconds(int repeats, F&& f) {
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// One backend timed on one validated shape: the best of `repeats` calls, or why there is no time.
struct Timing {
  std::optional<double> seconds;
  double max_ratio = 0;
  std::string skipped, failed;
};

Timing time_backend(Backend& backend, const AttentionCase& c, const CaseData& data, const AttentionResult& reference,
                    int repeats) {
  Timing t;
  if (auto reason = backend.unsupported_reason(c.problem, c.dtype)) {
    t.skipped = *reason;
    return t;
  }
  // Timed and validated under the profile of the path the backend takes for this shape.
  std::optional<NumericsProfile> shape_profile;
  try {
    shape_profile = backend.profile(c.problem, c.dtype);
  } catch (const BackendError& e) {
    t.failed = e.what();
    return t;
  }
  if (!shape_profile) {
    t.skipped = "no profile for this shape (get_problem_profile)";
    return t;
  }
  const AttentionInputs inputs = data.inputs(c.problem);
  // One placement serves the checked call and the timed ones: the device copies are made once,
  // and every timed call ends with the stream synchronized, so asynchronous kernels are timed
  // to completion.
  PreparedCall call(c.problem, *shape_profile, inputs);
  double seconds = 0;
  try {
    call.execute(backend.device(), [&](const attncheck_attention_tensors& tensors, DeviceCall& device) {
      backend.forward(c.problem, tensors);
      device.synchronize();
      seconds = best_seconds(repeats, [&] {
        backend.forward(c.problem, tensors);
        device.synchronize();
      });
    });
  } catch (const BackendError& e) {
    t.failed = e.what();
    return t;
  }
  BackendRun run = call.finish();
  if (!run.memory_findings.empty()) {
    t.failed = fmt::format("memory probe: {}", fmt::join(run.memory_findings, "; "));
    return t;
  }
  const Verdict verdict =
      compare_attention(c.problem, *shape_profile, inputs, reference, run.out, run.lse ? &*run.lse : nullptr);
  t.max_ratio = verdict.max_ratio;
  if (!verdict.passed) {
    t.failed = fmt::format("validation: {}", verdict.summary());
    return t;
  }
  t.seconds = seconds;
  return t;
}


// --- The backward pass ---------------------------------------------------------------------------

// One compact tensor of a timed backward call, in the backend's memory: the bytes of `values` in
// `dtype` copied in (inputs), or as many bytes left to the kernel (outputs). The guarded call that
// validated the kernel (run_backend_backward) has already checked every write; these buffers are
// for timing alone, so they carry no guards.
class TimedTensor {
 public:
  TimedTensor(MemoryDomain& domain, const Shape4& shape, DType dtype, const std::vector<double>* values, int rank = 4)
      : domain_(domain) {
    for (int d = 4 - rank; d < 4; ++d) shape_.push_back(shape[static_cast<std::size_t>(d)]);
    std::size_t count = 1;
    for (std::int64_t n : shape_) count *= static_cast<std::size_t>(n);
    const std::size_t width = static_cast<std::size_t>(dtype_bytes(dtype));
    std::vector<std::byte> bytes(count * width);
    if (values != nullptr)
      for (std::size_t i = 0; i < count; ++i) encode((*values)[i], dtype, bytes.data() + i * width);
    // The host domain hands over host memory as it is (memory_domain.h): the bytes stay here.
    if (domain.is_host()) {
      host_ = std::move(bytes);
      tensor_.data = host_.data();
    } else {
      memory_ = domain.allocate(bytes.size());
      domain.copy_in(memory_, bytes.data(), bytes.size());
      tensor_.data = memory_;
    }
    tensor_.device = domain.device();
    tensor_.ndim = static_cast<std::int32_t>(shape_.size());
    tensor_.dtype = to_dlpack(dtype);
    tensor_.shape = shape_.data();
    tensor_.strides = nullptr;  // compact row-major
    tensor_.byte_offset = 0;
  }
  TimedTensor(const TimedTensor&) = delete;
  TimedTensor& operator=(const TimedTensor&) = delete;
  ~TimedTensor() {
    if (memory_ != nullptr) domain_.release(memory_);
  }
  DLTensor* get() { return &tensor_; }

 private:
  static int dtype_bytes(DType dtype) { return attncheck::dtype_bytes(dtype); }
  static void encode(double x, DType dtype, std::byte* at) {
    switch (dtype) {
      case DType::E4M3:
      case DType::E5M2: encode_value(dtype, x, at); break;
      case DType::F64: std::memcpy(at, &x, 8); break;
      case DType::F32: {
        const float f = static_cast<float>(x);  // x is already a float value (the data are rounded)
        std::memcpy(at, &f, 4);
        break;
      }
      case DType::F16: {
        const std::uint16_t bits = to_f16_bits(x);
        std::memcpy(at, &bits, 2);
        break;
      }
      case DType::BF16: {
        const std::uint16_t bits = to_bf16_bits(x);
        std::memcpy(at, &bits, 2);
        break;
      }
    }
  }
  MemoryDomain& domain_;
  std::vector<std::int64_t> shape_;
  void* memory_ = nullptr;         // in the domain's memory
  std::vector<std::byte> host_;    // or here, for the host domain
  DLTensor tensor_{};
};

// The best of `repeats` backward calls on `data`, each to completion (the stream synchronized),
// after one untimed call. Throws BackendError as the call does.
double time_backward_calls(Backend& backend, const Problem& problem, const NumericsProfile& profile,
                           const BackwardProfile& backward, const CaseData& inputs, const BackwardData& data, int repeats) {
  const std::unique_ptr<MemoryDomain> domain = make_memory_domain(backend.device());
  const DType input = profile.input, gradient = backward.gradient_dtype(profile.input);
  TimedTensor q(*domain, inputs.q.shape, input, &inputs.q.values), k(*domain, inputs.k.shape, input, &inputs.k.values),
      v(*domain, inputs.v.shape, input, &inputs.v.values), out(*domain, data.out.shape, profile.output, &data.out.values),
      lse(*domain, data.lse.shape, DType::F32, &data.lse.values, 3),
      d_out(*domain, data.d_out.shape, input, &data.d_out.values), d_q(*domain, inputs.q.shape, gradient, nullptr),
      d_k(*domain, inputs.k.shape, gradient, nullptr), d_v(*domain, inputs.v.shape, gradient, nullptr);
  attncheck_backward_tensors tensors{};
  tensors.struct_size = sizeof tensors;
  tensors.stream = domain->stream();
  tensors.q = q.get();
  tensors.k = k.get();
  tensors.v = v.get();
  tensors.out = out.get();
  tensors.lse = lse.get();
  tensors.dout = d_out.get();
  tensors.dq = d_q.get();
  tensors.dk = d_k.get();
  tensors.dv = d_v.get();
  auto call = [&] {
    domain->enter_call();
    try {
      backend.backward(problem, tensors);
    } catch (...) {
      domain->leave_call();
      throw;
    }
    domain->leave_call();
    if (auto error = domain->synchronize())
      throw BackendError(kAttncheckInternalError, fmt::format("asynchronous device error after the call returned: {}", *error));
  };
  call();
  return best_seconds(repeats, call);
}

// One backend's backward pass on one shape: validated first (run_backend_backward, the guarded
// call, judged with gradient_tolerance against the reference's gradients), then timed.
Timing time_backend_backward(Backend& backend, const AttentionCase& c, const CaseData& data, const AttentionResult& reference,
                             const AttentionGradients& expected, int repeats) {
  Timing t;
  if (!backend.has_backward()) {
    t.skipped = "no backward pass";
    return t;
  }
  if (auto reason = backend.unsupported_reason(c.problem, c.dtype)) {
    t.skipped = *reason;
    return t;
  }
  try {
    const std::optional<NumericsProfile> profile = backend.profile(c.problem, c.dtype);
    if (!profile) {
      t.skipped = "no profile for this shape (get_problem_profile)";
      return t;
    }
    const std::optional<BackwardProfile> backward = backend.backward_profile(c.problem, c.dtype);
    if (!backward) {
      t.skipped = "no backward profile for this shape (get_backward_profile)";
      return t;
    }
    // What a kernel is handed: the exact O and LSE rounded to its output dtype and to float32,
    // and the case's dO (make_backward_data).
    const BackwardData handed = make_backward_data(c, reference, profile->output, false);
    const AttentionInputs inputs = data.inputs(c.problem);
    const BackwardRun run = run_backend_backward(backend, c.problem, *profile, *backward, inputs, handed, false);
    if (!run.memory_findings.empty()) {
      t.failed = fmt::format("memory probe: {}", fmt::join(run.memory_findings, "; "));
      return t;
    }
    const BackwardInputs exact = handed.exact_inputs(reference);
    const GradientBounds tau = gradient_tolerance(c.problem, *profile, *backward, inputs, exact, expected);
    const GradientVerdict verdict = compare_gradients(expected, tau, run.gradients);
    t.max_ratio = verdict.max_ratio;
    if (!verdict.passed) {
      t.failed = fmt::format("validation: {}", verdict.summary());
      return t;
    }
    t.seconds = time_backward_calls(backend, c.problem, *profile, *backward, data, handed, repeats);
  } catch (const BackendError& e) {
    t.failed = e.what();
  }
  return t;
}

// One line of the table and one element of the JSON "rows".
struct BenchRow {
  std::string dtype;
  Shape shape;
  std::string backend;  ///< "(double reference)" for the reference's row
  Direction pass = Direction::Forward;
  std::string status;  ///< "timed", "skipped" or "failed"
  std::optional<double> seconds, gflops, vs_first, max_ratio;
  std::string message;  ///< why skipped or failed
};

nlohmann::ordered_json to_json(const BenchRow& row) {
  auto number = [](const std::optional<double>& x) { return x ? nlohmann::ordered_json(*x) : nlohmann::ordered_json(); };
  nlohmann::ordered_json j;
  j["dtype"] = row.dtype;
  j["shape"] = {row.shape.batch, row.shape.heads, row.shape.length, row.shape.dim};
  j["backend"] = row.backend;
  j["reference"] = row.backend == "(double reference)";
  j["pass"] = direction_name(row.pass);
  j["status"] = row.status;
  j["ms"] = row.seconds ? nlohmann::ordered_json(*row.seconds * 1e3) : nlohmann::ordered_json();
  j["gflops"] = number(row.gflops);
  j["vs_first"] = number(row.vs_first);
  j["max_ratio"] = number(row.max_ratio);
  j["message"] = row.message;
  return j;
}

}  // namespace

int bench_command(const BenchOptions& options, std::ostream& out, std::ostream& err) {
  std::vector<Shape> shapes;
  std::vector<DType> dtypes;
  try {
    std::size_t start = 0;
    while (start <= options.dtype.size()) {
      const std::size_t comma = std::min(options.dtype.find(',', start), options.dtype.size());
      const std::string item = options.dtype.substr(start, comma - start);
      const auto dtype = parse_dtype(item);
      if (!dtype) throw ProblemError(fmt::format("--dtype '{}': '{}' is not f32, f16, bf16 or f64", options.dtype, item));
      dtypes.push_back(*dtype);
      start = comma + 1;
    }
    for (const std::string& s : options.shapes) shapes.push_back(parse_shape(s));
  } catch (const ProblemError& e) {
    err << "attncheck bench: " << e.what() << "\n";
    return kExitUsage;
  }
  if (shapes.empty())
    for (std::int64_t length : {512, 1024, 2048, 4096}) shapes.push_back({1, 8, length, 64});
  std::vector<Backend> backends;
  for (const std::string& spec : options.backends) {
    try {
      backends.push_back(open_backend(spec));
    } catch (const LoadError& e) {
      err << fmt::format("attncheck bench: --backend '{}': {}\n", spec, e.what());
      return kExitUsage;
    }
  }
  for (Backend& backend : backends)
    for (const DType dtype : dtypes)
      if (!backend.profile(dtype) && backends.size() == 1) {
        err << fmt::format("attncheck bench: {} does not support {} inputs\n", backend.name(), dtype_name(dtype));
        return kExitUsage;
      }
  // Opened before anything is timed, so that an unwritable path is a usage error at once.
  std::ofstream json_file;
  if (!options.json_path.empty()) {
    json_file.open(options.json_path, std::ios::out | std::ios::trunc);
    if (!json_file) {
      err << fmt::format("attncheck bench: --json '{}': cannot open for writing ({})\n", options.json_path, std::strerror(errno));
      return kExitUsage;
    }
  }
  std::vector<Direction> passes;
  if (includes_forward(options.direction)) passes.push_back(Direction::Forward);
  if (includes_backward(options.direction)) passes.push_back(Direction::Backward);
  // The pass column appears only when the backward is timed: the forward table keeps its columns.
  const bool pass_column = includes_backward(options.direction);
  auto pass_cell = [&](Direction pass) { return pass_column ? fmt::format(" {:<8}", direction_name(pass)) : std::string(); };
  // "vs first": the first backend's time over this one's, on the same shape, dtype, pass and inputs.
  out << fmt::format("{:>5} {:>16}{}  {:<22} {:>11} {:>9} {:>9} {:>10}\n", "dtype", "B,H,L,D",
                     pass_column ? fmt::format(" {:<8}", "pass") : std::string(), "backend", "ms", "GF/s", "vs first",
                     "max ratio");
  std::vector<BenchRow> rows;
  int status = kExitPassed;
  for (const DType dtype : dtypes)
    for (const Shape& s : shapes) {
      AttentionCase c;
      c.problem.batch = s.batch;
      c.problem.q_heads = c.problem.kv_heads = s.heads;
      c.problem.q_len = c.problem.k_len = s.length;
      c.problem.qk_dim = c.problem.v_dim = s.dim;
      c.dtype = dtype;
      c.seed = 1;
      const std::string shape_text = fmt::format("{},{},{},{}", s.batch, s.heads, s.length, s.dim);
      const CaseData data = make_case_data(c);
      const AttentionInputs inputs = data.inputs(c.problem);
      attncheck::ReferenceOptions with_statistics;
      with_statistics.row_statistics = true;
      AttentionResult reference;
      const double reference_seconds =
          best_seconds(1, [&] { reference = reference_attention(c.problem, inputs, with_statistics); });
      // The forward's 4·B·H·L²·D flop (two products of L × L × D); the backward's five products
      // (S again, dP, dV, dQ, dK) are 2.5 times as many, FlashAttention-2's count.
      const double forward_flop = 4.0 * static_cast<double>(s.batch * s.heads) * static_cast<double>(s.length) *
                                  static_cast<double>(s.length) * static_cast<double>(s.dim);
      // The reference's gradients, against which each backend's are validated, and its time.
      std::optional<AttentionGradients> expected;
      double reference_backward_seconds = 0;
      if (includes_backward(options.direction)) {
        const BackwardData exact_data = make_backward_data(c, reference, DType::F64, false);
        const BackwardInputs exact = exact_data.exact_inputs(reference);
        reference_backward_seconds =
            best_seconds(1, [&] { expected = reference_attention_backward(c.problem, inputs, exact); });
      }
      for (const Direction pass : passes) {
        const bool backward = pass == Direction::Backward;
        const double flop = backward ? 2.5 * forward_flop : forward_flop;
        const std::string label = fmt::format("{:>5} {:>16}{}", dtype_name(dtype), shape_text, pass_cell(pass));
        std::optional<double> first_seconds;
        for (std::size_t i = 0; i < backends.size(); ++i) {
          Backend& backend = backends[i];
          BenchRow row{std::string(dtype_name(dtype)), s, std::string(backend.name()), pass, "skipped", {}, {}, {}, {}, ""};
          if (!backend.profile(dtype)) {
            row.message = fmt::format("no {} inputs", dtype_name(dtype));
            out << fmt::format("{}  {:<22} skipped: {}\n", label, row.backend, row.message);
            rows.push_back(std::move(row));
            continue;
          }
          const Timing t = backward ? time_backend_backward(backend, c, data, reference, *expected, options.repeats)
                                    : time_backend(backend, c, data, reference, options.repeats);
          if (!t.failed.empty()) {
            row.status = "failed";
            row.message = t.failed;
            out << fmt::format("{}  {:<22} FAILED: {}\n", label, row.backend, t.failed);
            status = kExitFailed;
          } else if (!t.seconds) {
            row.message = t.skipped;
            out << fmt::format("{}  {:<22} skipped: {}\n", label, row.backend, t.skipped);
          } else {
            if (i == 0) first_seconds = *t.seconds;
            row.status = "timed";
            row.seconds = *t.seconds;
            row.gflops = flop / *t.seconds * 1e-9;
            if (first_seconds) row.vs_first = *first_seconds / *t.seconds;
            row.max_ratio = t.max_ratio;
            out << fmt::format("{}  {:<22} {:>11.2f} {:>9.1f} {:>9} {:>10.3g}\n", label, row.backend, *t.seconds * 1e3,
                               *row.gflops, row.vs_first ? fmt::format("{:.2f}x", *row.vs_first) : std::string("-"),
                               t.max_ratio);
          }
          rows.push_back(std::move(row));
        }
        const double seconds = backward ? reference_backward_seconds : reference_seconds;
        out << fmt::format("{}  {:<22} {:>11.2f} {:>9.1f}\n", label, "(double reference)", seconds * 1e3,
                           flop / seconds * 1e-9);
        rows.push_back({std::string(dtype_name(dtype)), s, "(double reference)", pass, "timed", seconds, flop / seconds * 1e-9,
                        {}, {}, ""});
      }
    }
  if (json_file.is_open()) {
    nlohmann::ordered_json doc;
    doc["format"] = "attncheck-bench";
    doc["version"] = 1;
    doc["attncheck_version"] = ATTNCHECK_VERSION;
    doc["direction"] = direction_name(options.direction);
    doc["repeats"] = options.repeats;
    doc["rows"] = nlohmann::ordered_json::array();
    for (const BenchRow& row : rows) doc["rows"].push_back(to_json(row));
    json_file << doc.dump(2) << "\n";
    json_file.close();
    if (!json_file) {
      err << fmt::format("attncheck bench: --json '{}': writing the report failed\n", options.json_path);
      return kExitUsage;
    }
  }
  return status;
}

}  // namespace attncheck::cli
