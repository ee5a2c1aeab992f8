#include "attncheck/kv_cache.h"

#include <fmt/format.h>

namespace attncheck {
namespace {

// A cache part of `length` tokens: must match `expected` exactly; with no tokens it may be absent.
void check_part(std::string_view tensor, const View4<const double>& view, const Shape4& expected,
                std::string_view last_dim) {
  if (view.empty()) {
    if (expected[2] == 0) return;
    throw ProblemError(fmt::format("{}: is missing (no data), but the step expects shape {}", tensor,
                                   shape_string(expected)));
  }
  const std::string_view names[4] = {"batch", "kv heads", "length", last_dim};
  for (int d = 0; d < 4; ++d)
    if (view.shape[d] != expected[d])
      throw ProblemError(fmt::format("{}: dim {} ({}) is {}, but the step expects {} (shape {} vs {})", tensor, d,
                                     names[d], view.shape[d], expected[d], shape_string(view.shape),
                                     shape_string(expected)));
}

// concat(past, new, axis 2) into a compact tensor; the present output of ONNX Attention.
HostTensor concatenate(const View4<const double>& past, const View4<const double>& added, const Shape4& shape,
                       std::int64_t past_len) {
  HostTensor present(shape);
  for (std::int64_t b = 0; b < shape[0]; ++b)
    for (std::int64_t g = 0; g < shape[1]; ++g)
      for (std::int64_t t = 0; t < shape[2]; ++t)
        for (std::int64_t d = 0; d < shape[3]; ++d)
          present(b, g, t, d) = t < past_len ? past(b, g, t, d) : added(b, g, t - past_len, d);
  return present;
}

}  // namespace

Problem decode_step_problem(const Problem& model, std::int64_t past_len, std::int64_t new_len) {
  if (model.mask != MaskKind::None)
    throw ProblemError("mask: the model problem has a mask, but a step's mask shape depends on the step; "
                       "set it on the returned problem");
  if (past_len < 0) throw ProblemError(fmt::format("past_k: dim 2 (length) is {}, but must be >= 0", past_len));
  if (new_len < 1) throw ProblemError(fmt::format("Q: dim 2 (new tokens) is {}, but must be at least 1", new_len));
  Problem step = model;
  step.q_len = new_len;
  step.k_len = past_len + new_len;
  step.causal = true;
  step.alignment = Alignment::Offset;
  step.diagonal_offset = past_len;
  step.has_key_lengths = false;
  return step;
}

void validate_decode_inputs(const Problem& step, const DecodeInputs& in) {
  step.validate();
  if (step.alignment != Alignment::Offset)
    throw ProblemError(fmt::format("alignment: is {}, but a decode step measures its diagonal from the past "
                                   "length (offset, with diagonal_offset = P)",
                                   alignment_name(step.alignment)));
  const std::int64_t past = step.diagonal_offset, added = step.k_len - step.diagonal_offset;
  check_part("past_k", in.past_k, {step.batch, step.kv_heads, past, step.qk_dim}, "head dim");
  check_part("past_v", in.past_v, {step.batch, step.kv_heads, past, step.v_dim}, "value dim");
  check_part("k_new", in.k_new, {step.batch, step.kv_heads, added, step.qk_dim}, "head dim");
  check_part("v_new", in.v_new, {step.batch, step.kv_heads, added, step.v_dim}, "value dim");
  // Q, the mask and the key lengths are the core attention's; only their shapes are checked here.
  const View4<const double> k_shape{in.q.data, {step.batch, step.kv_heads, step.k_len, step.qk_dim}, {}};
  const View4<const double> v_shape{in.q.data, {step.batch, step.kv_heads, step.k_len, step.v_dim}, {}};
  validate_inputs(step, {in.q, k_shape, v_shape, in.mask, in.key_lengths, in.alibi_slopes, in.sinks});
}

DecodeResult reference_decode_step(const Problem& step, const DecodeInputs& in, const ReferenceOptions& options) {
  validate_decode_inputs(step, in);
  const std::int64_t past = step.diagonal_offset;
  DecodeResult result;
  result.present_k = concatenate(in.past_k, in.k_new, {step.batch, step.kv_heads, step.k_len, step.qk_dim}, past);
  result.present_v = concatenate(in.past_v, in.v_new, {step.batch, step.kv_heads, step.k_len, step.v_dim}, past);
  const HostTensor& k = result.present_k;
  const HostTensor& v = result.present_v;
  result.attention = reference_attention(step, {in.q, k.view(), v.view(), in.mask, in.key_lengths, in.alibi_slopes, in.sinks},
                                         options);
  return result;
}

}  // namespace attncheck
