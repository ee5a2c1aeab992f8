/// \file generators.h
/// \brief RapidCheck generators for Problems and cases: the one place where random checks are
/// drawn. Sizes grow with RapidCheck's size parameter; every choice shrinks toward small
/// dimensions and plain options (MHA, no mask, no causal, f32-exact values).
#pragma once

#include <rapidcheck.h>

#include <string_view>

#include "attncheck/case.h"

namespace attncheck {

/// Problem sizes a generator draws (numerics/README.md §9: real kernels switch code paths at
/// lengths 64, 128, 256, 512 and beyond).
///  - Small: Lq, Lk ≤ max_len (96), with tile boundaries of 16, 32, 64;
///  - Medium: Lq, Lk at 64, 128, 256, 512 ± 1, head dims up to 256;
///  - Long: decode (Lq = 1, or 2–16) against Lk of 1024–8192 ± 1, or a 128-row tile of queries
///    (Lq = 128, 129) against Lk = 1024 ± 1; head dims up to 512. Batch, heads and then head dims
///    give way so that the work stays bounded.
enum class SizeClass : std::uint8_t { Small, Medium, Long };
std::string_view size_class_name(SizeClass size);
/// The class a problem's lengths fall in: Long when max(Lq, Lk) > 600, Medium above 96.
SizeClass size_class_of(const Problem& problem);

/// How often a generator leaves the small class, in percent of drawn problems (the rest are
/// small). Shrinking moves a case toward the small class.
struct SizeMix {
  int medium_percent = 0;
  int long_percent = 0;
  bool operator==(const SizeMix&) const = default;
};

/// Which Problem options a generator may use. Properties restrict them where the statement they
/// check needs it (no causal for key permutation, say).
struct ProblemSpace {
  bool gqa = true;            ///< Hkv < Hq (MQA and GQA, ratios including 3 and 12)
  bool causal = true;         ///< every alignment
  bool window = true;
  bool softcap = true;
  bool mask = true;           ///< boolean and additive, broadcast and short
  bool key_lengths = true;    ///< including 0 and 1
  bool layouts = true;        ///< [B, L, H, D] memory layout
  bool poison = true;         ///< NaN / huge values in dead key slots
  bool decode = true;         ///< Lq = 1
  bool distinct_dims = true;  ///< Dv ≠ Dk
  std::int64_t max_len = 96;  ///< Lq, Lk at full size
  std::int64_t max_heads = 12;
  SizeMix sizes;              ///< medium and long problems, besides the small ones
  bool custom_scale = true;   ///< a scale other than 1/sqrt(Dk), including 0
  /// Which rotation of the coverage schedule the draws follow (PropertyContext sets a property's
  /// registration index): properties drawing from the same space reach different grid cells.
  int coverage_stream = 0;

  static ProblemSpace plain() {
    return {false, false, false, false, false, false, false, false, true, true, 64, 4};
  }
};

/// Coverage by construction (coverage.h names the cells). RapidCheck runs case i of n at a size
/// that grows with i (Testing.cpp: sizeFor; the quick profile's 30 cases run at ⌊60·i/29⌋, so
/// size / 2 = i for i < 29). The cases at sizes below 2·kSteeredSlots are steered: slot
/// k = size / 2 fixes the class of each size axis: batch k mod 3; Hq/Hkv (k / 3) mod 2 past
/// MHA; layout (k / 4) mod 2; in the first 14 slots the length classes (Lq k mod 5, Lk
/// (k / 2) mod 5, equal when their classes are) with light head dims (1, odd, other), in the
/// last 14 the head dim classes (Dk j mod 6, Dv (j / 2) mod 6, j = k − 14) with lengths 1 or
/// between; and the cell g = (k + kSteeredSlots·coverage_stream) mod 45 of
/// the variant × mask × causal grid (variant g mod 3, mask (g / 3) mod 3, causal g / 9), so that
/// 28 cases reach every axis value and two properties every grid cell; the last steered case of
/// every sixth property (stream ≡ 1 mod 6) is medium, of the next one long, when the size mix
/// has a share of that class. The value inside a class is still drawn, and where the space excludes a
/// class (no GQA, Lk ≤ 16) the draw is free. Every steered choice shrinks first to the free
/// draw, which shrinks as always: toward small dimensions and plain options.
inline constexpr int kSteeredSlots = 28;

rc::Gen<Problem> gen_problem(const ProblemSpace& space);

/// A case for a backend computing in `dtype`, values drawn from `kinds` (first = simplest).
rc::Gen<AttentionCase> gen_case(DType dtype, const ProblemSpace& space,
                                std::vector<ValueKind> kinds = {ValueKind::Gaussian});

}  // namespace attncheck
