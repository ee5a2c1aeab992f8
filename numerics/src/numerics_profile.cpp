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
  return text;
}

}  // namespace attncheck
