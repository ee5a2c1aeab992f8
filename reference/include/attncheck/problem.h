/// \file problem.h
/// \brief The Problem: the one description of an attention call, used everywhere in attncheck.
///
/// Logical tensor shapes (any strides are allowed; see tensor.h):
///   Q    [B, Hq,  Lq, Dk]        K [B, Hkv, Lk, Dk]        V [B, Hkv, Lk, Dv]
///   mask [Bm, Hm, Lqm, Lkm]      Bm ∈ {1, B}, Hm ∈ {1, Hq}, Lqm ∈ {1, Lq}, 1 ≤ Lkm ≤ Lk;
///                                keys j ≥ Lkm are masked out (ONNX opset 24 padding rule).
///   key_lengths [B] (int64)      key j of batch b is valid iff j < key_lengths[b].
///   O    [B, Hq, Lq, Dv]         LSE [B, Hq, Lq]
///
/// Scores, in the order ONNX Attention (opset 23+) applies them:
///   s_ij = scale · q_i·k_j;  s_ij ← c·tanh(s_ij / c) if softcap c > 0;  s_ij ← s_ij + bias_ij;
///   then masked keys (boolean mask false, causal, window, key length) are excluded exactly: they
///   contribute nothing to the softmax nor to P·V, whatever K and V hold there.
///
/// Causal and window masks are measured from the diagonal p(b, i) = i + offset(b):
///   TopLeft     offset = 0                   (PyTorch is_causal, ONNX without cache)
///   BottomRight offset = Lk − Lq             (FlashAttention)
///   Offset      offset = diagonal_offset     (a KV cache of P past tokens; ONNX with past_key)
///   KeyLengths  offset = key_lengths[b] − Lq (ONNX nonpad_kv_seqlen, an external cache)
/// causal: key j is allowed iff j ≤ p.  window (left, right), −1 meaning unbounded on that side:
/// allowed iff p − left ≤ j ≤ p + right (both bounds inclusive, as ONNX opset 25).
///
/// Inference-kernel options (ABI 2.3):
///   ALiBi (Press et al., "Train Short, Test Long", 2022): slopes [Hq] (or [B, Hq]) as an input;
///     every allowed key gets −slope_h·|j − p(b, i)| added with the bias, after softcap, measured
///     from the same diagonal p as causal (FlashAttention's alibi_slopes: bottom-right with
///     p = i + Lk − Lq). Under causal |j − p| = p − j.
///   Sinks (gpt-oss, FlashAttention 3, OpenVINO's `sink`): one logit σ_h per query head, an
///     input [Hq], added to the softmax denominator only: Z = Σ_k e^{s_k} + e^{σ_h}; O = Σ_k
///     e^{s_k} V_k / Z; LSE = log Z. A sink is one extra key of score σ_h and value 0, which no
///     mask excludes: a row with no allowed key gets O = 0 and LSE = σ_h.
///
/// Paged KV cache (ABI 2.4; vLLM, FlashAttention's block_table, FlashInfer): K and V live in a pool
/// of pages instead of [B, Hkv, Lk, D], and a block table [B, Lk / page_size] names the physical
/// page of each logical slot. Logical key j of batch b is row j mod page_size of page
/// block_table[b, ⌊j / page_size⌋]:
///   PagedTokenMajor  K pages [num_pages, page_size, Hkv, Dk] (FlashAttention, vLLM's flash path)
///   PagedHeadMajor   K pages [num_pages, Hkv, page_size, Dk] (vLLM's paged-attention layout)
/// Paging is storage, not semantics: the attention is that of the gathered [B, Hkv, Lk, D] keys
/// (paged.h). Per-sequence lengths are key_lengths (has_key_lengths is required); slots at or past
/// ⌈key_lengths[b] / page_size⌉ are unused, and neither they nor the last page's tail beyond the
/// length may change the result. Lk is the table's capacity, a multiple of page_size.
///
/// Packed variable-length batches (ABI 2.5; FlashAttention's varlen API): sequence b has
/// query_lengths[b] ∈ [0, Lq] queries and key_lengths[b] ∈ [0, Lk] keys (has_key_lengths is
/// required), and a kernel receives them packed, Q as [Σ_b query_lengths[b], Hq, Dk] and K, V as
/// [Σ_b key_lengths[b], Hkv, D], with offsets cu_seqlens (varlen.h). Each sequence is its own
/// attention problem, and causal, the window and ALiBi are measured per sequence: TopLeft p = r,
/// BottomRight p = r + key_lengths[b] − query_lengths[b] for its query r. Packing is storage, not
/// semantics: the logical problem is the padded [B, Hq, Lq, Dk] one in which sequence b's queries
/// are the rows [first_query_row(b), first_query_row(b) + query_lengths[b]) — the first rows under
/// TopLeft, the last under BottomRight, so that diagonal_key's KeyLengths rule
/// p = i + key_lengths[b] − Lq gives the per-sequence diagonal — and its keys are keys
/// [0, key_lengths[b]). The other rows do not exist: the reference writes O = 0 and LSE = −inf
/// there and nothing compares them. A mask, a paged cache and the Offset and KeyLengths
/// alignments are not combined with packing (FlashAttention's varlen takes none of them).
///
/// Descales (ABI 2.6; FlashAttention 3's q_descale, k_descale, v_descale): Q, K and V are stored
/// values times a positive factor, one per tensor or one per batch row and kv head ([B, Hkv]):
///   Q(b, h) = q(b, h) · dq[b, kv_head_of(h)],  K(b, g) = k(b, g) · dk[b, g],  V(b, g) = v(b, g) · dv[b, g],
/// and the attention is that of Q, K and V. They come with fp8 storage (the case's dtype E4M3 or
/// E5M2, dtype.h), where a stored value has 4 or 3 significant bits and the factor carries the
/// tensor's range. Descales are not combined with an additive mask, a paged cache or packing.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "attncheck/dtype.h"

namespace attncheck {

enum class Alignment : std::uint8_t { TopLeft, BottomRight, Offset, KeyLengths };
enum class MaskKind : std::uint8_t { None, Boolean, Additive };
/// Where ALiBi slopes come from: none, one per query head ([Hq]), or one per batch row and query
/// head ([B, Hq], as FlashAttention's alibi_slopes allows).
enum class AlibiSlopes : std::uint8_t { None, PerHead, PerBatchHead };
/// What a kernel writes for a row with no allowed key (0/0). The reference writes zeros with
/// LSE = −inf (ONNX opset 23 errata, PyTorch _safe_softmax); a backend declares its own.
enum class EmptyRowConvention : std::uint8_t { Zeros, NaN, MeanOfV };
/// Where K and V are stored (file comment): one [B, Hkv, Lk, D] tensor, or pages with a block table.
enum class KvStorage : std::uint8_t { Contiguous, PagedTokenMajor, PagedHeadMajor };
/// The descale factors of the inputs (file comment): none, one per tensor ([1]), or one per batch
/// row and kv head ([B, Hkv]).
enum class Descale : std::uint8_t { None, PerTensor, PerHead };

std::string_view alignment_name(Alignment alignment);
std::string_view mask_kind_name(MaskKind kind);
std::string_view empty_row_name(EmptyRowConvention convention);
std::string_view alibi_slopes_name(AlibiSlopes slopes);  ///< "none", "head", "batch-head"
std::string_view kv_storage_name(KvStorage storage);     ///< "contiguous", "paged", "paged-head"
std::optional<KvStorage> parse_kv_storage(std::string_view name);
std::string_view descale_name(Descale descale);  ///< "none", "tensor", "head"
std::optional<Descale> parse_descale(std::string_view name);
std::optional<Alignment> parse_alignment(std::string_view name);
std::optional<MaskKind> parse_mask_kind(std::string_view name);
std::optional<EmptyRowConvention> parse_empty_row(std::string_view name);
std::optional<AlibiSlopes> parse_alibi_slopes(std::string_view name);

/// A Problem that fails validation. The message names the tensor, the dimension, what was
/// expected and what was given, e.g. "K: dim 1 (kv heads) is 3, but Hq = 8 is not a multiple of it".
class ProblemError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct Problem {
  std::int64_t batch = 1;     ///< B
  std::int64_t q_heads = 1;   ///< Hq
  std::int64_t kv_heads = 1;  ///< Hkv; Hq % Hkv == 0 (MHA: Hkv = Hq, MQA: Hkv = 1, GQA between)
  std::int64_t q_len = 1;     ///< Lq
  std::int64_t k_len = 1;     ///< Lk (past tokens included when decoding from a cache)
  std::int64_t qk_dim = 1;    ///< Dk, head dim of Q and K
  std::int64_t v_dim = 1;     ///< Dv, head dim of V and O (may differ from Dk)

  std::optional<double> scale;  ///< unset: 1/sqrt(Dk)
  double softcap = 0.0;         ///< c > 0 applies c·tanh(s/c) before any mask or bias; 0 = off

  bool causal = false;
  Alignment alignment = Alignment::TopLeft;  ///< diagonal used by causal and window
  std::int64_t diagonal_offset = 0;          ///< P, only with Alignment::Offset
  std::int64_t window_left = -1;             ///< −1: unbounded
  std::int64_t window_right = -1;            ///< −1: unbounded

  MaskKind mask = MaskKind::None;
  std::int64_t mask_batch = 1;     ///< Bm ∈ {1, B}
  std::int64_t mask_heads = 1;     ///< Hm ∈ {1, Hq}
  std::int64_t mask_q_len = 1;     ///< Lqm ∈ {1, Lq}
  std::int64_t mask_k_len = 1;     ///< Lkm ∈ [1, Lk]

  bool has_key_lengths = false;  ///< key_lengths[b] ∈ [0, Lk] given as an input tensor

  AlibiSlopes alibi = AlibiSlopes::None;  ///< ALiBi slopes as an input tensor (file comment)
  bool sinks = false;                     ///< one sink logit per query head as an input tensor [Hq]

  KvStorage kv_storage = KvStorage::Contiguous;  ///< paged K/V with a block table (file comment)
  std::int64_t page_size = 0;                    ///< keys per page when paged (≥ 1, divides Lk); 0 otherwise

  bool varlen = false;  ///< packed variable-length sequences with query_lengths (file comment)

  Descale descale = Descale::None;  ///< descales of Q, K, V as input tensors (file comment)

  /// A problem with these dimensions and every option at its default (no mask, no causal…).
  static Problem of_shape(std::int64_t batch, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t q_len,
                          std::int64_t k_len, std::int64_t qk_dim, std::int64_t v_dim);

  /// The scale actually applied.
  double effective_scale() const;
  /// Hq / Hkv: the number of query heads that read one kv head.
  std::int64_t group_size() const { return q_heads / kv_heads; }
  /// The kv head that query head h reads: h / (Hq / Hkv) (ONNX repeat-interleave order).
  std::int64_t kv_head_of(std::int64_t h) const { return h / group_size(); }
  bool has_window() const { return window_left >= 0 || window_right >= 0; }
  bool has_alibi() const { return alibi != AlibiSlopes::None; }
  /// Elements of the ALiBi slopes tensor: Hq, B·Hq, or 0 without ALiBi.
  std::int64_t alibi_slope_count() const {
    return alibi == AlibiSlopes::None ? 0 : alibi == AlibiSlopes::PerHead ? q_heads : batch * q_heads;
  }
  bool is_paged() const { return kv_storage != KvStorage::Contiguous; }
  bool has_descales() const { return descale != Descale::None; }
  /// Elements of each descale tensor: 1, B·Hkv, or 0 without descales.
  std::int64_t descale_count() const {
    return descale == Descale::None ? 0 : descale == Descale::PerTensor ? 1 : batch * kv_heads;
  }
  /// Slots of one block-table row, Lk / page_size; 0 when not paged.
  std::int64_t pages_per_sequence() const { return is_paged() ? k_len / page_size : 0; }
  /// The slots a sequence of `key_length` keys uses, ⌈key_length / page_size⌉.
  std::int64_t pages_used(std::int64_t key_length) const { return (key_length + page_size - 1) / page_size; }

  /// The logical row of a packed sequence's first query (file comment): Lq − query_length under
  /// BottomRight, 0 otherwise (and for every problem that is not varlen, whose rows all exist).
  std::int64_t first_query_row(std::int64_t query_length) const {
    return varlen && alignment == Alignment::BottomRight ? q_len - query_length : 0;
  }

  /// The key on query row i's diagonal, i + offset(b) (the alignments above), for a batch row
  /// whose key length is `key_length` (k_len unless has_key_lengths).
  std::int64_t diagonal_key(std::int64_t i, std::int64_t key_length) const;
  /// Keys [first, last) that the key length, a mask shorter than Lk, causal and the window leave
  /// to query row i; per-element masks act inside it. first == last: no key (an empty row).
  struct KeyRange {
    std::int64_t first, last;
  };
  KeyRange structural_key_range(std::int64_t i, std::int64_t key_length) const;

  /// Throws ProblemError naming the first inconsistency.
  void validate() const;
  /// One line, stable, parseable by parse_problem: "B=1 Hq=8 Hkv=2 Lq=17 Lk=33 Dk=64 Dv=64 causal=bottom-right".
  /// Fields at their default are omitted.
  std::string describe() const;

  bool operator==(const Problem&) const = default;
};

/// Parses describe()'s output (fields in any order, unknown keys rejected). Throws ProblemError.
Problem parse_problem(std::string_view text);

}  // namespace attncheck
