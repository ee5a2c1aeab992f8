// Causal off by one: keys j < p allowed instead of j ≤ p (problem.h), so every row loses its
// diagonal key and the first row of a top-left causal mask is empty.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> causal_strict_hypotheses() {
  return {alternative_reference(
      "causal-strict", "matches the reference with a strict causal mask (j < i + offset): the diagonal key excluded",
      [](const FailureEvidence& e) -> std::optional<Alteration> {
        const Problem& p = e.attention_case.problem;
        if (!p.causal) return std::nullopt;
        auto [problem, data] = with_structure(p, e.data, [&](std::int64_t b, std::int64_t i, std::int64_t j) {
          return in_structural_range(p, e.data, b, i, j) && j < p.diagonal_key(i, key_length_of(p, e.data, b));
        });
        return Alteration{problem, data};
      })};
}

}  // namespace attncheck::diagnosis
