// The diagonal of causal and window masks aligned at the wrong corner (problem.h): top-left
// (offset 0) where bottom-right (Lk − Lq), a cache offset or the key lengths are declared, and the
// converse. The case tells them apart only when Lq ≠ Lk.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {
namespace {

Hypothesis aligned(std::string name, std::string statement, Alignment assumed) {
  return alternative_reference(std::move(name), std::move(statement),
                               [assumed](const FailureEvidence& e) -> std::optional<Alteration> {
                                 Problem p = e.attention_case.problem;
                                 if ((!p.causal && !p.has_window()) || p.alignment == assumed) return std::nullopt;
                                 // Top-left is the kernel's assumption for every other declaration;
                                 // bottom-right only for a declared top-left one.
                                 if (assumed == Alignment::BottomRight && p.alignment != Alignment::TopLeft)
                                   return std::nullopt;
                                 p.alignment = assumed;
                                 p.diagonal_offset = 0;
                                 return Alteration{p, e.data};
                               });
}

}  // namespace

std::vector<Hypothesis> causal_alignment_hypotheses() {
  return {aligned("causal-top-left",
                  "matches the reference with the causal/window diagonal top-left (offset 0) instead of the declared alignment",
                  Alignment::TopLeft),
          aligned("causal-bottom-right",
                  "matches the reference with the causal/window diagonal bottom-right (offset Lk − Lq) instead of top-left",
                  Alignment::BottomRight)};
}

}  // namespace attncheck::diagnosis
