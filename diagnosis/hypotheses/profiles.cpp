// Alternative profiles: the kernel's O judged against the true reference under a profile with one
// stage narrower than declared passes, while the declared profile fails. The narrowest dtype of
// each stage comes first: a bf16 accumulation passes wherever an fp16 one does. They are named
// only when nothing sharper explains the output (Hypothesis::only_when_unexplained).
#include <fmt/format.h>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {
namespace {

Hypothesis narrower(std::string name, std::string stage, DType narrow, DType NumericsProfile::*field) {
  std::string statement =
      fmt::format("passes the tolerance model with {} in {} instead of the declared dtype", stage, dtype_name(narrow));
  return {std::move(name), statement,
          [stage, narrow, field](const FailureEvidence& e) -> std::optional<std::string> {
            if (!can_recompute(e)) return std::nullopt;
            const DType declared = e.profile.*field;
            if (unit_roundoff(declared) >= unit_roundoff(narrow)) return std::nullopt;  // not narrower
            NumericsProfile altered = e.profile;
            // Only this stage narrows: a row sum that followed the declared accumulator keeps it;
            // Q·K in the narrow dtype means accumulated in it too (score_accumulator unset).
            if (field == &NumericsProfile::accumulator) altered.row_sum_accumulator = e.profile.row_sum_dtype();
            if (field == &NumericsProfile::score) altered.score_accumulator.reset();
            altered.*field = narrow;
            const Problem& p = e.attention_case.problem;
            CompareOptions options;
            options.data = data_character(e.attention_case.values);
            const HostTensor* lse = e.run_lse ? &*e.run_lse : nullptr;
            const Verdict verdict = compare_attention(p, altered, e.data.inputs(p), e.reference, e.run_out, lse, options);
            if (!verdict.passed) return std::nullopt;
            // A bound passes any error far below it: an error 2^10 times smaller than the narrow
            // stage's τ (fp16's roundoff is 2^13 times fp32's, bf16's 2^16 times)
            // is not that stage's rounding, and the hypothesis explains nothing. A subnormal
            // output off by a few of its ulps passes an fp16 bound by 30 orders of magnitude.
            constexpr double kExplainsAtLeast = 0x1p-10;
            if (verdict.max_ratio < kExplainsAtLeast) return std::nullopt;
            // The declared profile is judged here too, not read from the evidence's verdict: that
            // verdict may come from another comparison (two runs of a metamorphic property).
            if (compare_attention(p, e.profile, e.data.inputs(p), e.reference, e.run_out, lse, options).passed)
              return std::nullopt;
            return fmt::format("passes the tolerance model with {} in {} instead of the declared {} (max r = {:.2g})",
                               stage, dtype_name(narrow), dtype_name(declared), verdict.max_ratio);
          },
          /*only_when_unexplained=*/true};
}

}  // namespace

std::vector<Hypothesis> profiles_hypotheses() {
  return {
      narrower("pv-accumulated-in-f16", "P·V accumulated", DType::F16, &NumericsProfile::accumulator),
      narrower("pv-accumulated-in-bf16", "P·V accumulated", DType::BF16, &NumericsProfile::accumulator),
      narrower("p-rounded-to-f16", "P stored", DType::F16, &NumericsProfile::probability),
      narrower("p-rounded-to-bf16", "P stored", DType::BF16, &NumericsProfile::probability),
      narrower("qk-in-f16", "Q·K computed", DType::F16, &NumericsProfile::score),
      narrower("qk-in-bf16", "Q·K computed", DType::BF16, &NumericsProfile::score),
  };
}

}  // namespace attncheck::diagnosis
