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
  /// ABI 2.3 options, off unless a property opts in: ALiBi and sinks change what most metamorphic
  /// statements say (a key permutation moves ALiBi's distances; a sink makes P sum below 1), so
  /// only the properties whose statement holds with them draw them.
  bool alibi = false;         ///< ALiBi slopes per head or per batch row and head
  bool sinks = false;         ///< one sink logit per query head
  /// ABI 2.4: a paged KV cache. Off unless a property opts in (properties/families/paged.cpp lays
  /// a drawn case out in pages; the generator itself never does).
  bool paged = false;
  /// ABI 2.5: a packed variable-length batch. Off unless a property opts in
  /// (properties/families/varlen.cpp packs a drawn case; the generator itself never does).
  bool varlen = false;

  static ProblemSpace plain() {
    return {false, false, false, false, false, false, false, false, true, true, 64, 4};
  }
};

rc::Gen<Problem> gen_problem(const ProblemSpace& space);

/// A case for a backend computing in `dtype`, values drawn from `kinds` (first = simplest).
rc::Gen<AttentionCase> gen_case(DType dtype, const ProblemSpace& space,
                                std::vector<ValueKind> kinds = {ValueKind::Gaussian});

}  // namespace attncheck
