/// \file reference.h
/// \brief The specification: scaled dot-product attention in double precision.
///
/// Every verdict of attncheck is measured against this function. It is written to be read first
/// and to be fast second: it is blocked over query rows (extra memory O(block × Lk) per thread,
/// never a whole Lq × Lk score matrix) and threaded over (batch, head, row block).
///
/// Conventions (see problem.h for the score pipeline and the masks):
///  - Masked keys are excluded, not weighted by zero: NaN or Inf stored in a masked or padded key
///    never reaches the output (0·NaN would).
///  - A row with no allowed key gives O = 0 and LSE = −inf (ONNX opset 23 errata; PyTorch
///    _safe_softmax). An additive bias of −inf masks its key like a boolean false.
///  - LSE is the natural log of Σ_k exp(s_k) over allowed keys (plus e^{σ_h} with a sink).
///  - A sink is one more key of score σ_h and value 0 (problem.h): the row statistics count it
///    as a key (n, m, M, and the weighted sums with a_k = 0 and V = 0), which is what the tolerance
///    model's derivation needs, and a row whose only key is its sink is not empty.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "attncheck/paged.h"
#include "attncheck/problem.h"
#include "attncheck/tensor.h"

namespace attncheck {

/// Inputs in logical order; each view may have any strides. Values are the exact values the
/// kernel under test received (already rounded to its dtype by the caller).
struct AttentionInputs {
  View4<const double> q;     ///< [B, Hq, Lq, Dk]
  View4<const double> k;     ///< [B, Hkv, Lk, Dk]
  View4<const double> v;     ///< [B, Hkv, Lk, Dv]
  View4<const double> mask;  ///< [Bm, Hm, Lqm, Lkm]; Boolean: nonzero = attend; Additive: bias. Empty if none.
  std::span<const std::int64_t> key_lengths;  ///< [B], each in [0, Lk]; empty unless Problem::has_key_lengths
  std::span<const double> alibi_slopes;  ///< [Hq] or [B, Hq] row-major (Problem::alibi), finite; empty without ALiBi
  std::span<const double> sinks;         ///< [Hq] sink logits, finite or −inf (no sink); empty unless Problem::sinks
  /// A paged problem's pages and block table (paged.h); empty unless Problem::is_paged. k and v
  /// are then the gather of the pages (validate_inputs checks every key below its length), or
  /// both empty, and reference_attention gathers them itself.
  PagedKvView paged;
  /// [B], each in [0, Lq]: a packed batch's query counts (problem.h, varlen.h); empty unless
  /// Problem::varlen. Logical rows outside each sequence's queries do not exist.
  std::span<const std::int64_t> query_lengths;
  /// Problem::descale's factors, each [1] or [B, Hkv] row-major, finite and positive; empty
  /// without descales. q, k and v then hold the stored values, and reference_attention computes
  /// on their products with these (problem.h), formed exactly in double.
  std::span<const double> q_descale, k_descale, v_descale;
};

/// Which build of the reference's inner loops runs. Every one computes the same bits, on every
/// CPU, with any compiler, thread count and row block (reference/README.md, "Reproducibility");
/// they differ in speed only. Automatic picks the widest this CPU runs.
enum class ReferenceIsa { Automatic, Baseline, Avx2, Avx512 };

/// The ISAs this CPU and build run, Baseline first, the widest last.
std::vector<ReferenceIsa> supported_reference_isas();
std::string_view to_string(ReferenceIsa isa);                          ///< "auto", "baseline", "avx2", "avx512"
std::optional<ReferenceIsa> parse_reference_isa(std::string_view text);  ///< inverse of to_string

struct ReferenceOptions {
  bool row_statistics = false;  ///< fill AttentionResult::stats (costs O(Lq·Lk·Dv) extra work)
  bool probabilities = false;   ///< fill AttentionResult::probabilities ([B, Hq, Lq, Lk]; small problems only)
  bool score_stages = false;    ///< fill AttentionResult::scores ([B, Hq, Lq, Lk] × 3; small problems only)
  int threads = 0;              ///< 0: std::thread::hardware_concurrency()
  std::int64_t row_block = 128;  ///< query rows per block: bounds the scratch at row_block × Lk doubles per thread
  ReferenceIsa isa = ReferenceIsa::Automatic;  ///< ProblemError if this CPU cannot run it
};

/// The score matrix at each stage of problem.h's pipeline, as ONNX Attention's
/// qk_matmul_output_mode 0, 1 and 2 expose it (mode 3 is AttentionResult::probabilities).
struct ScoreStages {
  HostTensor raw;     ///< σ·Q Kᵀ
  HostTensor capped;  ///< c·tanh(raw / c) with softcap c; equal to raw without softcap
  HostTensor biased;  ///< capped + additive bias, −inf at every excluded key (mask, causal, window, key length)
};

/// The row data the tolerance model needs (numerics/README.md §2.2). With p_k the softmax weights
/// of one row (b, h, i), s_k its final scores, a_k = |σ|·Σ_l |q_l k_kl| and O_j the output:
struct RowStatistics {
  // Per row, shape [1, B, Hq, Lq]:
  HostTensor allowed_keys;   ///< n: keys not masked (as a double), a finite sink counted as one
  HostTensor max_abs_score;  ///< M = max |s_k| over allowed keys with s_k − max_l s_l > −104 (weight
                             ///< above fp32's smallest subnormal, 2^-149 ≈ e^-103.3)
  HostTensor max_score;      ///< m = max s_k (−inf for an empty row)
  HostTensor max_dot_abs;    ///< max_k a_k over allowed keys
  HostTensor max_abs_alibi;  ///< A = max_k |slope·(j − p)| over allowed keys: the ALiBi bias's magnitude (0 without)
  // Per output element, shape [B, Hq, Lq, Dv]:
  HostTensor row_scale;       ///< A_j  = Σ_k p_k |V_kj|
  HostTensor spread;          ///< W_j  = (Σ_k p_k² (|V_kj| + |O_j|)²)^½
  HostTensor centered;        ///< C_j  = Σ_k p_k |V_kj − O_j|
  HostTensor centered_dot;    ///< Ca_j = Σ_k p_k a_k |V_kj − O_j|
  HostTensor centered_score;  ///< Cs_j = Σ_k p_k |s_k| |V_kj − O_j|
  HostTensor fp16_tail;       ///< T_j  = Σ_{k: e^{s_k−m} < 2^-14} |V_kj| / Z: the keys whose weight is
                              ///< subnormal when P is stored in fp16 (E_P's fp16 tail,
                              ///< numerics/README.md §2.5)
  HostTensor e4m3_tail;       ///< T8_j = Σ_{k: e^{s_k−m} < 2^-6} |V_kj| / Z: the same below e4m3's
                              ///< normal range, for P stored in e4m3 (numerics/README.md §2.14)
  HostTensor reachable_max_abs_value;  ///< max_k |V_kj| over the row's allowed keys with finite V_kj
                                       ///< (0 for an empty row): bounds E_P's sub-normal-weight tail
                                       ///< by what the row can reach, never by unreachable padding
};

struct AttentionResult {
  HostTensor out;  ///< O [B, Hq, Lq, Dv]
  HostTensor lse;  ///< [1, B, Hq, Lq]; −inf for a row with no allowed key
  std::optional<HostTensor> probabilities;  ///< P [B, Hq, Lq, Lk] when requested
  std::optional<ScoreStages> scores;        ///< when requested
  std::optional<RowStatistics> stats;       ///< when requested
};

/// Checks `inputs` against `problem` (shapes of every view, key length range) and throws
/// ProblemError naming the tensor and dimension on the first mismatch.
void validate_inputs(const Problem& problem, const AttentionInputs& inputs);

/// A descaled problem's Q, K and V as the attention sees them (problem.h), each stored value times
/// its factor, exact in double; `problem` is the same problem without descales.
struct DequantizedInputs {
  HostTensor q, k, v;
  Problem problem;
  /// `original` with q, k and v replaced by these and no descales (views into this).
  AttentionInputs inputs(const AttentionInputs& original) const;
};
/// Validates, then dequantizes. Throws ProblemError for a problem without descales.
DequantizedInputs dequantize(const Problem& problem, const AttentionInputs& inputs);

/// Whether query row i of (b, h) may attend key j: inside its structural key range
/// (Problem::structural_key_range at batch b's key length) and not excluded by the mask (a
/// boolean zero, an additive −inf, broadcast as problem.h says). The element-wise form of what
/// the reference's blocked kernels compute, for code outside them (the gradient bound). False in
/// a row that does not exist (varlen.h, query_row_exists).
bool key_allowed(const Problem& problem, const AttentionInputs& inputs, std::int64_t b, std::int64_t h,
                 std::int64_t i, std::int64_t j);

/// Scaled dot-product attention for every Problem option. Validates first. Rows that do not exist
/// (a packed batch's padding, problem.h) get O = 0, LSE = −inf, zero statistics, zero
/// probabilities and −inf score stages: as an empty row, but no comparison reads them.
AttentionResult reference_attention(const Problem& problem, const AttentionInputs& inputs,
                                    const ReferenceOptions& options = {});

}  // namespace attncheck
