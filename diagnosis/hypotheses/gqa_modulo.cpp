// Grouped-query attention mapped the wrong way: query head h reads kv head h % Hkv instead of
// h / (Hq / Hkv) (problem.h, Problem::kv_head_of; ONNX's repeat-interleave order).
#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> gqa_modulo_hypotheses() {
  return {alternative_reference(
      "gqa-modulo", "matches the reference with query head h reading kv head h % Hkv instead of h / (Hq/Hkv)",
      [](const FailureEvidence& e) -> std::optional<Alteration> {
        Problem p = e.attention_case.problem;
        if (p.kv_heads == 1 || p.kv_heads == p.q_heads) return std::nullopt;
        // As an MHA problem: every query head gets the kv head the modulo picks.
        CaseData d = e.data;
        for (HostTensor* t : {&d.k, &d.v}) {
          const HostTensor grouped = *t;
          *t = HostTensor({p.batch, p.q_heads, grouped.shape[2], grouped.shape[3]});
          for (std::int64_t b = 0; b < p.batch; ++b)
            for (std::int64_t h = 0; h < p.q_heads; ++h)
              for (std::int64_t l = 0; l < grouped.shape[2]; ++l)
                for (std::int64_t x = 0; x < grouped.shape[3]; ++x) (*t)(b, h, l, x) = grouped(b, h % p.kv_heads, l, x);
        }
        p.kv_heads = p.q_heads;
        return Alteration{p, d};
      })};
}

}  // namespace attncheck::diagnosis
