/// \file generators.h
/// \brief RapidCheck generators for Problems and cases: the one place where random checks are
/// drawn. Sizes grow with RapidCheck's size parameter; every choice shrinks toward small
/// dimensions and plain options (MHA, no mask, no causal, f32-exact values).
#pragma once

#include <rapidcheck.h>

#include "attncheck/case.h"

namespace attncheck {

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

  static ProblemSpace plain() {
    return {false, false, false, false, false, false, false, false, true, true, 64, 4};
  }
};

rc::Gen<Problem> gen_problem(const ProblemSpace& space);

/// A case for a backend computing in `dtype`, values drawn from `kinds` (first = simplest).
rc::Gen<AttentionCase> gen_case(DType dtype, const ProblemSpace& space,
                                std::vector<ValueKind> kinds = {ValueKind::Gaussian});

}  // namespace attncheck
