/// \file numerics_profile.h
/// \brief How a backend computes, in the suite's own terms: the C++ face of the ABI's
/// attncheck_numerics_profile. The tolerance model derives every bound from it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/dtype.h"
#include "attncheck/problem.h"

namespace attncheck {

enum class Rounding : std::uint8_t { Nearest, TowardZero };

/// What a kernel writes to the LSE of a row with no allowed key (ABI 2.1).
enum class EmptyRowLse : std::uint8_t { NegativeInfinity, Zero, Unspecified };
std::string_view empty_row_lse_name(EmptyRowLse convention);

/// Each dtype names where a value is rounded (numerics/README.md §2.3). Defaults describe an
/// fp32 three-pass kernel with round-to-nearest accumulation.
struct NumericsProfile {
  DType input = DType::F32;        ///< q, k, v as the kernel receives them
  DType score = DType::F32;        ///< u_S: Q·Kᵀ accumulator and stored scores
  /// Q·Kᵀ accumulator when it is wider than the stored scores (eager code: fp32 GEMM, fp16
  /// logits). Unset: the product is accumulated in `score` itself (the conservative reading).
  std::optional<DType> score_accumulator;
  DType probability = DType::F32;  ///< u_P: P as stored for P·V (= accumulator if not re-rounded)
  DType accumulator = DType::F32;  ///< u_A: P·V and row-sum accumulator
  DType output = DType::F32;       ///< u_O
  Rounding accumulation_rounding = Rounding::Nearest;
  int products_per_rounding = 1;   ///< k0
  int softmax_block = 0;           ///< keys per online-softmax block; 0 = three-pass (R = 0)
  bool deterministic = false;
  EmptyRowConvention empty_row = EmptyRowConvention::Zeros;
  bool flushes_subnormals = false;
  bool accepts_strides = true;
  bool writes_lse = false;
  double exp_relative_error = 0;   ///< u_E; 0 = default 2^-22 (CUDA's bounds are test-derived)
  double tanh_relative_error = 0;  ///< u_T; 0 = default 2^-22
  // ABI 2.1. Unset optionals and zeros keep a 2.0 profile's meaning.
  std::optional<DType> query_rounding;  ///< Q rounded to this inside the kernel (from `input`)
  std::optional<DType> key_rounding;    ///< likewise K
  std::optional<DType> value_rounding;  ///< likewise V, before P·V
  std::optional<DType> mask_dtype;      ///< an additive mask as the kernel reads it; unset = `input`
  std::optional<DType> row_sum_accumulator;  ///< the row sum's accumulator; unset = `accumulator`
  int keys_per_partial_sum = 0;  ///< blocked accumulation: keys per partial sum; 0 = one running sum
  int kv_splits = 0;             ///< split-KV parts merged at the end; 0 or 1 = none
  EmptyRowLse empty_row_lse = EmptyRowLse::NegativeInfinity;
  bool masked_keys_weighted_by_zero = false;  ///< NaN/Inf in masked K/V propagates (declared convention)

  /// The dtype an additive mask is rounded to before the reference sees it.
  DType additive_mask_dtype() const { return mask_dtype.value_or(input); }
  /// The narrowest dtype K and V live in inside the kernel: `input`, or the key or value rounding
  /// when one has less range. Finite poison must be finite there: a kernel that holds K in fp16
  /// turns an fp32 poison of 3e38 into inf, and 0·inf is NaN however correct its masking is.
  DType held_key_value_dtype() const {
    DType held = input;
    for (const auto& rounding : {key_rounding, value_rounding})
      if (rounding && largest_finite(*rounding) < largest_finite(held)) held = *rounding;
    return held;
  }
  DType row_sum_dtype() const { return row_sum_accumulator.value_or(accumulator); }

  /// "in=f16 S=f32 P=f16 acc=f32 out=f16 RN k0=1 block=128 det zeros"
  std::string describe() const;
  /// The departures from the strict conventions this profile declares, one sentence each, for
  /// reports: they are the kernel's declared behaviour, not failures. Empty for a strict profile.
  std::vector<std::string> declared_conventions() const;
  bool operator==(const NumericsProfile&) const = default;
};

/// How a kernel computes its backward pass (ABI 2.2 attncheck_backward_profile; numerics/README.md
/// §10): where P, dP and dS are rounded, where the gradients accumulate across tiles and
/// the heads of a GQA group, and in what order. The defaults describe a plain fp32 backward with
/// one running sum per gradient element.
struct BackwardProfile {
  std::optional<DType> gradient;  ///< dQ, dK, dV as written; unset = the input dtype
  DType probability = DType::F32;  ///< P as stored for dV = Pᵀ dO
  DType dp = DType::F32;           ///< dP = dO Vᵀ accumulated and kept
  DType ds = DType::F32;           ///< dS as stored for dQ = σ dS K and dK = σ dSᵀ Q
  DType accumulator = DType::F32;  ///< dQ, dK, dV across tiles
  std::optional<DType> group_sum;  ///< GQA's sum over a group's query heads; unset = `accumulator`
  int query_block = 0;             ///< rows per tile (dK, dV add one sum per tile); 0 = one running sum
  int key_block = 0;               ///< keys per tile (dQ adds one sum per tile); 0 = one running sum
  bool recomputes_from_lse = false;  ///< P = exp(s − lse) from the saved lse
  bool dq_atomic = false;            ///< dQ's tile sums added in no fixed order
  bool deterministic = false;
  bool accepts_dlse = false;
  bool writes_dbias = false;

  DType gradient_dtype(DType input) const { return gradient.value_or(input); }
  DType group_sum_dtype() const { return group_sum.value_or(accumulator); }
  /// "grad=f16 P=bf16 dP=f32 dS=bf16 acc=f32 blocks=128x64 lse det"
  std::string describe(DType input) const;
  bool operator==(const BackwardProfile&) const = default;
};

}  // namespace attncheck
