#include "attncheck/numerics_profile.h"

#include <fmt/format.h>

namespace attncheck {

// "in=f16 S=f32 P=f16 acc=f32 out=f16 RN k0=1 block=128 det zeros": every field the tolerance
// model reads, so two profiles that print alike get the same τ.
std::string NumericsProfile::describe() const {
  std::string text = fmt::format("in={} S={}", dtype_name(input), dtype_name(score));
  if (score_accumulator) text += fmt::format(" Sacc={}", dtype_name(*score_accumulator));
  text += fmt::format(" P={} acc={} out={} {} k0={} block={}", dtype_name(probability), dtype_name(accumulator),
                      dtype_name(output), accumulation_rounding == Rounding::Nearest ? "RN" : "RZ",
                      products_per_rounding, softmax_block);
  if (deterministic) text += " det";
  text += fmt::format(" {}", empty_row_name(empty_row));
  if (flushes_subnormals) text += " ftz";
  if (!accepts_strides) text += " compact";
  if (writes_lse) text += " lse";
  if (exp_relative_error > 0) text += fmt::format(" uE={:.3g}", exp_relative_error);
  if (tanh_relative_error > 0) text += fmt::format(" uT={:.3g}", tanh_relative_error);
  if (query_rounding) text += fmt::format(" Q={}", dtype_name(*query_rounding));
  if (key_rounding) text += fmt::format(" K={}", dtype_name(*key_rounding));
  if (value_rounding) text += fmt::format(" V={}", dtype_name(*value_rounding));
  if (mask_dtype) text += fmt::format(" mask={}", dtype_name(*mask_dtype));
  if (row_sum_accumulator) text += fmt::format(" sum={}", dtype_name(*row_sum_accumulator));
  if (keys_per_partial_sum > 0) text += fmt::format(" partial={}", keys_per_partial_sum);
  if (kv_splits > 1) text += fmt::format(" splits={}", kv_splits);
  if (empty_row_lse != EmptyRowLse::NegativeInfinity) text += fmt::format(" lse0={}", empty_row_lse_name(empty_row_lse));
  if (masked_keys_weighted_by_zero) text += " masked*0";
  return text;
}

std::string BackwardProfile::describe(DType input) const {
  std::string text = fmt::format("grad={} P={} dP={} dS={} acc={}", dtype_name(gradient_dtype(input)),
                                 dtype_name(probability), dtype_name(dp), dtype_name(ds), dtype_name(accumulator));
  if (group_sum) text += fmt::format(" group={}", dtype_name(*group_sum));
  if (query_block > 0 || key_block > 0) text += fmt::format(" blocks={}x{}", query_block, key_block);
  if (recomputes_from_lse) text += " lse";
  if (dq_atomic) text += " dq-atomic";
  if (deterministic) text += " det";
  if (accepts_dlse) text += " dlse";
  if (writes_dbias) text += " dbias";
  return text;
}

std::vector<std::string> NumericsProfile::declared_conventions() const {
  std::vector<std::string> conventions;
  if (masked_keys_weighted_by_zero)
    conventions.emplace_back(
        "declared: masked keys are weighted by zero, so NaN or Inf in masked K/V propagates — poisoned with finite "
        "values only");
  if (empty_row_lse == EmptyRowLse::Zero) conventions.emplace_back("declared: a row with no allowed key has LSE = 0");
  if (empty_row_lse == EmptyRowLse::Unspecified)
    conventions.emplace_back("declared: the LSE of a row with no allowed key is unspecified — not checked");
  return conventions;
}

std::string_view empty_row_lse_name(EmptyRowLse convention) {
  switch (convention) {
    case EmptyRowLse::NegativeInfinity: return "-inf";
    case EmptyRowLse::Zero: return "zero";
    case EmptyRowLse::Unspecified: return "unspecified";
  }
  return "?";
}

}  // namespace attncheck
