/// \file property.h
/// \brief A property: a statement every correct attention kernel satisfies, written once against
/// the backend interface and run by the engine for any backend, built-in or plug-in.
///
/// A property body runs inside RapidCheck: it draws what it needs with `*generator`, runs the
/// backend through PropertyContext, and fails with RC_ASSERT / RC_FAIL (a shrinkable failure)
/// or discards with RC_DISCARD when the backend declines the drawn problem.
///
/// Adding a property: write properties/families/<family>.cpp ending in a function that returns
/// its PropertyDefs, and add that function to the list in properties/src/registry.cpp.
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/case.h"
#include "attncheck/compare.h"
#include "attncheck/evidence.h"
#include "attncheck/execute.h"
#include "attncheck/generators.h"
#include "attncheck/gradient_tolerance.h"
#include "attncheck/numerics_profile.h"

namespace attncheck {

/// What a search for a further failure leaves out: the causes of the failures already found
/// (their minimal cases' options, or the LSE), so that a second bug of another kind shows.
struct SearchExclusions {
  bool lse = false;  ///< the LSE is not judged
  bool gqa = false, causal = false, window = false, softcap = false, mask = false, key_lengths = false,
       layouts = false, poison = false, custom_scale = false, alibi = false, sinks = false, paged = false,
       varlen = false;
  std::vector<ValueKind> values;  ///< value kinds not drawn (a property's first kind stays)
  bool empty() const;
  /// "the LSE not judged; no window; no softcap": what the search left out.
  std::string describe() const;
  /// `space` without the excluded options.
  ProblemSpace apply(ProblemSpace space) const;
};

/// What the engine learned from the evaluations of one property run: the cases it judged, the
/// worst verdict among them, the last failing case (after shrinking: the minimal one), how many
/// judged cases hit each coverage cell (and each size class), and why the others were not judged.
struct CaseLog {
  int evaluated = 0;
  int drawn = 0;     ///< cases drawn through PropertyContext::draw_case
  std::string pin_rejected;  ///< why the pinned case lies outside the property's space, if it does
  int skipped = 0;   ///< cases the backend declined (supports(), or kAttncheckNotSupported from a call)
  int filtered = 0;  ///< cases the run's problem filter rejected
  std::map<std::string, int> decline_reasons;  ///< the backend's own reason → how many cases
  double worst_ratio = 0;
  std::string worst_case;
  /// Accuracy verdict (numerics/README.md §4.5), over the verdicts that measured it: the largest
  /// of the max and aggregate ratios, and its case.
  bool accuracy_measured = false;
  double worst_accuracy_ratio = 0;
  std::string worst_accuracy_case;
  /// The largest τ / max(|O|, A) among judged cases: the weakest guarantee the profile gave.
  double worst_guaranteed_relative_accuracy = 0;
  std::optional<Verdict> last_failure_verdict;
  std::string last_failure_case;
  /// The case the property drew for the current case, and for the last failing one: what
  /// `--case` pins and the simplifier reduces (the judged case is this after the property's
  /// own adjustments). Unset for a property that draws no attention case (the layer).
  std::optional<AttentionCase> current_drawn, last_failure_drawn;
  FailureKind last_failure_kind = FailureKind::Output;
  std::string last_failure_message;  ///< the property's message, without the case
  /// With PropertyContext::record_evidence: what the last failing case left (τ is filled by the
  /// engine from the profile).
  std::optional<FailureEvidence> current_evidence, last_failure_evidence;
  std::map<std::string, int> coverage;
  /// When the first failing case of the search was judged: the moment the kernel was caught,
  /// before RapidCheck's shrinking (which, on a hanging kernel, waits out a timeout per step).
  std::optional<std::chrono::steady_clock::time_point> first_failure_at;
};

class PropertyContext {
 public:
  /// `call_options` carries the run's isolation settings into every backend call.
  PropertyContext(Backend& backend, DType dtype, NumericsProfile profile, CaseLog& log,
                  std::function<bool(const std::string&)> case_filter = {}, RunOptions call_options = {},
                  SizeMix sizes = {})
      : backend_(backend), dtype_(dtype), profile_(std::move(profile)), log_(log), case_filter_(std::move(case_filter)),
        call_options_(call_options), sizes_(sizes) {}

  Backend& backend() { return backend_; }
  /// Every case is drawn through here: gen_case(dtype(), space, kinds), or the run's pinned case
  /// (RunSettings::pinned_case), which is declined when it lies outside `space` or has another
  /// dtype. The run's exclusions narrow `space` first.
  AttentionCase draw_case(const ProblemSpace& space, std::vector<ValueKind> kinds = {ValueKind::Gaussian});
  /// The engine's controls: a pinned case, the options a search leaves out, and whether runs
  /// keep their inputs and outputs as evidence of a failure.
  void pin(std::optional<AttentionCase> pinned) { pinned_ = std::move(pinned); }
  void exclude(SearchExclusions exclusions) { exclusions_ = std::move(exclusions); }
  void record_evidence(bool on) { record_evidence_ = on; }
  /// False when the search leaves the LSE out (SearchExclusions::lse): judges pass no LSE.
  bool judges_lse() const { return !exclusions_.lse; }
  /// With record_evidence: the reference and verdict of the current case's last run, kept with
  /// it as a failure's evidence (judge() calls it).
  void note_judgement(const AttentionResult& reference, const Verdict* verdict);
  DType dtype() const { return dtype_; }
  /// The dtype's profile (get_profile): what skip_reason and listings see.
  const NumericsProfile& profile() const { return profile_; }
  /// Every verdict against the reference also measures accuracy (RunSettings::accuracy_factor):
  /// 0 reports the ratios, F > 0 fails a case whose ratio exceeds F.
  void measure_accuracy(double factor) { accuracy_factor_ = factor; }
  /// The comparator's options for a case whose data have character `data`, with the run's
  /// accuracy verdict.
  CompareOptions compare_options(DataCharacter data) const;
  /// The full problem space, and ProblemSpace::plain(), with the run's size mix: what a property
  /// draws from before restricting it (the engine gives size-specific properties small sizes only).
  ProblemSpace space() const {
    ProblemSpace s;
    s.sizes = sizes_;
    return s;
  }
  ProblemSpace plain_space() const {
    ProblemSpace s = ProblemSpace::plain();
    s.sizes = sizes_;
    return s;
  }
  /// The profile of the path the backend takes for `problem` (Backend::profile(problem, dtype):
  /// get_problem_profile when the backend has one, else the dtype's profile). Every case is run
  /// and judged under it. A path whose profile the backend does not support declines the case;
  /// a profile that breaks get_problem_profile's contract (another input dtype than asked) fails.
  NumericsProfile profile(const Problem& problem);
  /// make_case_data(c) as the backend receives it under profile(c.problem): an additive bias
  /// rounded to the declared mask dtype, and unreachable keys poisoned with finite values only
  /// when the backend declares that it weights masked keys by zero.
  CaseData case_data(const AttentionCase& c);
  /// poison_values(dtype, finite only) for `problem`'s declared masked-key convention.
  std::array<double, 3> poison_values(const Problem& problem);

  /// Discards the current case as not applicable to this backend, counted as a skip under
  /// `reason` (a path whose profile does not make the property's promise, say).
  [[noreturn]] void decline(const std::string& reason);
  /// Discards the current case when the backend declines it, counting a skip under its reason.
  /// Under isolation a backend whose memory is not the host's is asked in the child instead
  /// (execute.h), and its decline arrives from run().
  /// Whether the backend would run `problem` (for a second formulation a property runs only where
  /// it can); never declines the case. Under isolation on a device, true (the child asks).
  bool supports(const Problem& problem);
  void require_supported(const Problem& problem);
  /// Runs the backend on a case (inputs from make_case_data) and fails on any memory finding; a
  /// kAttncheckNotSupported status is a decline (backend.h), never a failure.
  BackendRun run(const AttentionCase& c, const CaseData& data, const RunOptions& options = {});
  /// Admits a drawn case: discards it when the run's problem filter rejects it, otherwise notes
  /// its coverage cells (coverage.h: its variant × dtype × mask × causal cell and one value of
  /// each size axis), which count once the case is judged (finish_case).
  void classify(const AttentionCase& c);
  /// Called by the engine when a case was judged (passed or failed, not discarded).
  void finish_case();
  /// Called by the engine before each case.
  void begin_case() {
    pending_cells_.clear();
    log_.current_drawn.reset();
    log_.current_evidence.reset();
  }
  /// Records the verdict and fails the property (RC_FAIL) with its summary if it did not pass.
  /// `relation` is the failure's kind when the verdict is not a judgement against the
  /// reference (FailureKind::Probe for a determinism check, say); with Output, the verdict
  /// itself says whether O, the LSE or the NaN placement failed.
  void expect(const Verdict& verdict, const AttentionCase& c, std::string_view what,
              FailureKind relation = FailureKind::Output);
  void expect(const Verdict& verdict, const std::string& case_description, std::string_view what,
              FailureKind relation = FailureKind::Output);
  /// Fails the property with `message` about case `c`: by default a relation or probe failed.
  [[noreturn]] void fail(const AttentionCase& c, const std::string& message, FailureKind kind = FailureKind::Probe);
  [[noreturn]] void fail(const std::string& case_description, const std::string& message,
                         FailureKind kind = FailureKind::Probe);
  /// The layer entry point on `inputs` (values in the profile's input dtype); fails on a
  /// non-ok status or a memory finding.
  BackendRun run_layer(const LayerProblem& problem, const std::string& case_description, const LayerInputs& inputs);

  /// The backward profile of the path the backend takes for `problem` (Backend::backward_profile).
  /// Declines the case, counted as a skip, when the backend has no backward pass, when its forward
  /// declines the problem (require_supported, whose reason is the backend's own), or when
  /// get_backward_profile declines this problem or dtype; a get_backward_profile that fails
  /// otherwise fails the case (a status failure).
  BackwardProfile backward_profile(const Problem& problem);
  /// Runs the backend's backward pass on a case (harness run_backend_backward: guards, NaN
  /// pre-fill, input fingerprints, the memory domain, and the run's isolation), with `backward`
  /// the O, LSE, dO and dLSE it is handed, under profile(c.problem) and backward_profile(c.problem).
  /// As run(): a memory finding fails, kAttncheckNotSupported declines, any other error status,
  /// a crash or a hang fails with its kind. dBias is asked for when `want_d_bias`.
  BackwardRun run_backward(const AttentionCase& c, const CaseData& data, const BackwardData& backward, bool want_d_bias,
                           const RunOptions& options = {});
  /// Records a judgement of gradients (compare_gradients, or a relation between two backward runs)
  /// and fails the property with its summary if it did not pass, as expect() does for O: the
  /// failure message names `what` and the case, and the finding's kind is `relation`.
  void expect(const GradientVerdict& verdict, const AttentionCase& c, std::string_view what,
              FailureKind relation = FailureKind::Gradient);

 private:
  Backend& backend_;
  DType dtype_;
  NumericsProfile profile_;
  CaseLog& log_;
  std::function<bool(const std::string&)> case_filter_;
  RunOptions call_options_;
  SizeMix sizes_;
  std::vector<std::string> pending_cells_;
  std::optional<double> accuracy_factor_;
  std::optional<AttentionCase> pinned_;
  SearchExclusions exclusions_;
  bool record_evidence_ = false;

  void keep_evidence_of_failure(FailureKind kind, const std::string& message);
  /// The worst bound ratio and its case, over every judged verdict of O or of gradients.
  void note_ratio(double ratio, const std::string& description);

};

struct PropertyDef {
  std::string name;    ///< stable, lower-case with dashes: "reference-agreement"
  std::string family;  ///< the file it lives in: "conformance"
  std::string why;     ///< one sentence: why every correct kernel satisfies it
  bool needs_layer = false;  ///< runs only for backends with forward_layer
  std::function<void(PropertyContext&)> body;
  /// Optional: a reason to skip the whole property for this profile (determinism for a backend
  /// that does not declare it, say); empty when it applies.
  std::function<std::string(const NumericsProfile&)> skip_reason;
  /// False for a property that sets lengths or head dims itself (a V = I that needs Dv ≥ Lk, a
  /// power-of-two key count): it draws small problems only, whatever the run's size mix.
  bool size_agnostic = true;
  /// Runs only for backends with a backward pass (Backend::has_backward); the others skip it with
  /// the reason "the backend has no backward pass". Last, so that the positional definitions of
  /// the forward families stay as they are: backward properties name their fields.
  bool needs_backward = false;
  /// Runs only on fp8 inputs (e4m3, e5m2; the fp8 family), which every other property skips: the
  /// engine plans neither pairing (run_property skips it, naming why).
  bool fp8_inputs = false;
};

/// Whether `property` runs on `dtype` inputs at all: fp8 dtypes for the fp8 family only, the
/// others for every other property.
inline bool runs_on(const PropertyDef& property, DType dtype) { return property.fp8_inputs == is_fp8(dtype); }

/// Every property, in registration order (properties/src/registry.cpp).
const std::vector<PropertyDef>& all_properties();

}  // namespace attncheck
