// The multi-head attention layer: every head projects X with its own W_Q^(h) (and its group's
// W_K^(g), W_V^(g)), attends on its own, and the concatenated heads go through W_O. A layer is
// right only if each of those holds: agreement with the reference layer within the layer bound,
// MQA/GQA sharing of K/V projections equal to MHA with replicated weights, and heads that depend
// on their own projections only.
#include <bit>
#include <cmath>
#include <fmt/format.h>

#include "attncheck/layer_tolerance.h"
#include "common.h"

namespace attncheck::props {
namespace {

// Layer problems without rows that lose every key (the layer has no empty-row convention to
// check): causal only top-left, windows only for self-attention, additive masks finite.
rc::Gen<LayerCase> gen_layer_case(DType dtype) {
  return rc::gen::exec([dtype] {
    LayerCase c;
    ProblemSpace space;
    space.key_lengths = space.layouts = space.poison = space.causal = false;
    space.max_len = 24;
    space.max_heads = 6;
    Problem p = *gen_problem(space);
    p.qk_dim = std::min<std::int64_t>(p.qk_dim, 16);
    p.v_dim = std::min<std::int64_t>(p.v_dim, 16);
    if (p.mask == MaskKind::Boolean) p.mask = MaskKind::Additive;
    c.problem.self_attention = *rc::gen::element(true, false);
    if (c.problem.self_attention) {
      p.k_len = p.q_len;
      p.causal = *rc::gen::element(false, true);
    } else {
      p.window_left = p.window_right = -1;
    }
    if (p.mask != MaskKind::None) {
      if (p.mask_q_len != 1) p.mask_q_len = p.q_len;
      p.mask_k_len = p.k_len;
    }
    c.problem.attention = p;
    c.problem.model_dim = *rc::gen::element<std::int64_t>(8, 1, 3, 16, 33);
    c.problem.has_qkv_bias = *rc::gen::element(false, true);
    c.problem.has_out_bias = *rc::gen::element(false, true);
    c.dtype = dtype;
    c.seed = *rc::gen::inRange<std::uint64_t>(0, 1u << 20);
    return c;
  });
}

LayerResult reference_layer_for(const LayerCase& c, const LayerCaseData& d) {
  ReferenceOptions options;
  options.row_statistics = true;
  options.probabilities = true;
  return reference_layer(c.problem, d.inputs(c.problem), options);
}

void layer_agreement(PropertyContext& ctx) {
  const LayerCase c = *gen_layer_case(ctx.dtype());
  const LayerCaseData data = make_layer_case_data(c);
  const BackendRun run = ctx.run_layer(c.problem, c.describe(), data.inputs(c.problem));
  const LayerResult reference = reference_layer_for(c, data);
  ctx.expect(compare_layer(c.problem, ctx.profile(c.problem.attention), DataCharacter::GenericRandom,
                           data.inputs(c.problem), reference, run.out),
             c.describe(), "agreement with the reference layer");
}

// Two layer runs equal in exact arithmetic: |a − b| ≤ τa + τb.
Verdict compare_layer_runs(PropertyContext& ctx, const LayerCase& ca, const LayerCaseData& da, const BackendRun& ra,
                           const LayerCase& cb, const LayerCaseData& db, const BackendRun& rb) {
  const HostTensor ta = layer_tolerance(ca.problem, ctx.profile(ca.problem.attention), DataCharacter::GenericRandom,
                                        da.inputs(ca.problem), reference_layer_for(ca, da));
  const HostTensor tb = layer_tolerance(cb.problem, ctx.profile(cb.problem.attention), DataCharacter::GenericRandom,
                                        db.inputs(cb.problem), reference_layer_for(cb, db));
  return compare_pair(ra.out, ta, rb.out, tb);
}

// An MQA/GQA layer shares W_K^(g), W_V^(g) among the Hq/Hkv heads of group g: it must equal the
// MHA layer whose head h carries a copy of its group's projections.
void layer_shared_kv_equivalence(PropertyContext& ctx) {
  LayerCase c = *gen_layer_case(ctx.dtype());
  Problem& p = c.problem.attention;
  if (p.kv_heads == p.q_heads) {
    p.kv_heads = 1;
    p.q_heads = std::max<std::int64_t>(p.q_heads, 3);
    if (p.mask_heads != 1) p.mask_heads = p.q_heads;
  }
  const LayerCaseData grouped = make_layer_case_data(c);
  const BackendRun grouped_run = ctx.run_layer(c.problem, c.describe(), grouped.inputs(c.problem));
  LayerCase mha = c;
  mha.problem.attention.kv_heads = p.q_heads;
  LayerCaseData replicated = grouped;
  auto replicate = [&](const HostTensor& t, bool bias) {
    HostTensor r = bias ? HostTensor({1, 1, p.q_heads, t.shape[3]}) : HostTensor({1, p.q_heads, t.shape[2], t.shape[3]});
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t a = 0; a < (bias ? 1 : t.shape[2]); ++a)
        for (std::int64_t l = 0; l < t.shape[3]; ++l) {
          if (bias) r(0, 0, h, l) = t(0, 0, p.kv_head_of(h), l);
          else r(0, h, a, l) = t(0, p.kv_head_of(h), a, l);
        }
    return r;
  };
  replicated.w_k = replicate(grouped.w_k, false);
  replicated.w_v = replicate(grouped.w_v, false);
  replicated.b_k = replicate(grouped.b_k, true);
  replicated.b_v = replicate(grouped.b_v, true);
  const BackendRun mha_run = ctx.run_layer(mha.problem, mha.describe(), replicated.inputs(mha.problem));
  ctx.expect(compare_layer_runs(ctx, c, grouped, grouped_run, mha, replicated, mha_run), c.describe(),
             fmt::format("the layer with {} kv heads differs from MHA with replicated K/V projections", p.kv_heads));
}

// With d_model = Hq·Dv and W_O = I, the output is the concatenation of the heads: changing
// W_Q^(j) may change head j's block only (bitwise elsewhere for a deterministic kernel).
void layer_head_independence(PropertyContext& ctx) {
  LayerCase c = *gen_layer_case(ctx.dtype());
  Problem& p = c.problem.attention;
  if (p.q_heads == 1) {
    p.q_heads = p.kv_heads = 2;
    if (p.mask_heads != 1) p.mask_heads = 2;
  }
  c.problem.model_dim = p.q_heads * p.v_dim;
  c.problem.has_out_bias = false;
  const std::int64_t target = *rc::gen::inRange<std::int64_t>(0, p.q_heads);
  LayerCaseData data = make_layer_case_data(c);
  data.w_o = HostTensor({1, 1, c.problem.model_dim, c.problem.model_dim});
  for (std::int64_t m = 0; m < c.problem.model_dim; ++m) data.w_o(0, 0, m, m) = 1.0;  // block selector
  LayerCaseData changed = data;
  PortableRandom rng(c.seed + 23);
  const double w_in = 1.0 / std::sqrt(static_cast<double>(c.problem.model_dim));
  for (std::int64_t m = 0; m < c.problem.model_dim; ++m)
    for (std::int64_t l = 0; l < p.qk_dim; ++l) changed.w_q(0, target, m, l) = round_to(c.dtype, w_in * rng.normal());
  const BackendRun before = ctx.run_layer(c.problem, c.describe(), data.inputs(c.problem));
  const BackendRun after = ctx.run_layer(c.problem, c.describe(), changed.inputs(c.problem));
  const HostTensor tau_before = layer_tolerance(c.problem, ctx.profile(c.problem.attention), DataCharacter::GenericRandom,
                                                data.inputs(c.problem), reference_layer_for(c, data));
  const HostTensor tau_after = layer_tolerance(c.problem, ctx.profile(c.problem.attention), DataCharacter::GenericRandom,
                                               changed.inputs(c.problem), reference_layer_for(c, changed));
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t i = 0; i < p.q_len; ++i)
      for (std::int64_t m = 0; m < c.problem.model_dim; ++m) {
        if (m / p.v_dim == target) continue;
        const double x = before.out(0, b, i, m), y = after.out(0, b, i, m);
        const bool same = std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y);
        const double bound = tau_before(0, b, i, m) + tau_after(0, b, i, m);
        if (!(same || (!ctx.profile(c.problem.attention).deterministic && std::fabs(x - y) <= bound)))
          ctx.fail(c.describe(), fmt::format("changing W_Q of head {} changed head {}'s output at [{}, {}, {}]: {} → {}",
                                             target, m / p.v_dim, b, i, m, x, y));
      }
}

}  // namespace

std::vector<PropertyDef> layer_properties() {
  return {
      {"layer-agreement", "layer",
       "the layer is per-head projections, attention and the output projection: it must match the reference layer",
       true, layer_agreement, {}, false},
      {"layer-shared-kv-equivalence", "layer",
       "sharing K/V projections within a group is MHA with those projections replicated", true,
       layer_shared_kv_equivalence, {}, false},
      {"layer-head-independence", "layer", "each head depends on its own W_Q only", true, layer_head_independence, {}, false},
  };
}

}  // namespace attncheck::props
