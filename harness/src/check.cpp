#include "attncheck/check.h"

#include <cctype>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "attncheck/reference.h"

namespace attncheck {

Verdict judge_run(const AttentionCase& c, const CaseData& data, const NumericsProfile& profile, const BackendRun& run) {
  ReferenceOptions reference_options;
  reference_options.row_statistics = true;
  const AttentionInputs inputs = data.inputs(c.problem);
  const AttentionResult reference = reference_attention(c.problem, inputs, reference_options);
  CompareOptions options;
  options.data = data_character(c.values);
  return compare_attention(c.problem, profile, inputs, reference, run.out, run.lse ? &*run.lse : nullptr, options);
}

bool CaseCheck::passed() const { return !declined && run.memory_findings.empty() && verdict.passed; }

std::string CaseCheck::report() const {
  if (declined) return "declined: " + *declined;
  if (passed()) return verdict.summary();
  std::string text;
  if (!run.memory_findings.empty()) text = fmt::format("memory probe: {}; ", fmt::join(run.memory_findings, "; "));
  if (!verdict.passed) text += verdict.failure + " | ";
  return text + verdict.summary();
}

CaseCheck check_case(Backend& backend, const AttentionCase& c, const CaseData& data, RunOptions options) {
  CaseCheck check;
  if (!backend.profile(c.dtype)) {
    check.declined = fmt::format("{} does not take {} inputs", backend.name(), dtype_name(c.dtype));
    return check;
  }
  // Run and judged under the profile of the path the backend takes for this problem (ABI 2.1).
  const std::optional<NumericsProfile> profile = backend.profile(c.problem, c.dtype);
  if (!profile) {
    check.declined = fmt::format("{} declares no profile for this problem with {} inputs (get_problem_profile)",
                                 backend.name(), dtype_name(c.dtype));
    return check;
  }
  check.profile = *profile;
  // Under isolation a device backend is asked in the child (run_backend), never in this process.
  if (!options.isolate || backend.device().device_type == kDLCPU) {
    check.declined = backend.unsupported_reason(c.problem, c.dtype);
    if (check.declined) return check;
  }
  options.sequence_major = c.sequence_major;
  // The data as PropertyContext::case_data hands them to the kernel: the bias rounded to the
  // dtype the kernel reads it in before the reference sees it, as inputs are rounded to the input
  // dtype (numerics/README.md §2.12), and unreachable keys poisoned with finite values only for a
  // kernel that declares it weights masked keys by zero (§6.1).
  std::optional<CaseData> adjusted;
  const bool round_mask = c.problem.mask == MaskKind::Additive && check.profile.additive_mask_dtype() != c.dtype;
  if (round_mask || check.profile.masked_keys_weighted_by_zero) {
    adjusted = data;
    round_additive_mask(c.problem, *adjusted, check.profile.additive_mask_dtype());
    if (check.profile.masked_keys_weighted_by_zero) make_poison_finite(c.problem, *adjusted, c.dtype, check.profile.held_key_value_dtype());
  }
  const CaseData& judged = adjusted ? *adjusted : data;
  try {
    check.run = run_backend(backend, c.problem, check.profile, judged.inputs(c.problem), options);
  } catch (const BackendError& e) {
    if (e.status() != kAttncheckNotSupported) throw;
    check.declined = e.what();
    return check;
  }
  check.verdict = judge_run(c, judged, check.profile, check.run);
  return check;
}

CaseData GridCase::data() const {
  CaseData d = make_case_data(c);
  if (adjust) adjust(c, d);
  return d;
}

GridCase GridCase::in(DType dtype) const {
  GridCase g = *this;
  g.c.dtype = dtype;
  return g;
}

CaseCheck check_case(Backend& backend, const GridCase& g) { return check_case(backend, g.c, g.data(), g.options); }

Problem with_causal(Problem p, Alignment alignment, std::int64_t diagonal_offset) {
  p.causal = true;
  p.alignment = alignment;
  p.diagonal_offset = diagonal_offset;
  return p;
}

Problem with_mask(Problem p, MaskKind kind, std::int64_t batch, std::int64_t heads, std::int64_t q_len, std::int64_t k_len) {
  p.mask = kind;
  p.mask_batch = batch;
  p.mask_heads = heads;
  p.mask_q_len = q_len;
  p.mask_k_len = k_len;
  return p;
}

Problem with_window(Problem p, std::int64_t left, std::int64_t right) {
  p.window_left = left;
  p.window_right = right;
  return p;
}

Problem with_alignment(Problem p, Alignment alignment) {
  p.alignment = alignment;
  return p;
}

Problem with_fp32_parameters(Problem p) {
  p.scale = round_to(DType::F32, p.effective_scale());
  p.softcap = round_to(DType::F32, p.softcap);
  return p;
}

std::vector<GridCase> in_dtypes(const std::vector<GridCase>& cases, const std::vector<DType>& dtypes) {
  std::vector<GridCase> grid;
  for (const DType dtype : dtypes) {
    std::string suffix(dtype_name(dtype));
    suffix[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0])));
    for (const GridCase& g : cases) {
      grid.push_back(g.in(dtype));
      grid.back().name += suffix;
    }
  }
  return grid;
}

}  // namespace attncheck
