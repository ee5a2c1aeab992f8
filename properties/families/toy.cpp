// Two-token toy cases: with two keys softmax reduces to a logistic, p₁ = 1/(1 + e^{−(s₁ − s₂)}),
// and O = V₂ + p₁(V₁ − V₂); with one allowed key O = V. B = 1, H = 2, L = 2, D = 2 is also the
// layout trap: [B, H, L, D] and [B, L, H, D] have the same size, so a kernel that swaps the
// sequence and head axes produces a plausible answer that these closed forms reject.
#include <cmath>
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {

void two_tokens(PropertyContext& ctx) {
  AttentionCase c;
  Problem& p = c.problem;
  p.batch = 1;
  p.q_heads = 2;
  p.kv_heads = *rc::gen::element<std::int64_t>(2, 1);
  p.q_len = p.k_len = 2;
  p.qk_dim = p.v_dim = 2;
  p.causal = *rc::gen::element(false, true);
  p.alignment = *rc::gen::element(Alignment::TopLeft, Alignment::BottomRight);
  if (*rc::gen::element(false, true)) {
    p.mask = MaskKind::Boolean;
    p.mask_batch = p.mask_heads = p.mask_q_len = 1;
    p.mask_k_len = 2;
  }
  c.dtype = ctx.dtype();
  c.values = ValueKind::Grid;
  c.sequence_major = *rc::gen::element(true, false);
  c.seed = *rc::gen::inRange<std::uint64_t>(0, 1000);
  ctx.classify(c);
  ctx.require_supported(p);
  CaseData data = ctx.case_data(c);
  if (p.mask == MaskKind::Boolean) {  // exactly one of the two keys masked for every query
    data.mask = HostTensor({1, 1, 1, 2}, 1.0);
    data.mask(0, 0, 0, *rc::gen::element(0, 1)) = 0.0;
  }

  // The closed forms, evaluated in double on the exact inputs.
  const double scale = 1.0 / std::sqrt(2.0);
  HostTensor closed({1, 2, 2, 2});
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 2; ++i) {
      const std::int64_t g = p.kv_head_of(h);
      bool allowed[2];
      for (std::int64_t k = 0; k < 2; ++k) {
        const std::int64_t diagonal = i + (p.alignment == Alignment::BottomRight ? p.k_len - p.q_len : 0);
        allowed[k] = (!p.causal || k <= diagonal) && (p.mask == MaskKind::None || data.mask(0, 0, 0, k) != 0.0);
      }
      double s[2];
      for (std::int64_t k = 0; k < 2; ++k)
        s[k] = scale * (data.q(0, h, i, 0) * data.k(0, g, k, 0) + data.q(0, h, i, 1) * data.k(0, g, k, 1));
      for (std::int64_t j = 0; j < 2; ++j) {
        const double v1 = data.v(0, g, 0, j), v2 = data.v(0, g, 1, j);
        if (allowed[0] && allowed[1]) {
          const double p1 = 1.0 / (1.0 + std::exp(-(s[0] - s[1])));
          closed(0, h, i, j) = v2 + p1 * (v1 - v2);
        } else {
          closed(0, h, i, j) = allowed[0] ? v1 : allowed[1] ? v2 : 0.0;
        }
      }
    }
  ReferenceOptions options;
  options.row_statistics = true;
  const AttentionResult reference = reference_attention(p, data.inputs(p), options);
  for (size_t n = 0; n < closed.values.size(); ++n)
    // Both evaluate the same real number in double: a few roundings of values ≤ 2 in magnitude.
    if (std::fabs(closed.values[n] - reference.out.values[n]) > 1e-14)
      ctx.fail(c, fmt::format("internal: the reference ({}) disagrees with the closed form ({})", reference.out.values[n],
                              closed.values[n]));
  const BackendRun run = ctx.run(c, data);
  ctx.expect(compare_attention(p, ctx.profile(p), data.inputs(p), reference, run.out, run.lse ? &*run.lse : nullptr,
                               ctx.compare_options(DataCharacter::Structured)),
             c, "two-token closed form");
}

}  // namespace

std::vector<PropertyDef> toy_properties() {
  return {
      {"two-token-closed-form", "toy",
       "two keys reduce softmax to a logistic with a closed form; B=1, H=2, L=2 is also the layout trap", false,
       two_tokens, {}, false},
  };
}

}  // namespace attncheck::props
