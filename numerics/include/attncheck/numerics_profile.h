/// \file numerics_profile.h
/// \brief How a backend computes, in the suite's own terms: the C++ face of the ABI's
/// attncheck_numerics_profile. The tolerance model derives every bound from it.
#pragma once

#include <optional>
#include <string>

#include "attncheck/dtype.h"
#include "attncheck/problem.h"

namespace attncheck {

enum class Rounding : std::uint8_t { Nearest, TowardZero };

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

  /// "in=f16 S=f32 P=f16 acc=f32 out=f16 RN k0=1 block=128 det zeros"
  std::string describe() const;
  bool operator==(const NumericsProfile&) const = default;
};

}  // namespace attncheck
