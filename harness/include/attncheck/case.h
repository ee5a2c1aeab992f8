/// \file case.h
/// \brief One concrete check: a Problem, the dtype the kernel receives, how its values are
/// drawn, and the memory layout it is handed. Everything a failure report needs to reproduce it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attncheck/compare.h"
#include "attncheck/layer.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"
#include "attncheck/tensor.h"

namespace attncheck {

/// How input values are drawn. Structured kinds make rounding errors coherent, so they are judged
/// with deterministic accumulation bounds (numerics.md §3).
enum class ValueKind : std::uint8_t {
  Gaussian,       ///< Q, K, V ~ N(0, 1)
  LargeLogits,    ///< Q scaled so that |s| ≈ 1e3: catches kernels without max-subtraction
  Ties,           ///< every key equal: all weights tie
  DuplicateKeys,  ///< keys repeat in pairs
  OneHotV,        ///< each V row is a one-hot vector
  Grid,           ///< values on a grid of multiples of 2^-4 in [−2, 2], exact in every dtype
};

std::string_view value_kind_name(ValueKind kind);
std::optional<ValueKind> parse_value_kind(std::string_view name);
DataCharacter data_character(ValueKind kind);

struct AttentionCase {
  Problem problem;
  DType dtype = DType::F32;
  ValueKind values = ValueKind::Gaussian;
  bool sequence_major = false;  ///< hand Q/K/V/O to the backend as [B, L, H, D] in memory
  bool poison_masked = false;   ///< fill keys beyond key_lengths / the mask's length with NaN and huge values
  std::uint64_t seed = 0;

  /// Problem::describe() plus " dtype=f16 values=ties layout=blhd poison=1 seed=42": one line,
  /// parseable by parse_case, enough to rebuild the exact inputs.
  std::string describe() const;
};

/// Inverse of AttentionCase::describe(). Throws ProblemError.
AttentionCase parse_case(std::string_view text);

/// The inputs of a case, already rounded to its dtype (numerics.md §1: the reference sees exactly
/// the values the kernel receives), stored as doubles in logical order.
struct CaseData {
  HostTensor q, k, v, mask;
  std::vector<std::int64_t> key_lengths;

  AttentionInputs inputs(const Problem& problem) const;
};

/// Deterministic: the same case gives the same data on every machine (std::mt19937_64 and our
/// own normal/uniform transforms, not the implementation-defined std distributions).
CaseData make_case_data(const AttentionCase& c);

/// A layer case: the problem, the dtype of X and the weights, and the seed of their values.
struct LayerCase {
  LayerProblem problem;
  DType dtype = DType::F32;
  std::uint64_t seed = 0;
  /// LayerProblem::describe() plus " dtype=f16 seed=42".
  std::string describe() const;
};

/// The inputs of a layer case, rounded to its dtype, as 4-d tensors right-aligned with leading 1s
/// (layer.h's convention).
struct LayerCaseData {
  HostTensor x, x_kv, w_q, w_k, w_v, b_q, b_k, b_v, w_o, b_o, mask;
  LayerInputs inputs(const LayerProblem& problem) const;
};

/// X ~ N(0, 1); weights ~ N(0, 1/fan-in), so every projection is O(1) as in trained layers;
/// biases ~ N(0, 0.01); an additive mask ~ N(0, 1). Deterministic, like make_case_data.
LayerCaseData make_layer_case_data(const LayerCase& c);

/// A small deterministic generator with portable distributions, shared by everything that draws
/// values (std::normal_distribution differs between standard libraries).
class PortableRandom {
 public:
  explicit PortableRandom(std::uint64_t seed);
  std::uint64_t next();
  double uniform();                                    ///< [0, 1)
  double normal();                                     ///< N(0, 1), Box–Muller
  std::int64_t below(std::int64_t bound);              ///< [0, bound)

 private:
  std::uint64_t state_;
};

}  // namespace attncheck
