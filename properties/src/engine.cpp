#include "attncheck/engine.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <rapidcheck.h>

#include "attncheck/diagnosis.h"
#include "attncheck/simplify.h"
#include "attncheck/tolerance.h"

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

// How one search of a property runs beyond the run's settings: the first search draws freely;
// the simplifier's replays pin a case; a search for a further bug excludes the earlier causes.
struct SearchControl {
  std::optional<AttentionCase> pinned;
  SearchExclusions exclusions;
  bool record_evidence = false;
  bool shrink = true;
  int cases = 30;
  std::string reproduce;  ///< RapidCheck's string to replay (the first search only)
};

PropertyOutcome search(const PropertyDef& property, Backend& backend, DType dtype, const RunSettings& settings,
                       const SearchControl& control, CaseLog& log) {
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

  if (!runs_on(property, dtype))
    return finish(OutcomeStatus::Skipped, property.fp8_inputs ? fmt::format("runs on fp8 (e4m3, e5m2) inputs, not {}", dtype_name(dtype))
                                                              : fmt::format("{} inputs are judged by the fp8 family only", dtype_name(dtype)));
  std::optional<NumericsProfile> profile;
  try {
    profile = backend.profile(dtype);
  } catch (const std::exception& e) {
    return finish(OutcomeStatus::Failed, fmt::format("get_profile failed: {}", e.what()));
  }
  if (!profile) return finish(OutcomeStatus::Skipped, fmt::format("{} inputs are not supported", dtype_name(dtype)));
  if (property.needs_layer && !backend.has_layer())
    return finish(OutcomeStatus::Skipped, "the backend has no layer entry point (forward_layer is NULL)");
  if (property.needs_backward && !backend.has_backward())
    return finish(OutcomeStatus::Skipped, "the backend has no backward pass");

  if (property.skip_reason) {
    if (std::string reason = property.skip_reason(*profile); !reason.empty()) return finish(OutcomeStatus::Skipped, reason);
  }

  RunOptions call_options;
  call_options.isolate = settings.isolate;
  call_options.timeout_seconds = settings.timeout_seconds;
  PropertyContext context(backend, dtype, *profile, log, settings.problem_filter, call_options,
                          property.size_agnostic ? settings.sizes : SizeMix{});
  if (settings.accuracy_factor) context.measure_accuracy(*settings.accuracy_factor);
  context.pin(control.pinned);
  context.exclude(control.exclusions);
  context.record_evidence(control.record_evidence);
  if (control.pinned && property.needs_layer) return finish(OutcomeStatus::Skipped, "a pinned attention case does not apply to a layer property");
  rc::detail::TestMetadata metadata;
  metadata.id = property.name;
  metadata.description = property.why;
  rc::detail::TestParams params;
  params.seed = property_seed(settings.seed, property.name);
  params.maxSuccess = control.cases;
  params.maxSize = settings.max_size;
  params.disableShrinking = !control.shrink;
  params.maxDiscardRatio = 20;
  std::unordered_map<std::string, rc::detail::Reproduce> reproduce_map;
  if (!control.reproduce.empty()) {
    try {
      const auto config = rc::detail::configFromString(control.reproduce);
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
  if (control.pinned && log.drawn == 0)
    return finish(OutcomeStatus::Skipped, "the property builds its own cases: a pinned case does not apply");
  if (control.pinned && !log.pin_rejected.empty() && log.evaluated == 0 && !result.is<rc::detail::FailureResult>())
    return finish(OutcomeStatus::Skipped, "the pinned case does not fit this property: " + log.pin_rejected);

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

// A pinned case is run this many times, RapidCheck drawing the property's other choices (which
// row to perturb, which hard input): the same number in the simplifier and in `--case`, so that
// a finding's reproduce command replays exactly the draws that failed.
constexpr int kPinnedCaseDraws = 10;
// Passes of the simplifier over a case; each kept step makes it strictly smaller, so this only
// bounds the time a case with very many options can take.
constexpr int kMaxSimplificationSteps = 64;

bool fails_pinned(const PropertyDef& property, Backend& backend, DType dtype, const RunSettings& settings,
                  const AttentionCase& pinned, const SearchExclusions& exclusions, FailureKind kind) {
  CaseLog log;
  const PropertyOutcome outcome =
      search(property, backend, dtype, settings, {pinned, exclusions, false, false, kPinnedCaseDraws}, log);
  // The same property failing the same way: a step that turns a wrong output into a crash has
  // found another bug, not a smaller case of this one.
  return outcome.status == OutcomeStatus::Failed && log.last_failure_kind == kind;
}

// τ and the reference where the property did not compute them, and the verdict of the kernel's
// O against the reference, so that every evidence reads the same way.
void complete_evidence(FailureEvidence& e, Backend& backend, const RunSettings& settings) {
  const Problem& problem = e.attention_case.problem;
  const AttentionInputs inputs = e.data.inputs(problem);
  if (e.reference.out.values.empty() || !e.reference.stats) {
    ReferenceOptions options;
    options.row_statistics = true;
    e.reference = reference_attention(problem, inputs, options);
  }
  const ToleranceModel model(problem, e.profile, data_character(e.attention_case.values), inputs);
  e.tau = model.tau_tensor(e.reference);
  if (!e.run_out.values.empty() && e.run_out.shape == e.reference.out.shape) {
    CompareOptions options;
    options.data = data_character(e.attention_case.values);
    e.verdict = compare_attention(problem, e.profile, inputs, e.reference, e.run_out, e.run_lse ? &*e.run_lse : nullptr, options);
    // A kernel that declares determinism must return the same bits for the same inputs: a few
    // more runs tell a failure that is noise from one that is arithmetic (on a minimal case a
    // random reduction order often lands on the same bits; kRuns of them rarely all do).
    if (e.profile.deterministic) {
      constexpr int kRuns = 8;
      RunOptions again;
      again.sequence_major = e.attention_case.sequence_major;
      again.isolate = settings.isolate;
      again.timeout_seconds = settings.timeout_seconds;
      try {
        for (int n = 0; n < kRuns; ++n) {
          e.rerun_out = run_backend(backend, problem, e.profile, inputs, again).out;
          if (std::memcmp(e.rerun_out->values.data(), e.run_out.values.data(), e.run_out.values.size() * sizeof(double)) != 0)
            break;
        }
      } catch (const std::exception&) {
        // The first run returned; a later one that does not is not evidence about determinism.
      }
    }
  }
}

// A hypothesis needs a case that can tell it from the truth: on a 1-minimal case of one column
// or one key, "each row of O off by a constant factor" fits any output. When nothing explains
// the minimal case, the engine diagnoses a wider neighbour (at least 2 query rows, 3 keys and 4
// columns) that still fails the same way, and says so.
std::optional<AttentionCase> wider_case(const AttentionCase& c) {
  AttentionCase wide = c;
  Problem& p = wide.problem;
  const Problem before = p;
  p.q_len = std::max<std::int64_t>(p.q_len, 2);
  p.k_len = std::max<std::int64_t>(p.k_len, 3);
  p.qk_dim = std::max<std::int64_t>(p.qk_dim, 4);
  p.v_dim = std::max<std::int64_t>(p.v_dim, 4);
  if (p.mask != MaskKind::None) {
    if (p.mask_q_len == before.q_len) p.mask_q_len = p.q_len;
    if (p.mask_k_len == before.k_len) p.mask_k_len = p.k_len;
  }
  if (wide.describe() == c.describe()) return std::nullopt;
  try {
    p.validate();
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return wide;
}

std::string signature(const FailureFinding& finding) {
  std::string text(failure_kind_name(finding.kind));
  for (const Diagnosis& d : finding.diagnoses) text += " " + d.hypothesis;
  return text;
}

// The finding of a search that failed: its case made 1-minimal, replayed once more keeping the
// evidence, and diagnosed.
FailureFinding make_finding(const PropertyDef& property, Backend& backend, DType dtype, const RunSettings& settings,
                            const CaseLog& failed, const SearchExclusions& exclusions) {
  FailureFinding finding;
  finding.kind = failed.last_failure_kind;
  finding.message = failed.last_failure_message;
  finding.minimal_case = failed.last_failure_case;
  finding.verdict = failed.last_failure_verdict;
  finding.excluded = exclusions.describe();
  // A layer case has no drawn attention case: RapidCheck's shrunk case is the finding. A replay of
  // a reproduce string simplifies as the search did, so it reports the same minimal case.
  if (!failed.last_failure_drawn) return finding;

  AttentionCase drawn = *failed.last_failure_drawn;
  if (settings.simplify && !settings.pinned_case) {
    for (int kept = 0; kept < kMaxSimplificationSteps; ++kept) {
      bool improved = false;
      for (SimplificationStep& step : simplification_steps(drawn)) {
        if (!fails_pinned(property, backend, dtype, settings, step.result, exclusions, finding.kind)) continue;
        finding.simplifications.push_back(step.what);
        drawn = std::move(step.result);
        improved = true;
        break;  // the steps of the smaller case are new: start over from them
      }
      if (!improved) break;
    }
  }
  finding.pinned_case = drawn.describe();

  CaseLog replay;
  const PropertyOutcome outcome =
      search(property, backend, dtype, settings, {drawn, exclusions, true, true, kPinnedCaseDraws}, replay);
  if (outcome.status != OutcomeStatus::Failed) {
    // The pinned replay passed where the search failed (a kernel whose output varies between
    // runs): the finding keeps the shrunk case, and says so.
    finding.message += " (the failure did not recur when its case was replayed)";
    return finding;
  }
  finding.kind = replay.last_failure_kind;
  finding.message = replay.last_failure_message;
  finding.minimal_case = replay.last_failure_case;
  finding.verdict = replay.last_failure_verdict;
  if (replay.last_failure_evidence) {
    FailureEvidence evidence = *replay.last_failure_evidence;
    try {
      complete_evidence(evidence, backend, settings);
      finding.diagnoses = diagnose(evidence);
      finding.evidence = std::move(evidence);
    } catch (const std::exception& e) {
      finding.message += fmt::format(" (no diagnosis: {})", e.what());
    }
  }
  if (finding.diagnoses.empty())
    if (const auto wide = wider_case(drawn)) {
      CaseLog neighbour;
      const PropertyOutcome wide_outcome =
          search(property, backend, dtype, settings, {*wide, exclusions, true, false, kPinnedCaseDraws}, neighbour);
      if (wide_outcome.status == OutcomeStatus::Failed && neighbour.last_failure_kind == finding.kind &&
          neighbour.last_failure_evidence) {
        FailureEvidence evidence = *neighbour.last_failure_evidence;
        try {
          complete_evidence(evidence, backend, settings);
          for (Diagnosis d : diagnose(evidence)) {
            d.statement += fmt::format(" (seen on the wider case {})", evidence.attention_case.describe());
            finding.diagnoses.push_back(std::move(d));
          }
        } catch (const std::exception&) {
          // The minimal case stays undiagnosed; its evidence is unchanged.
        }
      }
    }
  return finding;
}

// The causes of a finding, to leave out of the next search: its minimal case's options (each is
// needed for the failure, the case being 1-minimal), or the LSE when that is what failed.
SearchExclusions exclusions_after(const FailureFinding& finding, SearchExclusions exclusions) {
  if (finding.kind == FailureKind::Lse) exclusions.lse = true;
  if (finding.pinned_case.empty()) return exclusions;
  const AttentionCase c = parse_case(finding.pinned_case);
  for (const std::string& option : removable_options(c)) {
    if (option == "softcap") exclusions.softcap = true;
    else if (option == "alibi") exclusions.alibi = true;
    else if (option == "sinks") exclusions.sinks = true;
    else if (option == "window") exclusions.window = true;
    else if (option == "mask") exclusions.mask = true;
    else if (option == "key-lengths") exclusions.key_lengths = true;
    else if (option == "poison") exclusions.poison = true;
    else if (option == "layout") exclusions.layouts = true;
    else if (option == "causal" || option == "alignment") exclusions.causal = true;
    else if (option == "gqa") exclusions.gqa = true;
    else if (option == "scale") exclusions.custom_scale = true;
    else if (option == "values" && std::find(exclusions.values.begin(), exclusions.values.end(), c.values) == exclusions.values.end())
      exclusions.values.push_back(c.values);
  }
  return exclusions;
}

bool same_exclusions(const SearchExclusions& a, const SearchExclusions& b) { return a.describe() == b.describe(); }

}  // namespace

PropertyOutcome run_property(const PropertyDef& property, Backend& backend, DType dtype, const RunSettings& settings) {
  const auto start = std::chrono::steady_clock::now();
  CaseLog log;
  PropertyOutcome outcome = search(property, backend, dtype, settings,
                                   {settings.pinned_case, {}, false, settings.shrink,
                                    settings.pinned_case ? kPinnedCaseDraws : settings.cases, settings.reproduce},
                                   log);
  if (outcome.status != OutcomeStatus::Failed || outcome.message.starts_with("RapidCheck") ||
      outcome.message.starts_with("get_profile failed") || outcome.message.starts_with("cannot parse"))
    return outcome;

  // Caught when the first failing case was judged; a failure that threw past the context (no
  // time on record) counts the whole search.
  outcome.seconds_to_failure =
      log.first_failure_at ? std::chrono::duration<double>(*log.first_failure_at - start).count() : outcome.seconds;
  // Every distinct failure, each searched for with the causes of the earlier ones left out, up
  // to max_findings; a search that finds one already reported (the same kind and diagnosis) ends it.
  SearchExclusions exclusions;
  CaseLog failed = std::move(log);
  for (int n = 0; n < std::max(1, settings.max_findings); ++n) {
    FailureFinding finding = make_finding(property, backend, dtype, settings, failed, exclusions);
    const bool repeat = std::any_of(outcome.failures.begin(), outcome.failures.end(),
                                    [&](const FailureFinding& f) { return signature(f) == signature(finding); });
    if (repeat) break;
    outcome.failures.push_back(std::move(finding));
    if (settings.pinned_case || !settings.reproduce.empty()) break;
    const SearchExclusions next = exclusions_after(outcome.failures.back(), exclusions);
    if (same_exclusions(next, exclusions)) break;  // the failure needs no option: nothing left to exclude
    exclusions = next;
    CaseLog again;
    const PropertyOutcome further = search(property, backend, dtype, settings, {{}, exclusions, false, true, settings.cases}, again);
    if (further.status != OutcomeStatus::Failed) break;
    failed = std::move(again);
  }

  const FailureFinding& first = outcome.failures.front();
  outcome.shrunk_case = first.minimal_case;
  outcome.shrunk_verdict = first.verdict;
  outcome.accuracy_failure = first.kind == FailureKind::Accuracy;
  outcome.message = first.message;
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return outcome;
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

std::uint64_t property_seed(std::uint64_t run_seed, std::string_view name) {
  std::uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a, 64 bits
  for (const char ch : name) hash = (hash ^ static_cast<unsigned char>(ch)) * 0x100000001b3ull;
  std::uint64_t z = run_seed + hash + 0x9e3779b97f4a7c15ull;  // SplitMix64's finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace attncheck
