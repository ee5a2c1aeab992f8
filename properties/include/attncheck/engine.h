/// \file engine.h
/// \brief The engine: runs properties against a backend and returns structured outcomes.
///
/// The gtest suite in properties/tests, the `attncheck run` command and the CMake function all
/// call run_property; nothing else decides how a property is run.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "attncheck/evidence.h"
#include "attncheck/property.h"

namespace attncheck {

/// How hard to look: cases per property and the largest RapidCheck size.
struct SuiteProfile {
  std::string name;
  int cases = 30;
  int max_size = 60;
  SizeMix sizes;  ///< medium and long problems drawn by size-agnostic properties
};
/// quick (30 cases, size ≤ 60, 1 % medium, 1 % long: a medium and a long case in about every
/// third property, so the run keeps its time), standard (100, 100, 15 % medium, 10 %
/// long) and exhaustive (1000, 100, the
/// same mix).
const std::vector<SuiteProfile>& suite_profiles();
std::optional<SuiteProfile> find_suite_profile(std::string_view name);

struct RunSettings {
  int cases = 30;
  int max_size = 60;
  SizeMix sizes;  ///< for size-agnostic properties (PropertyDef::size_agnostic); others draw small sizes
  /// The run's seed. Each property draws from this seed mixed with its name (property_seed), so
  /// that the properties of one run explore different problems rather than the same 30 each.
  std::uint64_t seed = 0;
  bool shrink = true;
  /// RapidCheck's reproduce string of an earlier failure ("reproduce=…"); replays it exactly.
  std::string reproduce;
  /// Pins the case every property draws (`--case`): the property runs on this case (after its own
  /// adjustments, a property forcing causal=1, say) and RapidCheck draws only the property's other
  /// choices (which query row to perturb, say). A case outside the property's problem space (a
  /// mask where the property draws none) is a skip, with the reason. Layer properties skip.
  std::optional<AttentionCase> pinned_case;
  /// After a failure, look for up to this many distinct failures per property (FailureFinding),
  /// each with its own 1-minimal case; 1 reports the first only.
  int max_findings = 3;
  /// Make each failing case 1-minimal after RapidCheck's shrinking (FailureFinding::minimal_case).
  bool simplify = true;
  /// Optional: only cases whose AttentionCase::describe() it accepts are checked (--problem).
  std::function<bool(const std::string& case_description)> problem_filter;
  /// Every backend call in a forked child with a fresh backend instance (RunOptions::isolate):
  /// a crash or a hang fails that case, with its reproduction, and the run goes on.
  bool isolate = false;
  double timeout_seconds = 30;
  /// The accuracy verdict beside conformance (numerics/README.md §4.5) in every verdict against
  /// the reference: unset, not measured; 0, measured and reported; F > 0, a case whose error is
  /// more than F times the fp32 baseline kernel's fails (an accuracy failure).
  std::optional<double> accuracy_factor;
};

/// One distinct failure of a property (a property may hide several bugs: each is searched for
/// with the causes of the earlier ones excluded), with its own 1-minimal case.
struct FailureFinding {
  FailureKind kind = FailureKind::Output;
  std::string message;       ///< the property's failure message for the minimal case
  /// AttentionCase::describe() of the minimal case as judged: removing any one option from it,
  /// or shrinking any one dimension, makes the property pass.
  std::string minimal_case;
  /// The case as drawn, which `--case` pins: minimal_case before the property's own adjustments
  /// (a property that forces causal=1 draws the case without it); usually the same text.
  std::string pinned_case;
  std::vector<std::string> simplifications;  ///< what was removed after shrinking: "softcap=1 → off"
  std::string excluded;      ///< the earlier findings' causes excluded from this search; empty for the first
  std::vector<Diagnosis> diagnoses;  ///< the catalogue's hypotheses that reproduce the kernel's output
  std::optional<Verdict> verdict;    ///< the verdict against the reference when there was one
  std::optional<FailureEvidence> evidence;
};

enum class OutcomeStatus : std::uint8_t { Passed, Failed, Skipped };
std::string_view outcome_status_name(OutcomeStatus status);

struct PropertyOutcome {
  std::string property;
  std::string backend;
  DType dtype = DType::F32;
  OutcomeStatus status = OutcomeStatus::Skipped;
  std::string message;        ///< failure description or skip reason
  int cases_passed = 0;       ///< cases judged and passed before the verdict
  int cases_skipped = 0;      ///< cases the backend declined
  int cases_filtered = 0;     ///< drawn cases the problem filter rejected
  /// The backend's own reasons for the cases it declined, with how many cases each.
  std::map<std::string, int> decline_reasons;
  double worst_ratio = 0;     ///< largest bound ratio seen among judged cases
  std::string worst_case;     ///< AttentionCase::describe() of that case
  /// With RunSettings::accuracy_factor: the largest accuracy ratio (max or aggregate) and its case.
  std::optional<double> worst_accuracy_ratio;
  std::string worst_accuracy_case;
  double worst_guaranteed_relative_accuracy = 0;  ///< largest τ / max(|O|, A) among judged cases
  /// The failure is an accuracy one (the kernel conforms to its declaration but is less accurate
  /// than the accuracy factor allows), not a conformance one.
  bool accuracy_failure = false;
  /// On failure: every distinct failure found, the first one first (shrunk_case, shrunk_verdict
  /// and message describe that one).
  std::vector<FailureFinding> failures;
  std::string shrunk_case;    ///< on failure: the minimal failing case
  std::optional<Verdict> shrunk_verdict;
  std::string reproduce;      ///< on failure: RapidCheck's reproduce string
  std::uint64_t seed = 0;
  double seconds = 0;
  /// On failure: the time from the start of the unit until its first failing case was judged
  /// (time to catch), before RapidCheck's shrinking, the simplifier, the replay and the search
  /// for further failures.
  double seconds_to_failure = 0;
  std::map<std::string, int> coverage;  ///< judged cases only, per cell
};

/// The size mix `--size-class` names: small (none), medium (60 % medium), long (60 % long), all
/// (a third each); nullopt for another name.
std::optional<SizeMix> size_mix_for_class(std::string_view name);

/// "no CUDA device: … (602×); Dk > 256 (3×)": the decline reasons, most frequent first.
std::string describe_decline_reasons(const std::map<std::string, int>& reasons, std::size_t at_most = 3);

/// Runs one property for one backend and input dtype. Never throws for a backend's misbehaviour:
/// a BackendError or a memory finding is a failure of the property, and an unsupported dtype is
/// a skip with the reason.
PropertyOutcome run_property(const PropertyDef& property, Backend& backend, DType dtype, const RunSettings& settings);

/// Why `text` is not a reproduce string a failing run printed ("reproduce=…", RapidCheck's
/// encoding of the shrunk case), or nullopt when it is one.
std::optional<std::string> reproduce_string_problem(const std::string& text);

/// The command line that replays a failure: "attncheck run --backend B --property P --dtype D
/// --seed S --reproduce '…'".
std::string reproduce_command(const PropertyOutcome& outcome, const std::string& backend_spec);

/// The command line that replays one finding on its minimal case: "attncheck run --backend B
/// --property P --dtype D --seed S --case '<pinned case>'".
std::string finding_reproduce_command(const PropertyOutcome& outcome, const FailureFinding& finding,
                                      const std::string& backend_spec);

/// The seed RapidCheck draws property `name`'s cases from in a run with seed `run_seed`: a
/// SplitMix64 finalizer over the run seed and the FNV-1a hash of the name, fixed so that a
/// reproduce line (`--property P --seed S`) replays the same draws in every build.
std::uint64_t property_seed(std::uint64_t run_seed, std::string_view name);

}  // namespace attncheck
