// Strides ignored: Q, K, V read and O written as compact in the other layout, [B, L, H, D] when
// the case hands [B, H, L, D] (sequence and head axes transposed) or [B, H, L, D] when it hands
// [B, L, H, D]. The kernel then computes attention on the inputs read through the wrong layout
// and writes its result through it: the prediction is that reference, read back as the harness
// reads O. Indistinguishable from the truth unless H > 1 and L > 1.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> layout_hypotheses() {
  const std::string statement = "matches the reference with Q/K/V read and O written in the other layout, strides ignored";
  return {{"layout-transposed", statement, [](const FailureEvidence& e) -> std::optional<std::string> {
             if (!can_recompute(e)) return std::nullopt;
             const Problem& p = e.attention_case.problem;
             const bool handed = e.attention_case.sequence_major, assumed = !handed;
             CaseData d = e.data;
             for (HostTensor* t : {&d.q, &d.k, &d.v}) *t = reinterpret_layout(*t, handed, assumed);
             Prediction kernel_order = reference_prediction(e, p, d);
             const Prediction as_read{reinterpret_layout(kernel_order.out, assumed, handed),
                                      reinterpret_layout(kernel_order.tau, assumed, handed)};
             if (!explains(e, as_read)) return std::nullopt;
             return std::string(handed ? "matches the reference with Q/K/V read and O written as compact [B, H, L, D] "
                                         "while they are [B, L, H, D]: strides ignored"
                                       : "matches the reference with Q/K/V read and O written as compact [B, L, H, D] "
                                         "while they are [B, H, L, D]: sequence and head axes transposed");
           }}};
}

}  // namespace attncheck::diagnosis
