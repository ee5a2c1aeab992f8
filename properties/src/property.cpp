#include "attncheck/property.h"

#include "attncheck/coverage.h"

#include <fmt/format.h>
#include <rapidcheck.h>

#include <algorithm>

namespace attncheck {
namespace {

// RapidCheck's RC_FAIL prefixes the message with this file's path and line, which says nothing
// to the user; the engine's messages carry their own context, so the result is thrown directly.
[[noreturn]] void fail_case(std::string message) {
  throw rc::detail::CaseResult(rc::detail::CaseResult::Type::Failure, std::move(message));
}

FailureEvidence evidence_of(const AttentionCase& c, const CaseData& data, const NumericsProfile& profile,
                            const BackendRun& run) {
  FailureEvidence e;
  e.attention_case = c;
  e.data = data;
  e.profile = profile;
  e.run_out = run.out;
  e.run_lse = run.lse;
  e.memory_findings = run.memory_findings;
  return e;
}

// What a failed verdict says failed: a convention's NaN, the LSE alone, accuracy, or O.
FailureKind kind_of(const Verdict& verdict, FailureKind relation) {
  if (relation != FailureKind::Output) return relation;
  if (verdict.nonfinite_violations > 0) return FailureKind::NanPlacement;
  if (verdict.accuracy_failed) return FailureKind::Accuracy;
  if (verdict.max_ratio <= 1 && verdict.lse_max_ratio > 1) return FailureKind::Lse;
  return FailureKind::Output;
}

// The isolated child's words (execute.cpp) for a call that died or hung: kinds of their own; any
// other error status of a problem the backend claims to support is a status failure.
FailureKind kind_of_backend_error(const std::string& what) {
  if (what.starts_with("the backend crashed")) return FailureKind::Crash;
  if (what.starts_with("the backend did not return")) return FailureKind::Timeout;
  return FailureKind::Status;
}

// Why `c` is not a case gen_case(dtype, space, kinds) could draw, or nullopt when it is one. Only
// the options matter: a pinned case comes from a draw of this space, made smaller.
std::optional<std::string> outside_space(const AttentionCase& c, DType dtype, const ProblemSpace& space,
                                         const std::vector<ValueKind>& kinds) {
  const Problem& p = c.problem;
  if (c.dtype != dtype) return fmt::format("the pinned case is {}, not {}", dtype_name(c.dtype), dtype_name(dtype));
  if (std::find(kinds.begin(), kinds.end(), c.values) == kinds.end())
    return fmt::format("the property draws no values={}", value_kind_name(c.values));
  auto without = [](std::string_view what) { return fmt::format("the property draws its case without {}", what); };
  if (!space.gqa && p.kv_heads != p.q_heads) return without("MQA/GQA");
  if (!space.causal && (p.causal || p.alignment != Alignment::TopLeft)) return without("causal alignment");
  if (!space.window && p.has_window()) return without("a window");
  if (!space.softcap && p.softcap != 0) return without("softcap");
  if (!space.mask && p.mask != MaskKind::None) return without("a mask");
  if (!space.key_lengths && (p.has_key_lengths || !c.key_lengths.empty())) return without("key lengths");
  if (!space.layouts && c.sequence_major) return without("the [B, L, H, D] layout");
  if (!space.poison && c.poison_masked) return without("poisoned keys");
  if (!space.distinct_dims && p.qk_dim != p.v_dim) return without("Dv ≠ Dk");
  if (!space.custom_scale && p.scale) return without("a custom scale");
  if (!space.alibi && p.has_alibi()) return without("ALiBi");
  if (!space.sinks && p.sinks) return without("sinks");
  if (!space.paged && p.is_paged()) return without("a paged KV cache");
  if (!space.varlen && p.varlen) return without("a packed variable-length batch");
  return std::nullopt;
}

}  // namespace

bool SearchExclusions::empty() const {
  return !lse && !gqa && !causal && !window && !softcap && !mask && !key_lengths && !layouts && !poison &&
         !custom_scale && !alibi && !sinks && !paged && !varlen && values.empty();
}

std::string SearchExclusions::describe() const {
  std::vector<std::string> parts;
  if (lse) parts.emplace_back("the LSE not judged");
  const std::pair<bool, const char*> options[] = {{gqa, "no MQA/GQA"},       {causal, "no causal"},
                                                  {window, "no window"},      {softcap, "no softcap"},
                                                  {mask, "no mask"},          {key_lengths, "no key lengths"},
                                                  {layouts, "no [B, L, H, D] layout"}, {poison, "no poisoned keys"},
                                                  {custom_scale, "the default scale only"}, {alibi, "no ALiBi"},
                                                  {sinks, "no sinks"}, {paged, "no paged KV cache"},
                                                  {varlen, "no packed batch"}};
  for (const auto& [on, text] : options)
    if (on) parts.emplace_back(text);
  for (ValueKind kind : values) parts.push_back(fmt::format("no values={}", value_kind_name(kind)));
  return fmt::format("{}", fmt::join(parts, "; "));
}

ProblemSpace SearchExclusions::apply(ProblemSpace space) const {
  space.gqa = space.gqa && !gqa;
  space.causal = space.causal && !causal;
  space.window = space.window && !window;
  space.softcap = space.softcap && !softcap;
  space.alibi = space.alibi && !alibi;
  space.sinks = space.sinks && !sinks;
  space.paged = space.paged && !paged;
  space.varlen = space.varlen && !varlen;
  space.mask = space.mask && !mask;
  space.key_lengths = space.key_lengths && !key_lengths;
  space.layouts = space.layouts && !layouts;
  space.poison = space.poison && !poison;
  space.custom_scale = space.custom_scale && !custom_scale;
  return space;
}

AttentionCase PropertyContext::draw_case(const ProblemSpace& space, std::vector<ValueKind> kinds) {
  const ProblemSpace narrowed = exclusions_.apply(space);
  if (!exclusions_.values.empty()) {
    // The first kind is the property's plain one; it stays so that a draw is always possible.
    std::vector<ValueKind> kept = {kinds.front()};
    for (std::size_t i = 1; i < kinds.size(); ++i)
      if (std::find(exclusions_.values.begin(), exclusions_.values.end(), kinds[i]) == exclusions_.values.end())
        kept.push_back(kinds[i]);
    kinds = std::move(kept);
  }
  AttentionCase c;
  ++log_.drawn;
  if (pinned_) {
    if (auto why = outside_space(*pinned_, dtype_, narrowed, kinds)) {
      log_.pin_rejected = *why;
      decline(*why);
    }
    c = *pinned_;
  } else {
    c = *gen_case(dtype_, narrowed, kinds);
  }
  log_.current_drawn = c;
  return c;
}

void PropertyContext::note_judgement(const AttentionResult& reference, const Verdict* verdict) {
  if (!record_evidence_ || !log_.current_evidence) return;
  log_.current_evidence->reference = reference;
  if (verdict) log_.current_evidence->verdict = *verdict;
}

void PropertyContext::keep_evidence_of_failure(FailureKind kind, const std::string& message) {
  if (!log_.first_failure_at) log_.first_failure_at = std::chrono::steady_clock::now();
  log_.last_failure_drawn = log_.current_drawn;
  log_.last_failure_kind = kind;
  log_.last_failure_message = message;
  if (!record_evidence_) return;
  log_.last_failure_evidence = log_.current_evidence;
  if (log_.last_failure_evidence) {
    log_.last_failure_evidence->kind = kind;
    log_.last_failure_evidence->message = message;
  }
}

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

bool PropertyContext::supports(const Problem& problem) {
  if (call_options_.isolate && backend_.device().device_type != kDLCPU) return true;  // asked in the child
  try {
    return !backend_.unsupported_reason(problem, dtype_);
  } catch (const BackendError&) {
    return false;
  }
}

NumericsProfile PropertyContext::profile(const Problem& problem) {
  if (!backend_.has_problem_profiles()) return profile_;
  std::optional<NumericsProfile> p;
  try {
    p = backend_.profile(problem, dtype_);
  } catch (const BackendError& e) {
    if (e.status() == kAttncheckNotSupported) decline(e.what());
    fail(problem.describe(), e.what(), FailureKind::Status);
  }
  if (!p) decline(fmt::format("get_problem_profile: no supported profile for this problem with {} inputs", dtype_name(dtype_)));
  return *p;
}

CaseData PropertyContext::case_data(const AttentionCase& c) {
  const NumericsProfile p = profile(c.problem);
  CaseData data = make_case_data(c);
  round_additive_mask(c.problem, data, p.additive_mask_dtype());
  if (p.masked_keys_weighted_by_zero) make_poison_finite(c.problem, data, c.dtype, p.held_key_value_dtype());
  return data;
}

std::array<double, 3> PropertyContext::poison_values(const Problem& problem) {
  const NumericsProfile p = profile(problem);
  return attncheck::poison_values(dtype_, p.masked_keys_weighted_by_zero, p.held_key_value_dtype());
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
    const FailureKind kind = kind_of_backend_error(e.what());
    if (record_evidence_) log_.current_evidence = evidence_of(c, data, profile_for_case, {});
    fail(c.describe(), fmt::format("the backend returned '{}': {}", status_name(e.status()), e.what()), kind);
  }
  if (record_evidence_) log_.current_evidence = evidence_of(c, data, profile_for_case, result);
  if (!result.memory_findings.empty())
    fail(c.describe(), fmt::format("memory probe: {}", fmt::join(result.memory_findings, "; ")), FailureKind::Memory);
  return result;
}

void PropertyContext::classify(const AttentionCase& c) {
  if (case_filter_ && !case_filter_(c.describe())) {
    ++log_.filtered;
    throw rc::detail::CaseResult(rc::detail::CaseResult::Type::Discard, "the problem filter rejects this case");
  }
  pending_cells_ = coverage_cells_of(c);  // coverage.h names the cells
}

void PropertyContext::finish_case() {
  for (const std::string& cell : pending_cells_) ++log_.coverage[cell];
  pending_cells_.clear();
}

void PropertyContext::expect(const Verdict& verdict, const AttentionCase& c, std::string_view what, FailureKind relation) {
  expect(verdict, c.describe(), what, relation);
}

CompareOptions PropertyContext::compare_options(DataCharacter data) const {
  CompareOptions options;
  options.data = data;
  options.accuracy = accuracy_factor_.has_value();
  options.accuracy_factor = accuracy_factor_.value_or(0.0);
  return options;
}

void PropertyContext::expect(const Verdict& verdict, const std::string& description, std::string_view what,
                             FailureKind relation) {
  // A drawn case whose reference is zero wherever a row attends a key (V = 0 on every key it
  // reaches) checks nothing: it is declined, not failed, and another is drawn (numerics §4.2). A
  // pinned case gets the same decline, which says why.
  if (!verdict.passed && verdict.all_zero_reference)
    decline(fmt::format("{}: the reference output is all zeros on every row with an allowed key (the drawn values make "
                        "a check that cannot fail)", what));
  ++log_.evaluated;
  note_ratio(verdict.max_ratio, description);
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
    const std::string message = fmt::format("{}: {}", what, verdict.summary());
    keep_evidence_of_failure(kind_of(verdict, relation), message);
    if (log_.last_failure_evidence && relation == FailureKind::Output) log_.last_failure_evidence->verdict = verdict;
    fail_case(fmt::format("{}\n  case: {}", message, description));
  }
}

void PropertyContext::note_ratio(double ratio, const std::string& description) {
  if (log_.worst_case.empty() || ratio > log_.worst_ratio) {
    log_.worst_ratio = std::max(log_.worst_ratio, ratio);
    log_.worst_case = description;
  }
}

void PropertyContext::expect(const GradientVerdict& verdict, const AttentionCase& c, std::string_view what,
                             FailureKind relation) {
  ++log_.evaluated;
  const std::string description = c.describe();
  note_ratio(verdict.max_ratio, description);
  // No forward Verdict describes a gradient failure: the message carries the verdict's summary
  // (the tensor, the element, the error against τ), as a probe's message does.
  if (!verdict.passed) fail(description, fmt::format("{}: {}", what, verdict.summary()), relation);
}

void PropertyContext::fail(const AttentionCase& c, const std::string& message, FailureKind kind) {
  fail(c.describe(), message, kind);
}

void PropertyContext::fail(const std::string& description, const std::string& message, FailureKind kind) {
  log_.last_failure_case = description;
  log_.last_failure_verdict.reset();
  keep_evidence_of_failure(kind, message);
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
    fail(description, fmt::format("the backend's layer returned '{}': {}", status_name(e.status()), e.what()),
         FailureKind::Status);
  }
  if (!result.memory_findings.empty())
    fail(description, fmt::format("memory probe: {}", fmt::join(result.memory_findings, "; ")), FailureKind::Memory);
  return result;
}

BackwardProfile PropertyContext::backward_profile(const Problem& problem) {
  if (!backend_.has_backward()) decline("the backend has no backward pass");
  // The forward's supports() first: its reason ("float32 inputs only") says more than a
  // get_backward_profile that only declines.
  require_supported(problem);
  std::optional<BackwardProfile> p;
  try {
    p = backend_.backward_profile(problem, dtype_);
  } catch (const BackendError& e) {
    if (e.status() == kAttncheckNotSupported) decline(e.what());
    fail(problem.describe(), e.what(), FailureKind::Status);
  }
  if (!p)
    decline(fmt::format("get_backward_profile: the backward pass does not take this problem with {} inputs",
                        dtype_name(dtype_)));
  return *p;
}

BackwardRun PropertyContext::run_backward(const AttentionCase& c, const CaseData& data, const BackwardData& backward,
                                          bool want_d_bias, const RunOptions& options) {
  const BackwardProfile backward_profile_for_case = backward_profile(c.problem);  // requires support first
  const NumericsProfile profile_for_case = profile(c.problem);
  RunOptions opts = options;
  opts.sequence_major = c.sequence_major;
  opts.isolate = call_options_.isolate;
  opts.timeout_seconds = call_options_.timeout_seconds;
  BackwardRun result;
  try {
    result = run_backend_backward(backend_, c.problem, profile_for_case, backward_profile_for_case,
                                  data.inputs(c.problem), backward, want_d_bias, opts);
  } catch (const BackendError& e) {
    if (e.status() == kAttncheckNotSupported) decline(e.what());
    fail(c.describe(), fmt::format("the backend's backward returned '{}': {}", status_name(e.status()), e.what()),
         kind_of_backend_error(e.what()));
  }
  if (!result.memory_findings.empty())
    fail(c.describe(), fmt::format("memory probe of the backward call: {}", fmt::join(result.memory_findings, "; ")),
         FailureKind::Memory);
  return result;
}

}  // namespace attncheck
