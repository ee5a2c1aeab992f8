// `attncheck characterize`: what one backend does for one dtype, in two sections.
//   The profile ladder: healthy cases run once each and judged under candidate profiles, tightest
//   first (numerics/profile_ladder.h), naming the tightest the kernel behaves like and the next
//   tighter one it breaks, with the case that breaks it.
//   The grid: sizes × value classes, each case judged twice — conformance (its declared profile)
//   and accuracy (beside the fp32 baseline kernel, numerics/README.md §4.5).
#include <cmath>
#include <fmt/format.h>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "attncheck/backend_handle.h"
#include "attncheck/case.h"
#include "attncheck/compare.h"
#include "attncheck/execute.h"
#include "attncheck/profile_ladder.h"
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

// One case run on the backend under the profile of its path, with the double reference beside it.
// `declined` or `error` set: nothing ran (or the backend failed; `error` is its message).
struct CaseRun {
  AttentionCase c;
  std::optional<std::string> declined, error;
  std::optional<NumericsProfile> profile;
  CaseData data;
  BackendRun run;
  AttentionResult reference;
  AttentionInputs inputs() const { return data.inputs(c.problem); }
};

// The backend's answers to supports() and get_problem_profile are its own: an error status or a
// malformed profile fails this case, with the backend's message, not the command.
std::unique_ptr<CaseRun> run_case(Backend& backend, const AttentionCase& c) {
  auto r = std::make_unique<CaseRun>();
  r->c = c;
  try {
    r->declined = backend.unsupported_reason(c.problem, c.dtype);
    if (!r->declined) r->profile = backend.profile(c.problem, c.dtype);
  } catch (const BackendError& e) {
    r->error = e.what();
    return r;
  }
  if (r->declined) return r;
  if (!r->profile) {
    r->declined = "no profile for this problem (get_problem_profile)";
    return r;
  }
  r->data = make_case_data(c);
  round_additive_mask(c.problem, r->data, r->profile->additive_mask_dtype());
  const AttentionInputs inputs = r->inputs();
  try {
    r->run = run_backend(backend, c.problem, *r->profile, inputs, {});
  } catch (const BackendError& e) {
    r->error = fmt::format("the backend returned an error: {}", e.what());
    return r;
  }
  ReferenceOptions with_statistics;
  with_statistics.row_statistics = true;
  r->reference = reference_attention(c.problem, inputs, with_statistics);
  return r;
}

std::string case_label(const AttentionCase& c) {
  return fmt::format("Lq={} Lk={} D={} {}", c.problem.q_len, c.problem.k_len, c.problem.qk_dim,
                     value_kind_name(c.values));
}

// The ladder's cases: the shapes at which CPU kernels switch paths (decode against short and long
// caches, a 64-row tile against one key past a tile, a 128-row tile against 1024 keys) × two head
// dims × every healthy value class. Two query heads on one kv head, as in the grid.
std::vector<AttentionCase> ladder_cases(DType dtype) {
  struct Shape {
    std::int64_t lq, lk;
  };
  constexpr Shape kShapes[] = {{1, 64}, {1, 512}, {1, 4096}, {4, 33}, {64, 65}, {128, 1024}};
  constexpr ValueKind kKinds[] = {ValueKind::Gaussian, ValueKind::Diffuse, ValueKind::Peaked, ValueKind::ConstantV,
                                  ValueKind::NonNegativeV};
  std::vector<AttentionCase> cases;
  for (const Shape& shape : kShapes)
    for (const std::int64_t d : {64, 128})
      for (const ValueKind kind : kKinds) {
        AttentionCase c;
        c.problem = Problem::of_shape(1, 2, 1, shape.lq, shape.lk, d, d);
        c.dtype = dtype;
        c.values = kind;
        c.seed = static_cast<std::uint64_t>(shape.lq * 7919 + shape.lk * 31 + d) * 8 + static_cast<std::uint64_t>(kind);
        cases.push_back(c);
      }
  return cases;
}

struct RungResult {
  std::string name;
  std::string profile;
  int judged = 0, passed = 0;
  double worst_ratio = 0;
  std::string worst_case, worst_failure;
};

// Judges every case that ran under `profile_of(case)` (conformance only: the ladder asks which
// declaration the outputs are consistent with, not how accurate they are).
template <class ProfileOf>
RungResult judge_rung(const std::vector<std::unique_ptr<CaseRun>>& runs, std::string name, ProfileOf profile_of) {
  RungResult result;
  result.name = std::move(name);
  for (const auto& r : runs) {
    if (r->declined || r->error) continue;
    const NumericsProfile profile = profile_of(*r);
    if (result.profile.empty()) result.profile = profile.describe();
    CompareOptions compare;
    compare.data = data_character(r->c.values);
    const Verdict v = compare_attention(r->c.problem, profile, r->inputs(), r->reference, r->run.out,
                                        r->run.lse ? &*r->run.lse : nullptr, compare);
    ++result.judged;
    const bool passed = v.passed && r->run.memory_findings.empty();
    if (passed) ++result.passed;
    const double ratio = std::isfinite(v.max_ratio) ? v.max_ratio : std::numeric_limits<double>::infinity();
    if (result.worst_case.empty() || ratio > result.worst_ratio || (!passed && result.worst_failure.empty())) {
      result.worst_ratio = std::max(result.worst_ratio, ratio);
      result.worst_case = case_label(r->c);
      if (!passed) result.worst_failure = r->run.memory_findings.empty() ? v.failure : r->run.memory_findings.front();
    }
  }
  return result;
}

// The ladder section. Returns false when a case fails under the backend's own declaration (a
// conformance failure, which the exit status reports).
bool profile_ladder_section(Backend& backend, DType dtype, std::ostream& out, nlohmann::json& section) {
  std::vector<std::unique_ptr<CaseRun>> runs;
  int declined = 0, errors = 0;
  std::string first_error;
  for (const AttentionCase& c : ladder_cases(dtype)) {
    runs.push_back(run_case(backend, c));
    if (runs.back()->declined) ++declined;
    if (runs.back()->error) {
      if (first_error.empty()) first_error = fmt::format("{}: {}", case_label(c), *runs.back()->error);
      ++errors;
    }
  }
  const int ran = static_cast<int>(runs.size()) - declined - errors;
  out << fmt::format("profile ladder: {} cases ran ({} declined, {} errors), each judged under every rung\n", ran,
                     declined, errors);
  if (errors > 0) out << fmt::format("  first error: {}\n", first_error);
  section = {{"cases", runs.size()}, {"ran", ran}, {"declined", declined}, {"errors", errors}};
  if (ran == 0) {
    section["satisfied"] = nullptr;
    return errors == 0;
  }

  std::vector<RungResult> rungs;
  const RungResult declared =
      judge_rung(runs, "declared", [](const CaseRun& r) { return *r.profile; });
  const std::size_t rung_count = profile_ladder(NumericsProfile{}).size();
  for (std::size_t i = 0; i < rung_count; ++i)
    rungs.push_back(judge_rung(runs, profile_ladder(*runs.front()->profile)[i].name,
                               [i](const CaseRun& r) { return profile_ladder(*r.profile)[i].profile; }));

  const auto print = [&](const std::string& label, const RungResult& rung) {
    out << fmt::format("  {:<48} {:>3}/{:<3} worst r {:>9.3g}  {}{}\n", label, rung.passed, rung.judged,
                       rung.worst_ratio, rung.worst_case, rung.worst_failure.empty() ? "" : " (fails)");
  };
  print("declared: " + declared.profile, declared);
  for (std::size_t i = 0; i < rungs.size(); ++i) print(fmt::format("{}. {}", i + 1, rungs[i].name), rungs[i]);

  // The tightest rung from which every looser rung passes (profile_ladder.h: rungs are ordered by
  // their long-row error, not nested on every problem).
  std::optional<std::size_t> satisfied;
  for (std::size_t i = rungs.size(); i-- > 0;) {
    if (rungs[i].passed != rungs[i].judged) break;
    satisfied = i;
  }
  nlohmann::json rung_rows = nlohmann::json::array();
  for (const RungResult& rung : rungs)
    rung_rows.push_back({{"name", rung.name}, {"profile", rung.profile}, {"passed", rung.passed},
                         {"judged", rung.judged}, {"worst_ratio", rung.worst_ratio}, {"worst_case", rung.worst_case},
                         {"worst_failure", rung.worst_failure}});
  section["rungs"] = rung_rows;
  section["declared"] = {{"profile", declared.profile}, {"passed", declared.passed}, {"judged", declared.judged},
                         {"worst_ratio", declared.worst_ratio}, {"worst_case", declared.worst_case}};
  if (!satisfied) {
    out << fmt::format("  behaves like: none of the rungs (even {} fails: {} at {})\n", rungs.back().name,
                       rungs.back().worst_failure, rungs.back().worst_case);
    section["satisfied"] = nullptr;
  } else {
    out << fmt::format("  behaves like: {}. {}", *satisfied + 1, rungs[*satisfied].name);
    if (*satisfied > 0) {
      const RungResult& broken = rungs[*satisfied - 1];
      out << fmt::format("; breaks {}. {} (r = {:.3g} at {}: {})", *satisfied, broken.name, broken.worst_ratio,
                         broken.worst_case, broken.worst_failure);
      section["breaks"] = *satisfied - 1;
    }
    out << '\n';
    section["satisfied"] = *satisfied;
  }
  return declared.passed == declared.judged && errors == 0;
}

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
  int status = kExitPassed;
  out << fmt::format("attncheck characterize: backend {}, {} inputs, declared profile {}\n", backend->name(),
                     options.dtype, profile->describe());
  nlohmann::json ladder;
  if (options.ladder)
    if (!profile_ladder_section(*backend, *dtype, out, ladder)) status = kExitFailed;

  nlohmann::json cases = nlohmann::json::array();
  if (options.grid) {
    CompareOptions compare;
    compare.accuracy = true;
    compare.accuracy_factor = options.accuracy_factor;
    out << fmt::format("accuracy grid: accuracy factor {}\n",
                       options.accuracy_factor > 0 ? fmt::format("{:g}", options.accuracy_factor) : "off (report only)");
    out << fmt::format("{:>5} {:>6} {:>4} {:>15}  {:>10} {:>10} {:>10} {:>10}  {}\n", "Lq", "Lk", "D", "values", "conf r",
                       "acc max", "acc agg", "tau/|O|", "verdict");
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
            const std::unique_ptr<CaseRun> r = run_case(*backend, c);
            if (r->error) {
              out << fmt::format("{}  FAILED: {}\n", label, *r->error);
              row["error"] = *r->error;
              cases.push_back(row);
              status = kExitFailed;
              continue;
            }
            if (r->declined) {
              out << fmt::format("{}  declined: {}\n", label, *r->declined);
              row["declined"] = *r->declined;
              cases.push_back(row);
              continue;
            }
            compare.data = data_character(kind);
            const Verdict v = compare_attention(c.problem, *r->profile, r->inputs(), r->reference, r->run.out,
                                                r->run.lse ? &*r->run.lse : nullptr, compare);
            const bool passed = v.passed && r->run.memory_findings.empty();
            if (!passed) status = kExitFailed;
            const std::string verdict = passed ? "PASS" : v.accuracy_failed ? "FAIL accuracy" : "FAIL conformance";
            out << fmt::format("{}  {:>10.3g} {:>10.3g} {:>10.3g} {:>10.3g}  {}{}\n", label, v.max_ratio,
                               v.accuracy_max_ratio, v.accuracy_aggregate_ratio, v.guaranteed_relative_accuracy, verdict,
                               passed ? "" : ": " + (r->run.memory_findings.empty() ? v.failure : r->run.memory_findings.front()));
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
  }
  if (json_file) {
    *json_file << nlohmann::json{{"format", "attncheck-characterize"},
                                 {"backend", std::string(backend->name())},
                                 {"dtype", options.dtype},
                                 {"profile", profile->describe()},
                                 {"accuracy_factor", options.accuracy_factor},
                                 {"ladder", options.ladder ? ladder : nlohmann::json(nullptr)},
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
