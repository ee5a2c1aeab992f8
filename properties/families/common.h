// Helpers shared by the property families: judging a backend run against the reference, and
// judging two runs that must agree (metamorphic properties) with the bound τ + τ′, or bitwise
// when the backend declares determinism and the two computations are the same arithmetic. The
// same for backward runs: their gradients against reference_attention_backward with τ from
// gradient_tolerance, and two backward runs against each other with τ + τ′.
#pragma once

#include <rapidcheck.h>

#include "attncheck/backward.h"
#include "attncheck/compare.h"
#include "attncheck/generators.h"
#include "attncheck/gradient_tolerance.h"
#include "attncheck/property.h"
#include "attncheck/reference.h"
#include "attncheck/tolerance.h"

namespace attncheck::props {

/// Every value kind, in the order reference-agreement draws them: the families of the inference
/// options draw from all of them, so the options meet the hard inputs too.
const std::vector<ValueKind>& all_value_kinds();

/// Whether two doubles have the same bits (NaN payloads and signed zeros included).
bool same_bits(double a, double b);

/// The reference with the row statistics the tolerance model needs.
AttentionResult reference_for(const Problem& problem, const CaseData& data);

/// Whether the backend declares `option` (an attncheck_problem_option bit) in its problem_options:
/// a property draws an option beside the one it tests only where the backend has it, so that a
/// backend with ALiBi but no sinks is tested on ALiBi instead of declining every draw.
bool declares(PropertyContext& ctx, std::uint32_t option);

/// compare_attention of a run against the reference of the same case.
Verdict judge(PropertyContext& ctx, const AttentionCase& c, const CaseData& data, const BackendRun& run);

/// τ for every output element of a case (its reference must carry statistics).
HostTensor tolerance_of(PropertyContext& ctx, const AttentionCase& c, const CaseData& data,
                        const AttentionResult& reference);

/// Two outputs that are equal in exact arithmetic: passes iff |a − b| ≤ τa + τb everywhere
/// (both NaN counts as agreement: the same declared convention on both sides).
Verdict compare_pair(const HostTensor& a, const HostTensor& tau_a, const HostTensor& b, const HostTensor& tau_b);

/// Runs `c` on the backend and returns the run with its reference and τ.
struct JudgedRun {
  CaseData data;
  BackendRun run;
  AttentionResult reference;
  HostTensor tau;
};
JudgedRun run_and_bound(PropertyContext& ctx, const AttentionCase& c);
JudgedRun run_and_bound(PropertyContext& ctx, const AttentionCase& c, CaseData data);

/// Two runs of one kernel whose exact outputs are equal: bitwise when the path `c` takes is declared
/// deterministic and the two do the same arithmetic (`why_same_bits` says why they do, for the
/// failure message), else within τ_a + τ_b.
void expect_same_output(PropertyContext& ctx, const AttentionCase& c, const JudgedRun& a, const JudgedRun& b,
                        const char* what, const char* why_same_bits);

/// Whether a backward call of `problem` is asked for dBias and judged on it: an additive mask and a
/// backward profile that writes it.
bool wants_d_bias(const Problem& problem, const BackwardProfile& backward);

/// The double reference's O and LSE of a case's data (no row statistics: the gradients' τ reads
/// the exact O and LSE, not the forward's).
AttentionResult forward_reference(const Problem& problem, const CaseData& data);

/// make_backward_data for `c` as the backend is handed it: O rounded to the output dtype of the
/// path's forward profile (profile(c.problem)), LSE to float32, dO in c.dtype, dLSE when asked.
BackwardData backward_data_for(PropertyContext& ctx, const AttentionCase& c, const AttentionResult& forward,
                               bool with_d_lse);

/// A backward call of a case with everything it is judged with: the forward's inputs and the
/// double reference's O and LSE of them, what the kernel was handed, the exact gradients of those
/// bits (reference_attention_backward on BackwardData::exact_inputs) and τ for each of their
/// elements (gradient_tolerance under the path's forward and backward profiles).
struct JudgedBackward {
  CaseData data;
  AttentionResult forward;
  BackwardData backward;
  bool d_bias = false;  ///< dBias asked for, and in `reference` and `tau`
  BackwardRun run;
  AttentionGradients reference;
  GradientBounds tau;
};
/// Runs the backward pass of `c` on `data` handed `backward` (whose O and LSE may come from
/// another, equivalent case: the exact O and LSE are always `data`'s own).
JudgedBackward run_backward_and_bound(PropertyContext& ctx, const AttentionCase& c, CaseData data, BackwardData backward,
                                      bool want_d_bias);
/// The same with the case's own data (ctx.case_data) and backward data (backward_data_for).
JudgedBackward run_backward_and_bound(PropertyContext& ctx, const AttentionCase& c, bool with_d_lse, bool want_d_bias);

/// compare_gradients of the run against its reference.
GradientVerdict judge_gradients(const JudgedBackward& j);

/// Two sets of gradients that are equal in exact arithmetic: passes iff |a − b| ≤ τa + τb for
/// every element of dQ, dK, dV, and of dBias when both have it (both NaN counts as agreement, as
/// compare_pair's); `tau_b` may hold extra terms (a sum's own rounding) that the caller added.
GradientVerdict compare_gradient_pair(const AttentionGradients& a, const GradientBounds& tau_a,
                                      const AttentionGradients& b, const GradientBounds& tau_b);

/// Makes a drawn MHA problem grouped: Hkv drawn from {1, 2} and Hq = 3 Hkv (a mask over every
/// head follows Hq). A problem that is grouped already is left as drawn. The GQA properties
/// compare such a problem with its MHA expansion (repeat_kv_heads).
void ensure_grouped(Problem& p);

/// K or V [B, Hkv, Lk, D] of grouped problem `p` repeated per query head, [B, Hq, Lk, D], head h
/// a copy of kv head p.kv_head_of(h): the MHA problem's operand that GQA is equal to.
HostTensor repeat_kv_heads(const Problem& p, const HostTensor& t);

/// A narrow causal window (bottom-right, left reach drawn from 0..4, right 0) over at least 130
/// keys: whole key tiles are masked inside live rows, where a kernel may form −inf − (−inf). A
/// mask follows the new key (and, when the work would exceed 4e6 score elements, query) length.
void mask_whole_key_tiles(Problem& p);

}  // namespace attncheck::props
