/// \file evidence.h
/// \brief What a failing check leaves behind: the exact inputs the kernel received, what it
/// returned, the reference and τ of that comparison, and how it failed. The diagnosis
/// (diagnosis/), the HTML report and the regression fixtures (--save-failures) read it; none of
/// them reruns the property.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/case.h"
#include "attncheck/compare.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/reference.h"
#include "attncheck/tensor.h"

namespace attncheck {

/// What fails, the first criterion by which two failures are distinct bugs.
enum class FailureKind : std::uint8_t {
  Output,       ///< O outside τ of the reference (or of the other run, for a metamorphic property)
  Lse,          ///< O within τ, the LSE outside its bound
  NanPlacement, ///< NaN or Inf where the declared convention forbids it, or missing where it requires it
  Probe,        ///< a relation between runs, or a probe (determinism, input integrity, shapes), fails
  Memory,       ///< a write outside an output, into its padding, an unwritten output, a modified input
  Crash,        ///< the call died (isolated runs)
  Timeout,      ///< the call did not return in time (isolated runs)
  Status,       ///< the backend returned an error for a problem it claims to support
  Accuracy,     ///< conforms to its declaration, less accurate than the accuracy factor allows
  Gradient,     ///< dQ, dK, dV or dBias outside τ of the reference gradients (or of another backward run)
};
std::string_view failure_kind_name(FailureKind kind);
std::optional<FailureKind> parse_failure_kind(std::string_view name);

/// One hypothesis of the diagnosis catalogue that reproduces the kernel's output (diagnosis/).
struct Diagnosis {
  std::string hypothesis;  ///< stable name: "window-exclusive"
  std::string statement;   ///< "matches the reference with window bounds exclusive (p − left < j < p + right)"
};

/// The comparison a failure came from. `reference` carries row statistics; `tau` is shaped like
/// `run_out`. For a failure with no comparison against the reference (a crash, a probe) the
/// engine runs the minimal case once more directly and records that run here, so `run_out` is
/// what the kernel returns for `attention_case` on `data`.
struct FailureEvidence {
  AttentionCase attention_case;  ///< the case as judged (after the property's own adjustments)
  CaseData data;                 ///< exactly the values the kernel received (mask rounded, poison, …)
  NumericsProfile profile;       ///< the path's profile the case was judged under
  AttentionResult reference;     ///< the double reference of `data`, with row statistics
  HostTensor tau;                ///< τ for every element of O
  HostTensor run_out;            ///< [B, Hq, Lq, Dv]: the kernel's O
  std::optional<HostTensor> run_lse;  ///< [1, B, Hq, Lq] when the kernel wrote it
  std::vector<std::string> memory_findings;
  Verdict verdict;               ///< compare_attention of run_out against `reference`
  FailureKind kind = FailureKind::Output;
  std::string message;           ///< the property's failure message
  /// For a backend that declares determinism: its O for the same inputs, run once more by the
  /// engine; a bitwise difference explains a failure as nondeterminism.
  std::optional<HostTensor> rerun_out;
};

}  // namespace attncheck
