// Inference-kernel options (ABI 2.3): ALiBi and attention sinks are each equal to a formulation
// every kernel already has, an additive bias and one more key. A kernel's native path is judged
// against the reference of that other formulation (an expected value computed by different code),
// and, where the kernel runs the other formulation too, its two outputs must agree.
#include <cmath>
#include <cstdlib>
#include <limits>

#include "common.h"

namespace attncheck::props {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();


// A case run in two formulations: `native` (ALiBi or sinks) and `explicit_form` (the same function
// written with an additive mask), with the exact data of each (the explicit mask unrounded).
struct TwoForms {
  AttentionCase native, explicit_form;
  CaseData native_data, explicit_data;
};

// |O_a − O_b| ≤ |O_a − r_a| + |r_a − r_b| + |r_b − O_b|: two kernel outputs whose exact values r_a
// and r_b differ (the explicit bias rounded to the kernel's mask dtype) agree within
// τ_a + |r_a − r_b| + τ_b.
void expect_forms_agree(PropertyContext& ctx, const TwoForms& forms, const BackendRun& native_run,
                        const char* what) {
  if (!ctx.supports(forms.explicit_form.problem)) return;
  CaseData rounded = forms.explicit_data;
  round_additive_mask(forms.explicit_form.problem, rounded, ctx.profile(forms.explicit_form.problem).additive_mask_dtype());
  const JudgedRun other = run_and_bound(ctx, forms.explicit_form, rounded);
  const AttentionResult native_reference = reference_for(forms.native.problem, forms.native_data);
  HostTensor bound = tolerance_of(ctx, forms.native, forms.native_data, native_reference);
  for (size_t e = 0; e < bound.values.size(); ++e) {
    const double gap = std::fabs(native_reference.out.values[e] - other.reference.out.values[e]);
    if (std::isfinite(gap)) bound.values[e] += gap;
  }
  ctx.expect(compare_pair(native_run.out, bound, other.run.out, other.tau), forms.native, what);
}

// The native output against the reference of the explicit formulation (exact bias), with the
// native problem's own τ.
void expect_native_matches(PropertyContext& ctx, const TwoForms& forms, const BackendRun& run, const char* what) {
  const AttentionResult expected = reference_for(forms.explicit_form.problem, forms.explicit_data);
  ctx.note_judgement(expected, nullptr);
  const bool lse = run.lse && ctx.judges_lse();
  const Verdict verdict =
      compare_attention(forms.native.problem, ctx.profile(forms.native.problem), forms.native_data.inputs(forms.native.problem),
                        expected, run.out, lse ? &*run.lse : nullptr, ctx.compare_options(data_character(forms.native.values)));
  ctx.expect(verdict, forms.native, what);
}

// ALiBi written out: an additive mask [B, Hq, Lq, Lk] holding −slope·|j − p(b, i)| (problem.h).
TwoForms alibi_as_bias(PropertyContext& ctx, const AttentionCase& c) {
  TwoForms f{c, c, ctx.case_data(c), {}};
  const Problem& p = c.problem;
  Problem& q = f.explicit_form.problem;
  q.alibi = AlibiSlopes::None;
  q.mask = MaskKind::Additive;
  q.mask_batch = p.batch;
  q.mask_heads = p.q_heads;
  q.mask_q_len = p.q_len;
  q.mask_k_len = p.k_len;
  f.explicit_data = f.native_data;
  f.explicit_data.alibi_slopes.clear();
  f.explicit_data.mask = HostTensor({p.batch, p.q_heads, p.q_len, p.k_len});
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t key_length = p.has_key_lengths ? f.native_data.key_lengths[static_cast<size_t>(b)] : p.k_len;
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const double slope =
          f.native_data.alibi_slopes[static_cast<size_t>(p.alibi == AlibiSlopes::PerHead ? h : b * p.q_heads + h)];
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t j = 0; j < p.k_len; ++j)  // exact in double: a float32 slope times an integer
          f.explicit_data.mask(b, h, i, j) = -slope * static_cast<double>(std::abs(j - p.diagonal_key(i, key_length)));
    }
  }
  return f;
}

void alibi_equals_bias(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.mask = false;  // the explicit form needs the mask slot
  space.alibi = true;  // drawn per head or per batch row; forced on when the draw left it off
  space.sinks = declares(ctx, kAttncheckOptionSinks);  // beside ALiBi where the backend has them
  AttentionCase c = ctx.draw_case(space, all_value_kinds());
  if (!c.problem.has_alibi()) c.problem.alibi = AlibiSlopes::PerHead;
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const TwoForms forms = alibi_as_bias(ctx, c);
  const BackendRun run = ctx.run(forms.native, forms.native_data);
  expect_native_matches(ctx, forms, run, "ALiBi against the reference of the same bias as an additive mask");
  expect_forms_agree(ctx, forms, run, "ALiBi against the kernel's own additive-mask path");
}

// A sink written out: one more key, first (so that key lengths keep it), with K = 0 and V = 0,
// whose additive bias is the sink logit; the original keys keep bias 0. Its raw score is 0, which
// softcap keeps at 0, so its final score is the sink. A sink of −inf is a key masked out.
TwoForms sink_as_key(PropertyContext& ctx, const AttentionCase& c) {
  TwoForms f{c, c, ctx.case_data(c), {}};
  const Problem& p = c.problem;
  Problem& q = f.explicit_form.problem;
  q.sinks = false;
  q.k_len = p.k_len + 1;
  q.mask = MaskKind::Additive;
  q.mask_batch = 1;
  q.mask_heads = p.q_heads;
  q.mask_q_len = 1;
  q.mask_k_len = q.k_len;
  f.explicit_form.key_lengths.clear();
  CaseData& d = f.explicit_data;
  const CaseData& n = f.native_data;
  d.q = n.q;
  d.k = HostTensor({p.batch, p.kv_heads, q.k_len, p.qk_dim});
  d.v = HostTensor({p.batch, p.kv_heads, q.k_len, p.v_dim});
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t j = 0; j < p.k_len; ++j) {
        for (std::int64_t l = 0; l < p.qk_dim; ++l) d.k(b, g, j + 1, l) = n.k(b, g, j, l);
        for (std::int64_t l = 0; l < p.v_dim; ++l) d.v(b, g, j + 1, l) = n.v(b, g, j, l);
      }
  d.mask = HostTensor({1, p.q_heads, 1, q.k_len});
  for (std::int64_t h = 0; h < p.q_heads; ++h) d.mask(0, h, 0, 0) = n.sinks[static_cast<size_t>(h)];
  d.key_lengths = n.key_lengths;
  for (auto& length : d.key_lengths) length += 1;
  d.sinks.clear();
  return f;
}

void sink_equals_extra_key(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  // The extra key is key 0: no mask (the explicit form needs the slot), and no causal or window,
  // which would measure the diagonal from shifted keys.
  space.mask = space.causal = space.window = false;
  space.sinks = true;  // forced on when the draw left it off
  AttentionCase c = ctx.draw_case(space, all_value_kinds());
  c.problem.sinks = true;
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const TwoForms forms = sink_as_key(ctx, c);
  const BackendRun run = ctx.run(forms.native, forms.native_data);
  expect_native_matches(ctx, forms, run, "sinks against the reference of one extra key of value 0");
  expect_forms_agree(ctx, forms, run, "sinks against the kernel's own extra-key formulation");
}

// The backward pass with ALiBi and sinks: ALiBi is a constant of the scores, so dS flows through
// it unchanged; with a sink, P = exp(s − lse) from the lse that includes it and D = dO·O make the
// gradients of Q, K and V the sink-aware ones (backend.h). Judged against the reference's
// gradients within gradient_tolerance's τ (numerics/README.md §6.6, §6.7, §10).
void inference_options_backward(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.alibi = declares(ctx, kAttncheckOptionAlibi);
  space.sinks = declares(ctx, kAttncheckOptionSinks);
  AttentionCase c = ctx.draw_case(space, all_value_kinds());
  if (!c.problem.has_alibi() && !c.problem.sinks) {
    if (space.sinks) c.problem.sinks = true;
    else c.problem.alibi = AlibiSlopes::PerHead;
  }
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const BackwardProfile backward = ctx.backward_profile(c.problem);
  const bool d_lse = backward.accepts_dlse && *rc::gen::element(false, true);
  const JudgedBackward j = run_backward_and_bound(ctx, c, d_lse, wants_d_bias(c.problem, backward));
  ctx.expect(judge_gradients(j), c,
             std::string("agreement of the gradients with ALiBi or sinks") + (d_lse ? " (with dLSE)" : ""));
}

}  // namespace

std::vector<PropertyDef> inference_properties() {
  PropertyDef backward;
  backward.name = "inference-options-backward";
  backward.family = "inference";
  backward.why = "ALiBi is a constant of the scores and a sink's lse carries it: the backward formulas hold unchanged";
  backward.body = inference_options_backward;
  backward.needs_backward = true;
  return {
      {"alibi-equals-bias", "inference",
       "ALiBi is by definition the additive bias −slope·|j − p| on the causal diagonal: the two formulations agree",
       false, alibi_equals_bias},
      {"sink-equals-extra-key", "inference",
       "a sink adds e^σ to the softmax denominator only, which is one more key of score σ and value 0", false,
       sink_equals_extra_key},
      backward,
  };
}

}  // namespace attncheck::props
