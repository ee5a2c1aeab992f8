// Mutants: each is a plain, correct fp32 attention backend with exactly one classic bug of
// attention kernels (README.md, "Mutants", lists them). The suite must catch every one of them;
// the mutation test records which property catches each first.
#pragma once

#include <cstdint>

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
  // Backward-pass bugs (ABI 2.2): the forward is correct and writes the LSE, the backward pass
  // (backend.h, attncheck_backward_profile: dV = Pᵀ dO, dS = P ∘ (dP − D + dlse), dQ = σ dS K,
  // dK = σ dSᵀ Q) holds the one bug. Only these mutants have a backward pass.
  BwdNoDTerm,             ///< D_i = rowsum(dO ∘ O) left out: dS = P ∘ (dP + dlse)
  BwdDvUntransposed,      ///< dV_k = Σ_i P[min(k, Lq − 1)][min(i, Lk − 1)] dO_i: P where Pᵀ belongs
  BwdGqaOneHead,          ///< dK, dV of a kv head from the first query head of its group, not the group's sum
  BwdNoSoftcapDerivative, ///< the softcap's derivative 1 − tanh²(r/c) left out of dS
  BwdDkWithoutScale,      ///< dK = dSᵀ Q without the scale σ
  BwdUnshiftedExp,        ///< P = exp(s) / exp(lse) instead of exp(s − lse): overflows on large logits
  BwdDqRandomOrder,       ///< dQ's key-tile sums added in a random order ("atomics") while determinism is declared
  BwdMaskedKeysGetDk,     ///< dK's dS weighs an excluded key by 10^-3 instead of 0: keys no query sees get dK ≠ 0
  BwdDqLostUpdate,        ///< of dQ's key-tile sums the last is lost when there are several (Lk > kBackwardKeyTile)
  // Inference-option bugs (ABI 2.3): only these mutants implement ALiBi and sinks.
  AlibiReversedHeads,     ///< query head h gets the ALiBi slope of head Hq − 1 − h
  SinkInNumerator,        ///< the sink is added to every output's numerator too, as if its value were 1
  // Paged-cache bugs (ABI 2.4): only these mutants take paged K and V.
  PagedPageOffByOne,      ///< the page after the one the block table names is read (page + 1, wrapping)
  PagedTableBatchZero,    ///< every sequence's slots are read from batch 0's row of the block table
  PagedReadsPastLength,   ///< the last page is read whole: keys past the sequence's length are attended
  // Packed-batch bugs (ABI 2.5): only these mutants take packed batches.
  VarlenOffsetsAsLengths,  ///< cu_seqlens_k[b + 1], an offset, read as sequence b's key count
  // fp8 bugs (ABI 2.6): only these mutants take fp8 inputs with descales.
  Fp8DescaleTwice,         ///< v's descale applied twice: V = v · dv²
};

/// The backward pass sums dQ's keys in tiles of this many, one partial sum per tile, added into
/// dQ tile by tile: the structure the dQ mutants break (a random order, a lost tile). Small, so
/// that the short rows the quick profile draws most already hold the three tiles an order needs
/// to show in the bits (two partial sums added to 0 commute).
constexpr std::int64_t kBackwardKeyTile = 4;

/// Whether `mutation` is one of the backward pass's (the mutants with a backward pass).
constexpr bool is_backward_mutation(Mutation mutation) {
  return mutation >= Mutation::BwdNoDTerm && mutation <= Mutation::BwdDqLostUpdate;
}

/// Whether `mutation` is one of the ABI 2.3 options' (the mutants that implement ALiBi and sinks).
constexpr bool is_inference_mutation(Mutation mutation) { return mutation >= Mutation::AlibiReversedHeads; }

/// Whether `mutation` is one of fp8's (the mutants that take fp8 inputs with descales).
constexpr bool is_fp8_mutation(Mutation mutation) { return mutation == Mutation::Fp8DescaleTwice; }

/// Whether `mutation` is one of the paged cache's (the mutants that take paged K and V).
constexpr bool is_paged_mutation(Mutation mutation) {
  return mutation >= Mutation::PagedPageOffByOne && mutation <= Mutation::PagedReadsPastLength;
}

/// Whether `mutation` is one of the packed batch's (the mutants that take cu_seqlens).
constexpr bool is_varlen_mutation(Mutation mutation) { return mutation == Mutation::VarlenOffsetsAsLengths; }

attncheck_backend* make_mutant(Mutation mutation, const char* name, const char* description);

}  // namespace attncheck::mutants
