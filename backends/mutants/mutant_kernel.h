// Mutants: each is a plain, correct fp32 attention backend with exactly one classic bug of
// attention kernels (README.md, "Mutants", lists them). The suite must catch every one of them;
// the mutation test records which property catches each first.
#pragma once

#include "attncheck/backend.h"

namespace attncheck::mutants {

enum class Mutation {
  TransposedAxes,       ///< indexes Q/K/V/O as compact [B, L, H, D] whatever the strides say
  IgnoresStrides,       ///< indexes Q/K/V/O as compact [B, H, L, D] whatever the strides say
  SharedProjection,     ///< the layer projects every head with head 0's W_Q, W_K, W_V
  GqaModulo,            ///< query head h reads kv head h % Hkv instead of h / (Hq / Hkv)
  ScaleOneOverD,        ///< scale 1/Dk instead of the problem's (default 1/sqrt(Dk))
  NoMaxSubtraction,     ///< exp(s) without subtracting the row max: overflows on large logits
  CausalOffByOne,       ///< causal keeps j < p instead of j <= p
  DropsLastPartialTile, ///< keys are processed in tiles of 16 and a last partial tile is skipped
  NanLeak,              ///< masked keys are weighted by exp(-inf) = 0 instead of skipped: 0·NaN leaks
  WritesPastOutput,     ///< writes one element past the end of the output
  SoftmaxOverQueries,   ///< normalizes each key's column over the queries instead of each row over keys
  IgnoresAlignment,     ///< causal is always top-left, whatever alignment the problem declares
  WindowExclusive,      ///< window bounds exclusive: p − left < j < p + right
  EmptyRowNaN,          ///< a row with no allowed key gives NaN while zeros are declared
  PvInHalf,             ///< P·V accumulated in fp16 while fp32 accumulation is declared
  ModifiesQ,            ///< scales Q in place
  LastRowUnwritten,     ///< never writes the last query row
  Nondeterministic,     ///< sums keys in a random order while determinism is declared
  IgnoresKBatchStride,  ///< reads batch 0's K for every batch
  CrashOnSingleKey,     ///< dereferences a null pointer when Lk = 1
  HangOnSingleHead,     ///< loops forever when Hq = Hkv = 1
  // Device-path bugs, on the suite's simulated device (backend.h: kAttncheckSimulatedDevice):
  DeferredWrite,        ///< returns before its last query rows land: they wait on work nobody synchronizes
  DeviceWritesPastOutput, ///< writes one element past the end of the output in device memory
  StickyDeviceError,    ///< for Lk >= 2 faults asynchronously (recorded on the stream) and stays faulted
  // Two bugs of different kinds in one kernel: the suite must report both, each with its case.
  LseLog2AndWindowExclusive,  ///< writes the LSE in base 2 (log2 Σ e^s) and takes window bounds exclusive
};

attncheck_backend* make_mutant(Mutation mutation, const char* name, const char* description);

}  // namespace attncheck::mutants
