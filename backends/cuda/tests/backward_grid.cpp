#include "backward_grid.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <bit>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include "attncheck/backend_handle.h"
#include "attncheck/backward.h"
#include "attncheck/case.h"
#include "attncheck/execute.h"
#include "attncheck/gradient_tolerance.h"
#include "attncheck/reference.h"

namespace attncheck::cuda::testing {
namespace {

// The first element where two runs' gradients differ in their bits ("dK[0, 1, 3, 5]: 0.25 against
// 0.2500001"), or nothing. The harness converts the kernel's values to double exactly, so equal
// doubles' bits are equal kernel bits (a NaN's payload included).
std::optional<std::string> first_bit_difference(const char* name, const HostTensor& a, const HostTensor& b) {
  if (a.shape != b.shape)
    return fmt::format("{}: shapes [{}] against [{}]", name, fmt::join(a.shape, ", "), fmt::join(b.shape, ", "));
  const Shape4& s = a.shape;
  for (std::int64_t i0 = 0; i0 < s[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < s[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < s[2]; ++i2)
        for (std::int64_t i3 = 0; i3 < s[3]; ++i3) {
          const double x = a(i0, i1, i2, i3), y = b(i0, i1, i2, i3);
          if (std::bit_cast<std::uint64_t>(x) != std::bit_cast<std::uint64_t>(y))
            return fmt::format("{}[{}, {}, {}, {}]: {:.17g} against {:.17g}", name, i0, i1, i2, i3, x, y);
        }
  return std::nullopt;
}

}  // namespace

void expect_gradients_conform(const std::string& name, const GridCase& g, bool with_d_lse) {
  Backend backend = open_backend(name);
  const Problem& problem = g.c.problem;
  const DType dtype = g.c.dtype;
  if (const std::optional<std::string> reason = backend.unsupported_reason(problem, dtype)) GTEST_SKIP() << *reason;
  const std::optional<NumericsProfile> forward = backend.profile(problem, dtype);
  ASSERT_TRUE(forward.has_value()) << name << " takes the case but declares no forward profile";
  const std::optional<BackwardProfile> backward_profile = backend.backward_profile(problem, dtype);
  ASSERT_TRUE(backward_profile.has_value()) << name << " takes the forward but declares no backward profile";
  // dbias is not written (writes_dbias = 0), so it is not asked for.
  const bool want_d_bias = problem.mask == MaskKind::Additive && backward_profile->writes_dbias;

  // The data as check_case hands them to the forward kernel: the bias rounded to the dtype the
  // kernel reads it in, and unreachable keys poisoned with finite values only for a kernel that
  // weights masked keys by zero (numerics/README.md §2.12, §6.1). The reference sees the same.
  CaseData data = g.data();
  round_additive_mask(problem, data, forward->additive_mask_dtype());
  if (forward->masked_keys_weighted_by_zero) make_poison_finite(problem, data, dtype);
  const AttentionInputs inputs = data.inputs(problem);
  // O and LSE handed to the kernel are the reference's rounded to the output dtype and fp32; dO
  // (and dLSE) come from the case's own backward stream (make_backward_data).
  const AttentionResult forward_reference = reference_attention(problem, inputs);
  const BackwardData backward = make_backward_data(g.c, forward_reference, forward->output, with_d_lse);

  RunOptions options = g.options;
  options.sequence_major = g.c.sequence_major;
  BackwardRun run, again;
  try {
    run = run_backend_backward(backend, problem, *forward, *backward_profile, inputs, backward, want_d_bias, options);
    again = run_backend_backward(backend, problem, *forward, *backward_profile, inputs, backward, want_d_bias, options);
  } catch (const BackendError& e) {
    if (e.status() != kAttncheckNotSupported) throw;
    GTEST_SKIP() << e.what();
  }
  EXPECT_TRUE(run.memory_findings.empty()) << name << " " << g.name << ": " << fmt::format("{}", fmt::join(run.memory_findings, "; "));
  EXPECT_TRUE(again.memory_findings.empty())
      << name << " " << g.name << " (second call): " << fmt::format("{}", fmt::join(again.memory_findings, "; "));

  // The target: the exact gradient at the reference's unrounded O and LSE with the dO and dLSE the
  // kernel received; τ (numerics/README.md §10) includes the rounding of the O and LSE it was handed.
  const BackwardInputs exact = backward.exact_inputs(forward_reference);
  BackwardOptions reference_options;
  reference_options.bias_gradient = want_d_bias;
  const AttentionGradients expected = reference_attention_backward(problem, inputs, exact, reference_options);
  const GradientBounds tau = gradient_tolerance(problem, *forward, *backward_profile, inputs, exact, expected);
  const GradientVerdict verdict = compare_gradients(expected, tau, run.gradients);
  EXPECT_TRUE(verdict.passed) << name << " " << g.name << " [" << g.c.describe() << "]: " << verdict.failure << " | "
                              << verdict.summary();
  // One line per case (the name carries the dtype), so the worst ratio of a dtype can be read off.
  fmt::print("{} {}{}: {}\n", name, g.name, with_d_lse ? " with dLSE" : "", verdict.summary());

  // The profile declares the backward deterministic (one running sum per element in a fixed
  // order, no atomics): a second call on the same inputs returns the same bits.
  ASSERT_TRUE(backward_profile->deterministic) << name << " no longer declares its backward deterministic";
  for (const auto& [tensor, first, second] :
       {std::tuple{"dQ", &run.gradients.d_q, &again.gradients.d_q}, std::tuple{"dK", &run.gradients.d_k, &again.gradients.d_k},
        std::tuple{"dV", &run.gradients.d_v, &again.gradients.d_v}}) {
    const std::optional<std::string> difference = first_bit_difference(tensor, *first, *second);
    EXPECT_FALSE(difference.has_value()) << name << " " << g.name << ": two backward calls on the same inputs differ at "
                                         << *difference;
  }
}

}  // namespace attncheck::cuda::testing
