// `attncheck bench`: backends' speeds side by side and beside the reference's, on cases each has
// just passed — a wrong kernel has no speed worth reporting. Every backend gets the same inputs.
#include <chrono>
#include <fmt/ranges.h>
#include <optional>
#include <fmt/format.h>
#include <sstream>

#include "attncheck/case.h"
#include "attncheck/execute.h"
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
  // "vs first": the first backend's time over this one's, on the same shape, dtype and inputs.
  out << fmt::format("{:>5} {:>16}  {:<22} {:>11} {:>9} {:>9} {:>10}\n", "dtype", "B,H,L,D", "backend", "ms", "GF/s",
                     "vs first", "max ratio");
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
      const std::string label = fmt::format("{:>5} {:>16}", dtype_name(dtype), fmt::format("{},{},{},{}", s.batch, s.heads, s.length, s.dim));
      const CaseData data = make_case_data(c);
      const AttentionInputs inputs = data.inputs(c.problem);
      attncheck::ReferenceOptions with_statistics;
      with_statistics.row_statistics = true;
      AttentionResult reference;
      const double reference_seconds =
          best_seconds(1, [&] { reference = reference_attention(c.problem, inputs, with_statistics); });
      const double flop = 4.0 * static_cast<double>(s.batch * s.heads) * static_cast<double>(s.length) *
                          static_cast<double>(s.length) * static_cast<double>(s.dim);
      std::optional<double> first_seconds;
      for (std::size_t i = 0; i < backends.size(); ++i) {
        Backend& backend = backends[i];
        const std::string name(backend.name());
        if (!backend.profile(dtype)) {
          out << fmt::format("{}  {:<22} skipped: no {} inputs\n", label, name, dtype_name(dtype));
          continue;
        }
        const Timing t = time_backend(backend, c, data, reference, options.repeats);
        if (!t.failed.empty()) {
          out << fmt::format("{}  {:<22} FAILED: {}\n", label, name, t.failed);
          status = kExitFailed;
          continue;
        }
        if (!t.seconds) {
          out << fmt::format("{}  {:<22} skipped: {}\n", label, name, t.skipped);
          continue;
        }
        if (i == 0) first_seconds = *t.seconds;
        out << fmt::format("{}  {:<22} {:>11.2f} {:>9.1f} {:>9} {:>10.3g}\n", label, name, *t.seconds * 1e3,
                           flop / *t.seconds * 1e-9,
                           first_seconds ? fmt::format("{:.2f}x", *first_seconds / *t.seconds) : std::string("-"),
                           t.max_ratio);
      }
      out << fmt::format("{}  {:<22} {:>11.2f} {:>9.1f}\n", label, "(double reference)", reference_seconds * 1e3,
                         flop / reference_seconds * 1e-9);
    }
  return status;
}

}  // namespace attncheck::cli
