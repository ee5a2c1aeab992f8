// Determinism: a backend that declares itself deterministic promises bitwise-equal outputs for
// equal inputs, the promise that lets users diff runs and debug training; it is checked as made.
#include <bit>
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {

void repeated_runs(PropertyContext& ctx) {
  const AttentionCase c = ctx.draw_case(ctx.space());
  ctx.classify(c);
  ctx.require_supported(c.problem);
  // The promise is made per code path (get_problem_profile): a split-KV path with atomics, say,
  // may not make it although the dtype's profile does.
  if (!ctx.profile(c.problem).deterministic) ctx.decline("this problem's path is not declared deterministic");
  const CaseData data = ctx.case_data(c);
  const BackendRun first = ctx.run(c, data);
  for (int repeat = 1; repeat <= 3; ++repeat) {
    const BackendRun again = ctx.run(c, data);
    for (size_t n = 0; n < first.out.values.size(); ++n)
      if (std::bit_cast<std::uint64_t>(first.out.values[n]) != std::bit_cast<std::uint64_t>(again.out.values[n]))
        ctx.fail(c, fmt::format("run {} differs from run 0 at flat index {}: {} vs {}", repeat, n, again.out.values[n],
                                first.out.values[n]));
  }
}

}  // namespace

std::vector<PropertyDef> determinism_properties() {
  return {
      {"determinism", "determinism", "a backend declared deterministic returns bitwise-equal outputs on every run", false,
       repeated_runs,
       [](const NumericsProfile& profile) {
         return profile.deterministic ? std::string() : std::string("the backend does not declare determinism");
       }},
  };
}

}  // namespace attncheck::props
