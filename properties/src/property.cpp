#include "attncheck/property.h"

#include <fmt/format.h>
#include <rapidcheck.h>

namespace attncheck {
namespace {

// RapidCheck's RC_FAIL prefixes the message with this file's path and line, which says nothing
// to the user; the engine's messages carry their own context, so the result is thrown directly.
[[noreturn]] void fail_case(std::string message) {
  throw rc::detail::CaseResult(rc::detail::CaseResult::Type::Failure, std::move(message));
}

}  // namespace

void PropertyContext::decline(const std::string& reason) {
  ++log_.skipped;
  ++log_.decline_reasons[reason];
  throw rc::detail::CaseResult(rc::detail::CaseResult::Type::Discard, reason);
}

void PropertyContext::require_supported(const Problem& problem) {
  if (call_options_.isolate && backend_.device().device_type != kDLCPU) return;  // asked in the child
  std::optional<std::string> reason;
  try {
    reason = backend_.unsupported_reason(problem, dtype_);
  } catch (const BackendError& e) {
    reason = e.what();
  }
  if (reason) decline(*reason);
}

NumericsProfile PropertyContext::profile(const Problem& problem) {
  if (!backend_.has_problem_profiles()) return profile_;
  std::optional<NumericsProfile> p;
  try {
    p = backend_.profile(problem, dtype_);
  } catch (const BackendError& e) {
    if (e.status() == kAttncheckNotSupported) decline(e.what());
    fail(problem.describe(), e.what());
  }
  if (!p) decline(fmt::format("get_problem_profile: no supported profile for this problem with {} inputs", dtype_name(dtype_)));
  return *p;
}

CaseData PropertyContext::case_data(const AttentionCase& c) {
  const NumericsProfile p = profile(c.problem);
  CaseData data = make_case_data(c);
  round_additive_mask(c.problem, data, p.additive_mask_dtype());
  if (p.masked_keys_weighted_by_zero) make_poison_finite(c.problem, data, c.dtype);
  return data;
}

std::array<double, 3> PropertyContext::poison_values(const Problem& problem) {
  return attncheck::poison_values(dtype_, profile(problem).masked_keys_weighted_by_zero);
}

BackendRun PropertyContext::run(const AttentionCase& c, const CaseData& data, const RunOptions& options) {
  require_supported(c.problem);
  const NumericsProfile profile_for_case = profile(c.problem);
  RunOptions opts = options;
  opts.sequence_major = c.sequence_major;
  opts.isolate = call_options_.isolate;
  opts.timeout_seconds = call_options_.timeout_seconds;
  BackendRun result;
  try {
    result = run_backend(backend_, c.problem, profile_for_case, data.inputs(c.problem), opts);
  } catch (const BackendError& e) {
    if (e.status() == kAttncheckNotSupported) decline(e.what());
    fail(c, fmt::format("the backend returned '{}': {}", status_name(e.status()), e.what()));
  }
  if (!result.memory_findings.empty()) fail(c, fmt::format("memory probe: {}", fmt::join(result.memory_findings, "; ")));
  return result;
}

void PropertyContext::classify(const AttentionCase& c) {
  if (case_filter_ && !case_filter_(c.describe())) {
    ++log_.filtered;
    throw rc::detail::CaseResult(rc::detail::CaseResult::Type::Discard, "the problem filter rejects this case");
  }
  const Problem& p = c.problem;
  const char* variant = p.kv_heads == p.q_heads ? "mha" : p.kv_heads == 1 ? "mqa" : "gqa";
  const std::string causal = p.causal ? std::string(alignment_name(p.alignment)) : std::string("none");
  pending_cells_.push_back(fmt::format("{} {} mask={} causal={}", variant, dtype_name(c.dtype), mask_kind_name(p.mask), causal));
  // The size class is a cell of its own ("size=long"): whether the run reached the kernel's
  // long-row paths at all, counted beside the variant cells rather than multiplying them.
  pending_cells_.push_back(fmt::format("size={}", size_class_name(size_class_of(p))));
}

void PropertyContext::finish_case() {
  for (const std::string& cell : pending_cells_) ++log_.coverage[cell];
  pending_cells_.clear();
}

void PropertyContext::expect(const Verdict& verdict, const AttentionCase& c, std::string_view what) {
  expect(verdict, c.describe(), what);
}

CompareOptions PropertyContext::compare_options(DataCharacter data) const {
  CompareOptions options;
  options.data = data;
  options.accuracy = accuracy_factor_.has_value();
  options.accuracy_factor = accuracy_factor_.value_or(0.0);
  return options;
}

void PropertyContext::expect(const Verdict& verdict, const std::string& description, std::string_view what) {
  ++log_.evaluated;
  if (log_.worst_case.empty() || verdict.max_ratio > log_.worst_ratio) {
    log_.worst_ratio = std::max(log_.worst_ratio, verdict.max_ratio);
    log_.worst_case = description;
  }
  log_.worst_guaranteed_relative_accuracy =
      std::max(log_.worst_guaranteed_relative_accuracy, verdict.guaranteed_relative_accuracy);
  if (verdict.accuracy_checked) {
    const double ratio = std::max(verdict.accuracy_max_ratio, verdict.accuracy_aggregate_ratio);
    if (!log_.accuracy_measured || ratio > log_.worst_accuracy_ratio) {
      log_.worst_accuracy_ratio = ratio;
      log_.worst_accuracy_case = description;
    }
    log_.accuracy_measured = true;
  }
  if (!verdict.passed) {
    log_.last_failure_verdict = verdict;
    log_.last_failure_case = description;
    fail_case(fmt::format("{}: {}\n  case: {}", what, verdict.summary(), description));
  }
}

void PropertyContext::fail(const AttentionCase& c, const std::string& message) { fail(c.describe(), message); }

void PropertyContext::fail(const std::string& description, const std::string& message) {
  log_.last_failure_case = description;
  log_.last_failure_verdict.reset();
  fail_case(fmt::format("{}\n  case: {}", message, description));
}

BackendRun PropertyContext::run_layer(const LayerProblem& problem, const std::string& description,
                                      const LayerInputs& inputs) {
  require_supported(problem.attention);
  BackendRun result;
  try {
    result = run_backend_layer(backend_, problem, profile(problem.attention), inputs, call_options_);
  } catch (const BackendError& e) {
    if (e.status() == kAttncheckNotSupported) decline(e.what());
    fail(description, fmt::format("the backend's layer returned '{}': {}", status_name(e.status()), e.what()));
  }
  if (!result.memory_findings.empty())
    fail(description, fmt::format("memory probe: {}", fmt::join(result.memory_findings, "; ")));
  return result;
}

}  // namespace attncheck
