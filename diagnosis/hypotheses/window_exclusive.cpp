// A sliding window with exclusive bounds, p − left < j < p + right, where problem.h declares
// both inclusive (ONNX opset 25): one key lost on each side.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> window_exclusive_hypotheses() {
  return {alternative_reference(
      "window-exclusive", "matches the reference with window bounds exclusive (p − left < j < p + right)",
      [](const FailureEvidence& e) -> std::optional<Alteration> {
        const Problem& p = e.attention_case.problem;
        if (!p.has_window()) return std::nullopt;
        auto [problem, data] = with_structure(p, e.data, [&](std::int64_t b, std::int64_t i, std::int64_t j) {
          const std::int64_t key_length = key_length_of(p, e.data, b);
          const std::int64_t diagonal = p.diagonal_key(i, key_length);
          if (j >= key_length || (p.mask != MaskKind::None && j >= p.mask_k_len)) return false;
          if (p.causal && j > diagonal) return false;
          if (p.window_left >= 0 && !(j > diagonal - p.window_left)) return false;
          if (p.window_right >= 0 && !(j < diagonal + p.window_right)) return false;
          return true;
        });
        return Alteration{problem, data};
      })};
}

}  // namespace attncheck::diagnosis
