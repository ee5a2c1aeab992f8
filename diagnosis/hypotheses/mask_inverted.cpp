// A boolean mask read with the opposite polarity (problem.h: nonzero = attend, as ONNX and
// PyTorch's boolean attn_mask): the kernel attends where it must not.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> mask_inverted_hypotheses() {
  return {alternative_reference("mask-inverted",
                                "matches the reference with the boolean mask inverted (true = masked out)",
                                [](const FailureEvidence& e) -> std::optional<Alteration> {
                                  const Problem& p = e.attention_case.problem;
                                  if (p.mask != MaskKind::Boolean) return std::nullopt;
                                  CaseData d = e.data;
                                  for (double& m : d.mask.values) m = m != 0 ? 0.0 : 1.0;
                                  return Alteration{p, d};
                                })};
}

}  // namespace attncheck::diagnosis
