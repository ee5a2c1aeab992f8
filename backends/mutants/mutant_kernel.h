// Mutants: each is a plain, correct fp32 attention backend with exactly one classic bug from the
// suite's bug catalogue (anchors.md §c). The suite must catch every one of them; the mutation
// test records which property catches each first.
#pragma once

#include "attncheck/backend.h"

namespace attncheck::mutants {

enum class Mutation {
  TransposedAxes,       ///< indexes Q/K/V/O as compact [B, L, H, D] whatever the strides say
  SharedProjection,     ///< the layer projects every head with head 0's W_Q, W_K, W_V
  GqaModulo,            ///< query head h reads kv head h % Hkv instead of h / (Hq / Hkv)
  ScaleOneOverD,        ///< scale 1/Dk instead of the problem's (default 1/sqrt(Dk))
  NoMaxSubtraction,     ///< exp(s) without subtracting the row max: overflows on large logits
  CausalOffByOne,       ///< causal keeps j < p instead of j <= p
  DropsLastPartialTile, ///< keys are processed in tiles of 16 and a last partial tile is skipped
  NanLeak,              ///< masked keys are weighted by exp(-inf) = 0 instead of skipped: 0·NaN leaks
  WritesPastOutput,     ///< writes one element past the end of the output
};

attncheck_backend* make_mutant(Mutation mutation, const char* name, const char* description);

}  // namespace attncheck::mutants
