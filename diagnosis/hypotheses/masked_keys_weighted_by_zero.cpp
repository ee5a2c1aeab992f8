// Masked keys weighted by exp(−inf) = 0 instead of skipped (reference.h: they must be excluded):
// 0·NaN = NaN, so a non-finite V (or K) in a dead key reaches the output. The signature is exact:
// O is non-finite in column d of row i iff a key dead to row i holds a non-finite V[·, d] (or,
// when the kernel also forms scores of dead keys, in the whole row iff one holds a non-finite K).
#include <cmath>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> masked_keys_weighted_by_zero_hypotheses() {
  const std::string statement =
      "masked keys weighted by zero instead of skipped: the NaN/Inf of O are exactly where dead keys hold non-finite V or K";
  return {{"masked-keys-weighted-by-zero", statement, [statement](const FailureEvidence& e) -> std::optional<std::string> {
             if (!can_recompute(e) || e.profile.masked_keys_weighted_by_zero) return std::nullopt;
             const Problem& p = e.attention_case.problem;
             const HostTensor& allowed_keys = e.reference.stats->allowed_keys;
             bool v_only = true, v_or_k = true, any_leak = false;
             for (std::int64_t b = 0; b < p.batch; ++b)
               for (std::int64_t h = 0; h < p.q_heads; ++h) {
                 const std::int64_t g = p.kv_head_of(h);
                 for (std::int64_t i = 0; i < p.q_len; ++i) {
                   if (allowed_keys(0, b, h, i) == 0) continue;  // 0/0 there whatever the dead keys hold
                   std::vector<char> dead_v(static_cast<size_t>(p.v_dim), 0);
                   bool dead_k = false;
                   for (std::int64_t j = 0; j < p.k_len; ++j) {
                     if (key_allowed(p, e.data, b, h, i, j)) continue;
                     for (std::int64_t d = 0; d < p.v_dim; ++d)
                       if (!std::isfinite(e.data.v(b, g, j, d))) dead_v[static_cast<size_t>(d)] = 1;
                     for (std::int64_t d = 0; d < p.qk_dim; ++d) dead_k = dead_k || !std::isfinite(e.data.k(b, g, j, d));
                   }
                   for (std::int64_t d = 0; d < p.v_dim; ++d) {
                     const double x = e.run_out(b, h, i, d);
                     const bool leaked = !std::isfinite(x), by_v = dead_v[static_cast<size_t>(d)] != 0;
                     any_leak = any_leak || leaked;
                     v_only = v_only && leaked == by_v;
                     v_or_k = v_or_k && leaked == (by_v || dead_k);
                     // Where nothing leaks the output must be right, or another bug is at work.
                     if (!leaked && !(std::fabs(x - e.reference.out(b, h, i, d)) <= e.tau(b, h, i, d))) return std::nullopt;
                   }
                 }
               }
             if (!any_leak || !(v_only || v_or_k)) return std::nullopt;
             return statement;
           }}};
}

}  // namespace attncheck::diagnosis
