// Softcap c·tanh(s/c) (problem.h: applied to the scaled scores, before any bias) left out, or
// applied after the additive bias. The second is a different score per key: it is expressed as
// the problem without softcap whose bias carries the difference, c·tanh((s + β)/c) − s, so that
// the reference's dot products, and the logit bound on them, stay those of the case.
#include <cmath>
#include <limits>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> softcap_hypotheses() {
  return {
      alternative_reference("softcap-missing", "matches the reference without the softcap",
                            [](const FailureEvidence& e) -> std::optional<Alteration> {
                              Problem p = e.attention_case.problem;
                              if (p.softcap <= 0) return std::nullopt;
                              p.softcap = 0;
                              return Alteration{p, e.data};
                            }),
      alternative_reference(
          "softcap-after-bias", "matches the reference with the softcap applied after the additive bias: c·tanh((s + β)/c)",
          [](const FailureEvidence& e) -> std::optional<Alteration> {
            const Problem& p = e.attention_case.problem;
            if (p.softcap <= 0 || p.mask != MaskKind::Additive) return std::nullopt;
            ReferenceOptions options;
            options.score_stages = true;
            options.threads = 1;
            const AttentionResult staged = reference_attention(p, e.data.inputs(p), options);
            const HostTensor& raw = staged.scores->raw;
            Problem altered = p;
            altered.softcap = 0;
            altered.mask_batch = p.batch;
            altered.mask_heads = p.q_heads;
            altered.mask_q_len = p.q_len;
            CaseData d = e.data;
            d.mask = HostTensor({p.batch, p.q_heads, p.q_len, p.mask_k_len});
            const double c = p.softcap;
            for (std::int64_t b = 0; b < p.batch; ++b)
              for (std::int64_t h = 0; h < p.q_heads; ++h)
                for (std::int64_t i = 0; i < p.q_len; ++i)
                  for (std::int64_t j = 0; j < p.mask_k_len; ++j) {
                    const double bias = e.data.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h,
                                                    p.mask_q_len == 1 ? 0 : i, j);
                    const double s = raw(b, h, i, j);
                    d.mask(b, h, i, j) = std::isfinite(bias) && std::isfinite(s) ? c * std::tanh((s + bias) / c) - s : bias;
                  }
            return Alteration{altered, d};
          }),
  };
}

}  // namespace attncheck::diagnosis
