// Conformance: a correct kernel computes the function the reference specifies, within the bound
// the tolerance model derives from its declared numerics profile — on generic data and on the
// hard inputs that break real kernels (huge logits, empty rows, masked tiles, subnormals).
#include <cmath>

#include "common.h"

namespace attncheck::props {
namespace {

void reference_agreement(PropertyContext& ctx) {
  const AttentionCase c = ctx.draw_case(ctx.space(),
                                    {ValueKind::Gaussian, ValueKind::Grid, ValueKind::Ties, ValueKind::DuplicateKeys,
                                     ValueKind::OneHotV, ValueKind::LargeLogits, ValueKind::Diffuse,
                                     ValueKind::Peaked, ValueKind::ConstantV, ValueKind::NonNegativeV});
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const CaseData data = ctx.case_data(c);
  const BackendRun run = ctx.run(c, data);
  ctx.expect(judge(ctx, c, data, run), c, "agreement with the reference");
}

enum class HardInput { LargeLogits, EmptyRows, MaskedTiles, Subnormal };

void robustness(PropertyContext& ctx) {
  const HardInput hard = *rc::gen::element(HardInput::LargeLogits, HardInput::EmptyRows, HardInput::MaskedTiles,
                                           HardInput::Subnormal);
  AttentionCase c = ctx.draw_case(ctx.space());
  Problem& p = c.problem;
  switch (hard) {
    case HardInput::LargeLogits:
      c.values = ValueKind::LargeLogits;  // |s| ≈ 1e3: exp overflows without max-subtraction
      break;
    case HardInput::EmptyRows:
      // A window entirely left of the diagonal's reach, or a key length of 0, leaves rows with
      // no allowed key: the declared convention must come out exactly, never an accident.
      p.has_key_lengths = true;
      c.poison_masked = true;
      break;
    case HardInput::MaskedTiles:
      mask_whole_key_tiles(p);
      break;
    case HardInput::Subnormal: break;
  }
  ctx.classify(c);
  ctx.require_supported(p);
  CaseData data = ctx.case_data(c);
  if (hard == HardInput::EmptyRows) data.key_lengths[0] = 0;
  if (hard == HardInput::Subnormal) {
    // V scaled into the subnormal range of the dtype (re-rounded: the kernel receives these bits).
    const double tiny = smallest_normal(c.dtype) / 8;
    for (double& x : data.v.values)
      if (std::isfinite(x)) x = round_to(c.dtype, x * tiny);
  }
  const BackendRun run = ctx.run(c, data);
  ctx.expect(judge(ctx, c, data, run), c, "agreement on hard inputs");
}

}  // namespace

std::vector<PropertyDef> conformance_properties() {
  return {
      {"reference-agreement", "conformance",
       "attention is a function: the kernel's output must equal the double-precision reference within τ", false,
       reference_agreement},
      {"robustness", "conformance",
       "huge logits, empty rows, masked tiles and subnormal inputs are still attention: no NaN or Inf but where declared",
       false, robustness},
  };
}

}  // namespace attncheck::props
