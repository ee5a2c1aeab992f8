// fp8 inputs with descales (ABI 2.6; FlashAttention 3's q_descale, k_descale, v_descale): the
// stored values and their factors are storage, the attention is that of their products
// (problem.h). These properties run on e4m3 and e5m2 inputs only (PropertyDef::fp8_inputs), and
// every other property skips those dtypes: their constructions (scaling Q by a power of two,
// grids exact in the dtype, a mask in the input dtype) assume values the fp8 formats do not hold.
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {


// A drawn case with descales per tensor or per (batch, kv head): what fp8 inputs take of the draw
// (GQA, causal in every alignment, the window, softcap, a boolean mask, key lengths, poison, the
// [B, L, H, D] layout, ALiBi and sinks where the backend declares them). An additive mask, which
// would be read in the fp8 dtype, becomes none; a pinned descaled case is kept.
AttentionCase draw_fp8_case(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.alibi = declares(ctx, kAttncheckOptionAlibi);
  space.sinks = declares(ctx, kAttncheckOptionSinks);
  AttentionCase c = ctx.draw_case(space, all_value_kinds());
  if (c.problem.has_descales()) return c;
  Problem& p = c.problem;
  if (p.mask == MaskKind::Additive) {
    p.mask = MaskKind::None;
    p.mask_batch = p.mask_heads = p.mask_q_len = p.mask_k_len = 1;
  }
  p.descale = *rc::gen::element(Descale::PerTensor, Descale::PerHead);
  return c;
}


// 1. The kernel's output on stored values and factors against the reference of their products.
void fp8_reference_agreement(PropertyContext& ctx) {
  const AttentionCase c = draw_fp8_case(ctx);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun run = run_and_bound(ctx, c);
  ctx.expect(judge(ctx, c, run.data, run.run), c, "fp8 inputs against the reference of their dequantized values");
}

// 2. A factor of 2 moved from q's descale to k's (per group) changes no dequantized score:
// (2·dq)·(dk/2) = dq·dk exactly, and every kernel's q·(2dq) = 2(q·dq) and fl(2a·b/2) = fl(a·b)
// (power-of-two scalings commute with rounding away from under- and overflow). So a deterministic
// path gives the same bits; any other agrees within τ + τ′. A kernel that applies a factor to the
// wrong tensor, or one of them twice, is caught by the first property or here.
void fp8_descale_exchange(PropertyContext& ctx) {
  const AttentionCase c = draw_fp8_case(ctx);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun a = run_and_bound(ctx, c);
  CaseData moved = a.data;
  for (double& f : moved.q_descale) f *= 2;
  for (double& f : moved.k_descale) f /= 2;
  const JudgedRun b = run_and_bound(ctx, c, std::move(moved));
  ctx.expect(judge(ctx, c, a.data, a.run), c, "fp8 inputs against the reference of their dequantized values");
  expect_same_output(ctx, c, a, b, "q_descale doubled and k_descale halved",
                     "the dequantized scores are the same numbers, and the path is declared deterministic");
}

std::string needs_fp8_option(const NumericsProfile& profile) {
  return is_fp8(profile.input) ? std::string() : fmt::format("runs on fp8 (e4m3, e5m2) inputs, not {}", dtype_name(profile.input));
}

}  // namespace

std::vector<PropertyDef> fp8_properties() {
  PropertyDef agreement{"fp8-reference-agreement", "fp8",
                        "descales are storage: the output on fp8 values and their factors is the attention of their products",
                        false, fp8_reference_agreement, needs_fp8_option};
  agreement.fp8_inputs = true;
  PropertyDef exchange{"fp8-descale-exchange", "fp8",
                       "only the product of q's and k's factors enters the scores: a power of two moved between them changes "
                       "no output",
                       false, fp8_descale_exchange, needs_fp8_option};
  exchange.fp8_inputs = true;
  return {agreement, exchange};
}

}  // namespace attncheck::props
