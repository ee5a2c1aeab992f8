// `attncheck bench`: a backend's speed beside the reference's, on cases it has just passed —
// a wrong kernel has no speed worth reporting.
#include <chrono>
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

}  // namespace

int bench_command(const BenchOptions& options, std::ostream& out, std::ostream& err) {
  std::vector<Shape> shapes;
  const auto dtype = parse_dtype(options.dtype);
  try {
    if (!dtype) throw ProblemError(fmt::format("--dtype '{}': not f32, f16, bf16 or f64", options.dtype));
    for (const std::string& s : options.shapes) shapes.push_back(parse_shape(s));
  } catch (const ProblemError& e) {
    err << "attncheck bench: " << e.what() << "\n";
    return kExitUsage;
  }
  if (shapes.empty())
    for (std::int64_t length : {512, 1024, 2048, 4096}) shapes.push_back({1, 8, length, 64});
  std::optional<Backend> backend;
  try {
    backend.emplace(open_backend(options.backend));
  } catch (const LoadError& e) {
    err << fmt::format("attncheck bench: --backend '{}': {}\n", options.backend, e.what());
    return kExitUsage;
  }
  const auto profile = backend->profile(*dtype);
  if (!profile) {
    err << fmt::format("attncheck bench: {} does not support {} inputs\n", backend->name(), dtype_name(*dtype));
    return kExitUsage;
  }
  out << fmt::format("{:>20}  {:>12} {:>9}  {:>12} {:>9}  {:>10}\n", "B,H,L,D", "backend ms", "GF/s", "reference ms", "GF/s",
                     "max ratio");
  int status = kExitPassed;
  for (const Shape& s : shapes) {
    AttentionCase c;
    c.problem.batch = s.batch;
    c.problem.q_heads = c.problem.kv_heads = s.heads;
    c.problem.q_len = c.problem.k_len = s.length;
    c.problem.qk_dim = c.problem.v_dim = s.dim;
    c.dtype = *dtype;
    c.seed = 1;
    const std::string label = fmt::format("{},{},{},{}", s.batch, s.heads, s.length, s.dim);
    if (auto reason = backend->unsupported_reason(c.problem, *dtype)) {
      out << fmt::format("{:>20}  skipped: {}\n", label, *reason);
      continue;
    }
    // Timed and validated under the profile of the path the backend takes for this shape.
    std::optional<NumericsProfile> shape_profile;
    try {
      shape_profile = backend->profile(c.problem, *dtype);
    } catch (const BackendError& e) {
      out << fmt::format("{:>20}  FAILED: {}\n", label, e.what());
      status = kExitFailed;
      continue;
    }
    if (!shape_profile) {
      out << fmt::format("{:>20}  skipped: no profile for this shape (get_problem_profile)\n", label);
      continue;
    }
    const CaseData data = make_case_data(c);
    const AttentionInputs inputs = data.inputs(c.problem);
    // One placement serves the checked call and the timed ones: the device copies are made once,
    // and every timed call ends with the stream synchronized, so asynchronous kernels are timed
    // to completion.
    PreparedCall call(c.problem, *shape_profile, inputs);
    double backend_seconds = 0;
    try {
      call.execute(backend->device(), [&](const attncheck_attention_tensors& tensors, DeviceCall& device) {
        backend->forward(c.problem, tensors);
        device.synchronize();
        backend_seconds = best_seconds(options.repeats, [&] {
          backend->forward(c.problem, tensors);
          device.synchronize();
        });
      });
    } catch (const BackendError& e) {
      out << fmt::format("{:>20}  FAILED: {}\n", label, e.what());
      status = kExitFailed;
      continue;
    }
    BackendRun run = call.finish();
    if (!run.memory_findings.empty()) {
      out << fmt::format("{:>20}  FAILED: memory probe: {}\n", label, fmt::join(run.memory_findings, "; "));
      status = kExitFailed;
      continue;
    }
    attncheck::ReferenceOptions with_statistics;
    with_statistics.row_statistics = true;
    const AttentionResult reference = reference_attention(c.problem, inputs, with_statistics);
    const Verdict verdict =
        compare_attention(c.problem, *shape_profile, inputs, reference, run.out, run.lse ? &*run.lse : nullptr);
    if (!verdict.passed) {
      out << fmt::format("{:>20}  FAILED validation: {}\n", label, verdict.summary());
      status = kExitFailed;
      continue;
    }
    const double reference_seconds = best_seconds(1, [&] { (void)reference_attention(c.problem, inputs); });
    const double flop = 4.0 * static_cast<double>(s.batch * s.heads) * static_cast<double>(s.length) *
                        static_cast<double>(s.length) * static_cast<double>(s.dim);
    out << fmt::format("{:>20}  {:>12.2f} {:>9.1f}  {:>12.2f} {:>9.1f}  {:>10.3g}\n", label, backend_seconds * 1e3,
                       flop / backend_seconds * 1e-9, reference_seconds * 1e3, flop / reference_seconds * 1e-9,
                       verdict.max_ratio);
  }
  return status;
}

}  // namespace attncheck::cli
