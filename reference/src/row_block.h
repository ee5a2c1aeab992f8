// What the forward pass (reference.cpp) and the backward pass (backward.cpp) share about one
// block of query rows: a view read as a row-major matrix, the keys the block's rows may see, the
// softcap and the masks applied to its scores, and the floating-point environment the workers run
// under. The backward recomputes P from these scores and the forward's LSE, so both passes must
// compute them with the same operations in the same order: one definition serves both.
#pragma once

#include <Eigen/Dense>
#include <cfenv>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "attncheck/problem.h"
#include "attncheck/tensor.h"

namespace attncheck::detail {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMap = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;
using KeyRange = Problem::KeyRange;

/// Throws ProblemError naming `tensor`, the dimension (`names[d]`), what was expected and what
/// was given, when `view` is missing or its shape is not `expected`.
void check_view(std::string_view tensor, const View4<const double>& view, const Shape4& expected,
                const char* const names[4]);

/// Rows [row0, row0 + rows) of the [L, D] matrix at (b, h). When each row is contiguous (the
/// [B, H, L, D] and [B, L, H, D] layouts) the products read the caller's memory in place, which
/// is what keeps a 32k-token K and V from being copied once per row block; any other stride
/// pattern is gathered into `scratch`.
RowMap matrix_at(const View4<const double>& view, std::int64_t b, std::int64_t h, std::int64_t row0,
                 std::int64_t rows, RowMatrix& scratch);

/// The keys [first, first + count) that some row of a block may see.
struct BlockKeys {
  std::int64_t first = 0;
  std::int64_t count = 0;  ///< 0: every row of the block is empty
};

/// The structural key range (Problem::structural_key_range) of each row of the block
/// [i0, i0 + rows), written to `ranges` relative to the block's first key (an empty range
/// becomes [0, 0)), and the span of keys they cover together. With causal or a window, whole
/// stretches of keys that no row of the block sees are never multiplied. `every_key` widens the
/// span to all Lk keys (the score stages need every score); the extra keys weigh +0.
BlockKeys block_keys(const Problem& problem, std::int64_t key_length, std::int64_t i0, std::int64_t rows,
                     bool every_key, std::vector<KeyRange>& ranges);

/// scores ← c·tanh(scores / c) element by element (problem.h's softcap). When `slope` is given
/// it receives the derivative d(c·tanh(s/c))/ds = 1 − tanh²(s/c), as (1 − t)(1 + t), which keeps
/// its relative accuracy where t is close to ±1.
void apply_softcap(double cap, RowMatrix& scores, RowMatrix* slope);

/// What exclude_and_bias adds besides the mask: the ALiBi slope of (b, h) (problem.h) and the
/// key length of batch b, which places the diagonal the ALiBi distance is measured from.
struct RowBias {
  const View4<const double>& mask;
  double alibi_slope = 0;  ///< used only when the problem has ALiBi
  std::int64_t key_length = 0;
};

/// The block's scores after problem.h's last step: an excluded key (outside its row's range, a
/// boolean false, an additive −inf) gets −inf by assignment, never by addition, so a NaN or Inf
/// score of an excluded key (NaN padding in K, say) cannot leak into the row; an allowed key gets
/// the additive bias added, then the ALiBi bias −slope·|j − p(b, i)|. Keys are
/// [key0, key0 + scores.cols()), rows [i0, i0 + scores.rows()) of (b, h), `ranges` as block_keys
/// wrote them.
void exclude_and_bias(const Problem& problem, const RowBias& bias, std::int64_t b, std::int64_t h, std::int64_t i0,
                      std::int64_t key0, const std::vector<KeyRange>& ranges, RowMatrix& scores);

/// The ALiBi slope of batch b, query head h: slopes [Hq] or [B, Hq] row-major (problem.h); 0
/// without ALiBi.
double alibi_slope(const Problem& problem, std::span<const double> slopes, std::int64_t b, std::int64_t h);

/// NaN payloads are not part of the specification: which operand's payload an operation keeps
/// depends on operand order, which compilers may swap. Every NaN the reference writes is the
/// canonical quiet NaN.
void canonicalize_nan(double* x, std::int64_t n);

/// The reference assumes IEEE's default environment (round to nearest even, subnormals neither
/// flushed nor read as zero). A host that set flush-to-zero or another rounding mode in the
/// calling thread — which new threads inherit — would otherwise change the reference's bits.
/// Sets the default environment for the object's lifetime and restores the caller's after.
class DefaultFloatingPointEnvironment {
 public:
  DefaultFloatingPointEnvironment();
  ~DefaultFloatingPointEnvironment();
  DefaultFloatingPointEnvironment(const DefaultFloatingPointEnvironment&) = delete;
  DefaultFloatingPointEnvironment& operator=(const DefaultFloatingPointEnvironment&) = delete;

 private:
  std::fenv_t saved_;
};

}  // namespace attncheck::detail
