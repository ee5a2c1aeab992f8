// K's (or V's) batch stride ignored: every batch reads batch 0's keys (values). The case tells it
// from the truth only with B > 1.
#include "../src/alternatives.h"

namespace attncheck::diagnosis {
namespace {

Hypothesis batch_zero(std::string name, std::string statement, HostTensor CaseData::*tensor) {
  return alternative_reference(std::move(name), std::move(statement),
                               [tensor](const FailureEvidence& e) -> std::optional<Alteration> {
                                 const Problem& p = e.attention_case.problem;
                                 if (p.batch == 1) return std::nullopt;
                                 CaseData d = e.data;
                                 HostTensor& t = d.*tensor;
                                 const Shape4& s = t.shape;
                                 for (std::int64_t b = 1; b < s[0]; ++b)
                                   for (std::int64_t h = 0; h < s[1]; ++h)
                                     for (std::int64_t l = 0; l < s[2]; ++l)
                                       for (std::int64_t x = 0; x < s[3]; ++x) t(b, h, l, x) = t(0, h, l, x);
                                 return Alteration{p, d};
                               });
}

}  // namespace

std::vector<Hypothesis> batch_zero_kv_hypotheses() {
  return {batch_zero("k-batch-zero", "matches the reference with every batch reading batch 0's K (K's batch stride ignored)",
                     &CaseData::k),
          batch_zero("v-batch-zero", "matches the reference with every batch reading batch 0's V (V's batch stride ignored)",
                     &CaseData::v)};
}

}  // namespace attncheck::diagnosis
