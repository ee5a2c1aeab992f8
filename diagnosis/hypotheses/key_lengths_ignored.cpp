// key_lengths never read: every batch attends to all Lk keys (padding included), and a diagonal
// declared by the key lengths (Alignment::KeyLengths) falls back to bottom-right, Lk − Lq.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> key_lengths_ignored_hypotheses() {
  return {alternative_reference("key-lengths-ignored", "matches the reference with the key lengths ignored (all Lk keys attended)",
                                [](const FailureEvidence& e) -> std::optional<Alteration> {
                                  Problem p = e.attention_case.problem;
                                  if (!p.has_key_lengths) return std::nullopt;
                                  p.has_key_lengths = false;
                                  if (p.alignment == Alignment::KeyLengths) p.alignment = Alignment::BottomRight;
                                  CaseData d = e.data;
                                  d.key_lengths.clear();
                                  return Alteration{p, d};
                                })};
}

}  // namespace attncheck::diagnosis
