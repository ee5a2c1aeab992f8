/// \file check.h
/// \brief One case checked end to end, and the named cases of a fixed grid.
///
/// A check runs a case through run_backend (guards, NaN pre-fill, input fingerprints, the
/// backend's memory domain) and hands the run to compare_attention together with the reference
/// of exactly the inputs the backend received. Nothing here decides pass or fail but the
/// comparator and the memory probes.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/case.h"
#include "attncheck/compare.h"
#include "attncheck/execute.h"

namespace attncheck {

/// compare_attention's verdict on `run` of case `c`: the reference of `data` (with the row
/// statistics the tolerance model needs), judged with the data character of c.values.
Verdict judge_run(const AttentionCase& c, const CaseData& data, const NumericsProfile& profile, const BackendRun& run);

struct CaseCheck {
  /// The backend's reason when it does not take the case — no profile for the dtype, a decline
  /// from supports(), or kAttncheckNotSupported from forward: a skip, never a failure.
  std::optional<std::string> declined;
  NumericsProfile profile;  ///< the backend's, for the case's dtype
  BackendRun run;
  Verdict verdict;          ///< compare_attention's (when not declined)

  /// Not declined, no memory finding, and the verdict passed.
  bool passed() const;
  /// One line: the verdict's summary when passed; else every memory finding and the verdict's
  /// failure with its summary.
  std::string report() const;
};

/// Runs `c` on `backend` with inputs `data` (make_case_data's, or a documented departure from
/// them) and judges the run. The tensors are laid out as `options` say, except that the case's
/// own sequence_major decides that layout. Runs and judges under the profile of the path the
/// backend takes for the problem (Backend::profile(problem, dtype)), with `data` adjusted to it as
/// the properties do: an additive bias rounded to the declared mask dtype, and unreachable keys
/// poisoned with finite values only when masked keys are declared weighted by zero. Throws
/// BackendError for any other status than ok or not-supported (the message is the backend's).
CaseCheck check_case(Backend& backend, const AttentionCase& c, const CaseData& data, RunOptions options = {});

/// One case of a fixed grid: a name, the case, how its tensors are handed over (row padding,
/// byte offsets, NULL strides), and what the check needs that the draw does not give — e.g. a
/// mask row with no allowed key (forbid_in_mask). `adjust` sees the case's final dtype.
struct GridCase {
  std::string name;  ///< unique in its grid; letters and digits (a gtest parameter name)
  AttentionCase c;
  RunOptions options;
  std::function<void(const AttentionCase&, CaseData&)> adjust;

  /// make_case_data(c), then `adjust`.
  CaseData data() const;
  /// The same case with inputs of `dtype`.
  GridCase in(DType dtype) const;
};

/// check_case of a grid case.
CaseCheck check_case(Backend& backend, const GridCase& g);

/// What a fixed grid spells its problems with: `p` with one option set, so that a grid reads as
/// a list of problems ("causal bottom-right MQA with a broadcast boolean mask").
Problem with_causal(Problem p, Alignment alignment, std::int64_t diagonal_offset = 0);
/// The mask of `kind` with shape [batch, heads, q_len, k_len] (problem.h: each 1 or the full size).
Problem with_mask(Problem p, MaskKind kind, std::int64_t batch, std::int64_t heads, std::int64_t q_len, std::int64_t k_len);
/// A window of `left` and `right` keys around the diagonal (−1: unbounded); the alignment is p's.
Problem with_window(Problem p, std::int64_t left, std::int64_t right);
Problem with_alignment(Problem p, Alignment alignment);
/// scale (resolved from its 1/sqrt(Dk) default) and softcap rounded to fp32: the values a kernel
/// that applies them in fp32 computes with, so the reference computes with them too
/// (numerics/README.md §1: the reference sees the operands the kernel received).
Problem with_fp32_parameters(Problem p);

/// Every case of `cases` once per dtype, the dtype appended to its name ("Mha" → "MhaF16"),
/// dtype-major.
std::vector<GridCase> in_dtypes(const std::vector<GridCase>& cases, const std::vector<DType>& dtypes);

}  // namespace attncheck
