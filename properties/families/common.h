// Helpers shared by the property families: judging a backend run against the reference, and
// judging two runs that must agree (metamorphic properties) with the bound τ + τ′, or bitwise
// when the backend declares determinism and the two computations are the same arithmetic.
#pragma once

#include <rapidcheck.h>

#include "attncheck/compare.h"
#include "attncheck/generators.h"
#include "attncheck/property.h"
#include "attncheck/reference.h"
#include "attncheck/tolerance.h"

namespace attncheck::props {

/// The reference with the row statistics the tolerance model needs.
AttentionResult reference_for(const Problem& problem, const CaseData& data);

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

}  // namespace attncheck::props
