// `attncheck characterize`: one backend and dtype over a grid of sizes and value classes, each
// case judged twice — conformance (its declared profile) and accuracy (beside the fp32 baseline
// kernel, numerics/README.md §4.5) — and printed as a table.
#include <cmath>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attncheck/backend_handle.h"
#include "attncheck/case.h"
#include "attncheck/compare.h"
#include "attncheck/execute.h"
#include "attncheck/reference.h"
#include "commands.h"

namespace attncheck::cli {
namespace {

// The value kinds of the grid (harness/case.h), each reaching a different part of a kernel's
// error on long rows: diffuse weights (Q/16: nearly uniform), peaked weights (Q·4), a constant
// V = 10 (the row sum and P·V sums grow linearly, where a narrow accumulator stalls) and a
// non-negative V = |N(0, 1)| (no cancellation in P·V, where rounding bias accumulates).
constexpr ValueKind kValueKinds[] = {ValueKind::Diffuse, ValueKind::Peaked, ValueKind::ConstantV,
                                     ValueKind::NonNegativeV};

}  // namespace

int characterize_command(const CharacterizeOptions& options, std::ostream& out, std::ostream& err) {
  const auto dtype = parse_dtype(options.dtype);
  if (!dtype) {
    err << fmt::format("attncheck characterize: error: --dtype '{}': not a dtype (use f32, f16, bf16)\n", options.dtype);
    return kExitUsage;
  }
  std::optional<Backend> backend;
  try {
    backend.emplace(open_backend(options.backend));
  } catch (const LoadError& e) {
    err << fmt::format("attncheck characterize: error: --backend '{}': {}\n", options.backend, e.what());
    return kExitUsage;
  }
  std::unique_ptr<std::ofstream> json_file;
  if (!options.json_path.empty()) {
    json_file = std::make_unique<std::ofstream>(options.json_path);
    if (!*json_file) {
      err << fmt::format("attncheck characterize: error: --json '{}': cannot open for writing\n", options.json_path);
      return kExitUsage;
    }
  }
  std::optional<NumericsProfile> profile;
  try {
    profile = backend->profile(*dtype);
  } catch (const BackendError& e) {
    err << fmt::format("attncheck characterize: error: {}\n", e.what());
    return kExitFailed;
  }
  if (!profile) {
    err << fmt::format("attncheck characterize: error: {} does not take {} inputs\n", backend->name(), options.dtype);
    return kExitUsage;
  }
  CompareOptions compare;
  compare.accuracy = true;
  compare.accuracy_factor = options.accuracy_factor;
  out << fmt::format("attncheck characterize: backend {}, {} inputs, profile {}; accuracy factor {}\n", backend->name(),
                     options.dtype, profile->describe(), options.accuracy_factor > 0 ? fmt::format("{:g}", options.accuracy_factor) : "off (report only)");
  out << fmt::format("{:>5} {:>6} {:>4} {:>15}  {:>10} {:>10} {:>10} {:>10}  {}\n", "Lq", "Lk", "D", "values", "conf r",
                     "acc max", "acc agg", "tau/|O|", "verdict");
  nlohmann::json cases = nlohmann::json::array();
  int status = kExitPassed;
  for (const std::int64_t lq : options.q_lengths)
    for (const std::int64_t lk : options.k_lengths)
      for (const std::int64_t d : options.head_dims)
        for (const ValueKind kind : kValueKinds) {
          AttentionCase c;
          // Two query heads on one kv head: GQA's head mapping is exercised and B·H stays small,
          // which keeps the Lk = 8192 cases to a few seconds.
          c.problem = Problem::of_shape(1, 2, 1, lq, lk, d, d);
          c.dtype = *dtype;
          c.values = kind;
          c.seed = static_cast<std::uint64_t>(lq * 1000003 + lk * 101 + d) * 4 + static_cast<std::uint64_t>(kind);
          const std::string label = fmt::format("{:>5} {:>6} {:>4} {:>15}", lq, lk, d, value_kind_name(kind));
          nlohmann::json row = {{"q_len", lq}, {"k_len", lk}, {"head_dim", d}, {"values", value_kind_name(kind)}};
          // The backend's answers to supports() and get_problem_profile are its own: an error
          // status or a malformed profile fails this case, with the backend's message, not the run.
          std::optional<std::string> declined;
          std::optional<NumericsProfile> path_profile;
          try {
            declined = backend->unsupported_reason(c.problem, c.dtype);
            // Run and judged under the profile of the path the backend takes for this problem.
            if (!declined) path_profile = backend->profile(c.problem, *dtype);
          } catch (const BackendError& e) {
            out << fmt::format("{}  FAILED: {}\n", label, e.what());
            row["error"] = e.what();
            cases.push_back(row);
            status = kExitFailed;
            continue;
          }
          if (declined) {
            out << fmt::format("{}  declined: {}\n", label, *declined);
            row["declined"] = *declined;
            cases.push_back(row);
            continue;
          }
          if (!path_profile) {
            const std::string reason = "no profile for this problem (get_problem_profile)";
            out << fmt::format("{}  declined: {}\n", label, reason);
            row["declined"] = reason;
            cases.push_back(row);
            continue;
          }
          CaseData data = make_case_data(c);
          round_additive_mask(c.problem, data, path_profile->additive_mask_dtype());
          const AttentionInputs inputs = data.inputs(c.problem);
          BackendRun run;
          try {
            run = run_backend(*backend, c.problem, *path_profile, inputs, {});
          } catch (const BackendError& e) {
            out << fmt::format("{}  FAILED: the backend returned an error: {}\n", label, e.what());
            row["error"] = e.what();
            cases.push_back(row);
            status = kExitFailed;
            continue;
          }
          ReferenceOptions with_statistics;
          with_statistics.row_statistics = true;
          const AttentionResult reference = reference_attention(c.problem, inputs, with_statistics);
          compare.data = data_character(kind);
          const Verdict v = compare_attention(c.problem, *path_profile, inputs, reference, run.out,
                                              run.lse ? &*run.lse : nullptr, compare);
          const bool passed = v.passed && run.memory_findings.empty();
          if (!passed) status = kExitFailed;
          const std::string verdict = passed ? "PASS" : v.accuracy_failed ? "FAIL accuracy" : "FAIL conformance";
          out << fmt::format("{}  {:>10.3g} {:>10.3g} {:>10.3g} {:>10.3g}  {}{}\n", label, v.max_ratio,
                             v.accuracy_max_ratio, v.accuracy_aggregate_ratio, v.guaranteed_relative_accuracy, verdict,
                             passed ? "" : ": " + (run.memory_findings.empty() ? v.failure : run.memory_findings.front()));
          row.update({{"conformance_max_ratio", v.max_ratio},
                      {"accuracy_max_ratio", v.accuracy_max_ratio},
                      {"accuracy_aggregate_ratio", v.accuracy_aggregate_ratio},
                      {"baseline_max_error", v.baseline_max_error},
                      {"guaranteed_relative_accuracy", v.guaranteed_relative_accuracy},
                      {"passed", passed},
                      {"failure_kind", passed ? "" : v.accuracy_failed ? "accuracy" : "conformance"},
                      {"summary", v.summary()}});
          cases.push_back(row);
        }
  if (json_file) {
    *json_file << nlohmann::json{{"format", "attncheck-characterize"},
                                 {"backend", std::string(backend->name())},
                                 {"dtype", options.dtype},
                                 {"profile", profile->describe()},
                                 {"accuracy_factor", options.accuracy_factor},
                                 {"cases", cases}}
                      .dump(2)
               << '\n';
    if (!*json_file) {
      err << fmt::format("attncheck characterize: error: --json '{}': writing failed\n", options.json_path);
      return kExitUsage;
    }
  }
  return status;
}

}  // namespace attncheck::cli
