// Emulated kernels: plain scalar C++ that reproduces, bit for bit, the arithmetic of a class of
// real attention kernels (where each operand is rounded, what each sum accumulates in, how the
// keys are blocked and split) and declares exactly that in its ABI 2.1 profile. README.md in this
// folder describes each kernel, its declared stages and the planted defects.
#pragma once

#include <optional>
#include <string_view>

#include "attncheck/backend.h"

namespace attncheck::emulated {

enum class Kernel {
  Fp32,     ///< emu-fp32: fp32 online softmax over 64-key tiles (FlashAttention-like)
  Fp16Acc,  ///< emu-fp16-acc: Q, K, V and P rounded to fp16, P·V accumulated in fp16, row sum in fp32
  Bf16P,    ///< emu-bf16-p: P rounded to bf16 before P·V, fp32 accumulation
  Ggml,     ///< emu-ggml: ggml_flash_attn_ext's F16 path, three shape-dependent code paths
  E4m3P,    ///< emu-e4m3-p: P rounded to e4m3 before P·V (FlashAttention 3's fp8 path), fp32 accumulation
  E5m2P,    ///< emu-e5m2-p: P rounded to e5m2 before P·V, fp32 accumulation
};

/// One classic defect planted in an otherwise faithful emulation; the profile stays the one the
/// healthy kernel declares (for AccumulatorStall: one that declares fp32 accumulation).
enum class Defect {
  None,
  Scale,              ///< the scores use scale × (1 + 2^-10)
  DroppedKey,         ///< the last allowed key of each row is skipped
  CausalOffByOne,     ///< causal keeps j < p instead of j <= p
  AccumulatorStall,   ///< declares fp32 P·V accumulation but accumulates in fp16
};

std::string_view kernel_name(Kernel kernel);    ///< "emu-fp32", "emu-fp16-acc", "emu-bf16-p", "emu-ggml", "emu-e4m3-p", "emu-e5m2-p"
std::string_view defect_name(Defect defect);    ///< "none", "scale", "dropped-key", "causal-off-by-one", "accumulator-stall"
std::optional<Kernel> parse_kernel(std::string_view name);
std::optional<Defect> parse_defect(std::string_view name);

/// A new table for `kernel` with `defect` planted, named "<kernel>" or "<kernel>+<defect>".
/// NULL only when allocation fails. The defective variants are not in the registry (every
/// registered non-mutant backend must pass the suite); tests and the evidence tool make them here.
attncheck_backend* make_emulated(Kernel kernel, Defect defect);

}  // namespace attncheck::emulated
