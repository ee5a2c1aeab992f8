#include "attncheck/engine.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <rapidcheck.h>

namespace attncheck {

const std::vector<SuiteProfile>& suite_profiles() {
  static const std::vector<SuiteProfile> profiles = {
      {"quick", 30, 60, {1, 1}},
      {"standard", 100, 100, {15, 10}},
      {"exhaustive", 1000, 100, {15, 10}},
  };
  return profiles;
}

std::optional<SuiteProfile> find_suite_profile(std::string_view name) {
  for (const auto& p : suite_profiles())
    if (p.name == name) return p;
  return std::nullopt;
}

std::optional<SizeMix> size_mix_for_class(std::string_view name) {
  if (name == "small") return SizeMix{0, 0};
  if (name == "medium") return SizeMix{60, 0};
  if (name == "long") return SizeMix{0, 60};
  if (name == "all") return SizeMix{33, 33};
  return std::nullopt;
}

std::string_view outcome_status_name(OutcomeStatus status) {
  switch (status) {
    case OutcomeStatus::Passed: return "passed";
    case OutcomeStatus::Failed: return "failed";
    case OutcomeStatus::Skipped: return "skipped";
  }
  return "?";
}

namespace {

// Without a listener RapidCheck stays silent: the engine reports through PropertyOutcome.
class QuietListener : public rc::detail::TestListener {
 public:
  void onTestCaseFinished(const rc::detail::CaseDescription&) override {}
  void onShrinkTried(const rc::detail::CaseDescription&, bool) override {}
  void onTestFinished(const rc::detail::TestMetadata&, const rc::detail::TestResult&) override {}
};

std::string encode_reproduce(const std::string& id, const rc::detail::Reproduce& reproduce, std::uint64_t seed) {
  rc::detail::Configuration config;
  config.testParams.seed = seed;
  config.reproduce[id] = reproduce;
  return rc::detail::configToMinimalString(config);
}

}  // namespace

PropertyOutcome run_property(const PropertyDef& property, Backend& backend, DType dtype, const RunSettings& settings) {
  const auto start = std::chrono::steady_clock::now();
  PropertyOutcome outcome;
  outcome.property = property.name;
  outcome.backend = std::string(backend.name());
  outcome.dtype = dtype;
  outcome.seed = settings.seed;
  auto finish = [&](OutcomeStatus status, std::string message) {
    outcome.status = status;
    outcome.message = std::move(message);
    outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return outcome;
  };

  std::optional<NumericsProfile> profile;
  try {
    profile = backend.profile(dtype);
  } catch (const std::exception& e) {
    return finish(OutcomeStatus::Failed, fmt::format("get_profile failed: {}", e.what()));
  }
  if (!profile) return finish(OutcomeStatus::Skipped, fmt::format("{} inputs are not supported", dtype_name(dtype)));
  if (property.needs_layer && !backend.has_layer())
    return finish(OutcomeStatus::Skipped, "the backend has no layer entry point (forward_layer is NULL)");

  if (property.skip_reason) {
    if (std::string reason = property.skip_reason(*profile); !reason.empty()) return finish(OutcomeStatus::Skipped, reason);
  }

  CaseLog log;
  RunOptions call_options;
  call_options.isolate = settings.isolate;
  call_options.timeout_seconds = settings.timeout_seconds;
  PropertyContext context(backend, dtype, *profile, log, settings.problem_filter, call_options,
                          property.size_agnostic ? settings.sizes : SizeMix{});
  if (settings.accuracy_factor) context.measure_accuracy(*settings.accuracy_factor);
  rc::detail::TestMetadata metadata;
  metadata.id = property.name;
  metadata.description = property.why;
  rc::detail::TestParams params;
  params.seed = settings.seed;
  params.maxSuccess = settings.cases;
  params.maxSize = settings.max_size;
  params.disableShrinking = !settings.shrink;
  params.maxDiscardRatio = 20;
  std::unordered_map<std::string, rc::detail::Reproduce> reproduce_map;
  if (!settings.reproduce.empty()) {
    try {
      const auto config = rc::detail::configFromString(settings.reproduce);
      reproduce_map = config.reproduce;
      if (reproduce_map.find(property.name) == reproduce_map.end())
        return finish(OutcomeStatus::Skipped, "the reproduce string replays another property");
    } catch (const std::exception& e) {
      return finish(OutcomeStatus::Failed, fmt::format("cannot parse the reproduce string: {}", e.what()));
    }
  }

  QuietListener listener;
  const auto body = property.body;
  // A case counts towards coverage once it was judged: it passed, or failed in any way; a
  // discarded case (declined, filtered) was never looked at.
  const auto judged_body = [&context, body] {
    context.begin_case();
    try {
      body(context);
    } catch (const rc::detail::CaseResult& result) {
      if (result.type != rc::detail::CaseResult::Type::Discard) context.finish_case();
      throw;
    } catch (...) {
      context.finish_case();
      throw;
    }
    context.finish_case();
  };
  const auto result =
      rc::detail::checkProperty(rc::detail::toProperty(judged_body), metadata, params, listener, reproduce_map);

  outcome.worst_ratio = log.worst_ratio;
  outcome.worst_case = log.worst_case;
  if (log.accuracy_measured) outcome.worst_accuracy_ratio = log.worst_accuracy_ratio;
  outcome.worst_accuracy_case = log.worst_accuracy_case;
  outcome.worst_guaranteed_relative_accuracy = log.worst_guaranteed_relative_accuracy;
  outcome.coverage = log.coverage;
  outcome.cases_skipped = log.skipped;
  outcome.cases_filtered = log.filtered;
  outcome.decline_reasons = log.decline_reasons;
  rc::detail::SuccessResult success;
  rc::detail::FailureResult failure;
  rc::detail::GaveUpResult gave_up;
  if (result.match(success)) {
    outcome.cases_passed = success.numSuccess;
    return finish(OutcomeStatus::Passed, "");
  }
  if (result.match(failure)) {
    outcome.cases_passed = failure.numSuccess;
    outcome.shrunk_case = log.last_failure_case;
    outcome.shrunk_verdict = log.last_failure_verdict;
    outcome.accuracy_failure = log.last_failure_verdict && log.last_failure_verdict->accuracy_failed;
    outcome.reproduce = encode_reproduce(property.name, failure.reproduce, settings.seed);
    return finish(OutcomeStatus::Failed, failure.description);
  }
  if (result.match(gave_up)) {
    outcome.cases_passed = gave_up.numSuccess;
    // Declined problems are skips, not failures: a backend that supports few of the drawn
    // problems is reported with how many it did check, and why it turned the rest away. A
    // filter that admits nothing is the user's choice, not the backend's, and is said so.
    std::string why;
    if (log.skipped > 0)
      why = fmt::format("the backend declined {} of the drawn cases ({} checked): {}", log.skipped, gave_up.numSuccess,
                        describe_decline_reasons(log.decline_reasons));
    if (log.filtered > 0)
      why += fmt::format("{}the --problem filter rejected {} drawn case(s){}", why.empty() ? "" : "; ", log.filtered,
                         gave_up.numSuccess == 0 && log.skipped == 0 ? " and matched none" : "");
    if (why.empty()) why = "every drawn case was discarded";
    return finish(gave_up.numSuccess > 0 ? OutcomeStatus::Passed : OutcomeStatus::Skipped, why);
  }
  rc::detail::Error error;
  if (result.match(error)) {
    // Replaying a reproduce string, RapidCheck reports a case that no longer fails as an Error
    // with this description (its only way to say so): the replayed case passed on this backend,
    // which is what checking a finding against another kernel asks. Any other Error (the case
    // could not be regenerated) stays a failure, with RapidCheck's words.
    if (!reproduce_map.empty() && error.description == "Reproduced result is not a failure") {
      outcome.cases_passed = 1;
      return finish(OutcomeStatus::Passed, "");
    }
    return finish(OutcomeStatus::Failed, "RapidCheck: " + error.description);
  }
  return finish(OutcomeStatus::Failed, "RapidCheck returned an unknown result");
}

std::string describe_decline_reasons(const std::map<std::string, int>& reasons, std::size_t at_most) {
  std::vector<std::pair<std::string, int>> sorted(reasons.begin(), reasons.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string text;
  for (std::size_t i = 0; i < sorted.size() && i < at_most; ++i)
    text += fmt::format("{}{} ({}\u00d7)", i == 0 ? "" : "; ", sorted[i].first, sorted[i].second);
  if (sorted.size() > at_most) text += fmt::format("; and {} other reason(s)", sorted.size() - at_most);
  return text;
}

std::optional<std::string> reproduce_string_problem(const std::string& text) {
  try {
    const auto config = rc::detail::configFromString(text);
    if (config.reproduce.empty()) return fmt::format("'{}' holds no reproduce=… entry", text);
  } catch (const std::exception& e) {
    return fmt::format("'{}' is not a reproduce string: {}", text, e.what());
  }
  return std::nullopt;
}

namespace {

// Quoted for a POSIX shell when it has to be: a path with spaces or quotes survives copy and
// paste, and a plain name stays readable.
std::string shell_quote(const std::string& text) {
  const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || std::strchr("_@%+=:,./-", ch) != nullptr;
  });
  if (plain) return text;
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

}  // namespace

std::string reproduce_command(const PropertyOutcome& outcome, const std::string& backend_spec) {
  return fmt::format("attncheck run --backend {} --property {} --dtype {} --seed {} --reproduce {}", shell_quote(backend_spec),
                     shell_quote("^" + outcome.property + "$"), dtype_name(outcome.dtype), outcome.seed,
                     shell_quote(outcome.reproduce));
}

std::string finding_reproduce_command(const PropertyOutcome& outcome, const FailureFinding& finding,
                                      const std::string& backend_spec) {
  return fmt::format("attncheck run --backend {} --property {} --dtype {} --seed {} --case {}", shell_quote(backend_spec),
                     shell_quote("^" + outcome.property + "$"), dtype_name(outcome.dtype), outcome.seed,
                     shell_quote(finding.pinned_case));
}

}  // namespace attncheck
