/// \file attention_common.cuh
/// \brief The problem semantics every CUDA-backend kernel shares: tensor addressing, key lengths,
/// causal and window alignment, softcap and masks. Written once here (in the kernel subset of
/// kernel_portability.cuh) and compiled both for the device and for host emulation.
#pragma once

#include "attncheck/cuda/attention_params.h"
#include "attncheck/cuda/kernel_portability.cuh"

ATTNCHECK_KERNEL_NAMESPACE_BEGIN

/// ABI enumerators the kernels branch on (backend.h), restated so kernels need no C ABI header.
inline constexpr std::int32_t kAlignTopLeft = 0, kAlignBottomRight = 1, kAlignOffset = 2, kAlignKeyLengths = 3;
inline constexpr std::int32_t kMaskNone = 0, kMaskBoolean = 1, kMaskAdditive = 2;

__device__ __forceinline__ float negative_infinity() { return -INFINITY; }

/// Host side of a launch: calls f(T{}) with T the element type `type` names in this build (float,
/// half_t, bfloat16_t), so a kernel template is instantiated for each input dtype in one place.
template <class F>
void with_element_type(ElementType type, F&& f) {
  switch (type) {
    case ElementType::F32: return f(float{});
    case ElementType::F16: return f(half_t{});
    case ElementType::BF16: return f(bfloat16_t{});
  }
}

template <class T>
__device__ __forceinline__ const T& element(const StridedTensor& t, std::int64_t i0, std::int64_t i1, std::int64_t i2,
                                            std::int64_t i3) {
  return static_cast<const T*>(t.data)[i0 * t.stride[0] + i1 * t.stride[1] + i2 * t.stride[2] + i3 * t.stride[3]];
}

template <class T>
__device__ __forceinline__ T& mutable_element(const StridedTensor& t, std::int64_t i0, std::int64_t i1,
                                              std::int64_t i2, std::int64_t i3) {
  return static_cast<T*>(t.data)[i0 * t.stride[0] + i1 * t.stride[1] + i2 * t.stride[2] + i3 * t.stride[3]];
}

/// Tokens [first, first + count) of packed sequence b in offsets `cu` (a packed batch, ABI 2.5).
/// Offsets that break backend.h's contract (which the device cannot check cheaply) give an empty
/// sequence, which reads and writes nothing, instead of memory outside the tensor.
struct PackedSpan {
  std::int64_t first, count;
};

__device__ __forceinline__ PackedSpan packed_span(const std::int32_t* cu, std::int64_t b, std::int64_t capacity,
                                                  std::int64_t total) {
  const std::int64_t first = cu[b], count = static_cast<std::int64_t>(cu[b + 1]) - first;
  if (first < 0 || count < 0 || count > capacity || first + count > total) return {0, 0};
  return {first, count};
}

/// Keys of batch b that exist: a packed sequence's count, key_lengths[b] (padding), else Lk.
__device__ __forceinline__ std::int64_t key_length_of(const AttentionParams& p, std::int64_t b) {
  if (p.cu_seqlens_k != nullptr) return packed_span(p.cu_seqlens_k, b, p.k_len, p.total_k).count;
  return p.key_lengths != nullptr ? p.key_lengths[b * p.key_lengths_stride] : p.k_len;
}

/// A packed sequence's logical rows (problem.h): [first, first + count), its queries placed on
/// the last rows under bottom-right alignment so that the key-lengths diagonal is its own.
struct QueryRows {
  std::int64_t first, count;
};

__device__ __forceinline__ QueryRows query_rows_of(const AttentionParams& p, std::int64_t b) {
  if (p.cu_seqlens_q == nullptr) return {0, p.q_len};
  const std::int64_t count = packed_span(p.cu_seqlens_q, b, p.q_len, p.total_q).count;
  return {p.alignment == kAlignBottomRight ? p.q_len - count : 0, count};
}

/// What is added to a logical row of batch b to address q, out and lse: the sequence's first token
/// minus its first logical row for a packed batch, 0 otherwise.
__device__ __forceinline__ std::int64_t query_address_shift(const AttentionParams& p, std::int64_t b) {
  if (p.cu_seqlens_q == nullptr) return 0;
  return packed_span(p.cu_seqlens_q, b, p.q_len, p.total_q).first - query_rows_of(p, b).first;
}

/// Half-open range [first, last) of keys that key length, a short mask, causal and window leave
/// to query row i; element masks remove further keys inside it. With the diagonal p = i + offset:
/// causal keeps j <= p, the window keeps p - left <= j <= p + right (both bounds inclusive).
struct KeyRange {
  std::int64_t first, last;
};

__device__ __forceinline__ KeyRange row_key_range(const AttentionParams& p, std::int64_t i, std::int64_t key_length) {
  std::int64_t offset = 0;
  // A packed sequence's rows end on row Lq − 1 (query_rows_of): its own key count takes Lk's place.
  if (p.alignment == kAlignBottomRight) offset = (p.cu_seqlens_q != nullptr ? key_length : p.k_len) - p.q_len;
  else if (p.alignment == kAlignOffset) offset = p.diagonal_offset;
  else if (p.alignment == kAlignKeyLengths) offset = key_length - p.q_len;
  const std::int64_t diagonal = i + offset;
  std::int64_t first = 0, last = key_length;
  if (p.mask_kind != kMaskNone && p.mask_k_len < last) last = p.mask_k_len;
  if (p.causal && diagonal + 1 < last) last = diagonal + 1;
  if (p.window_right >= 0 && diagonal + p.window_right + 1 < last) last = diagonal + p.window_right + 1;
  if (p.window_left >= 0 && diagonal - p.window_left > first) first = diagonal - p.window_left;
  if (last < first) last = first;
  return {first, last};
}

/// What a block of a grid (⌈Lq / tile_rows⌉, Hq, B) owns: query rows [row0, row0 + rows) of head
/// h in batch b (the last tile may be short; for a packed batch, clipped to the sequence's rows,
/// possibly to none), the kv head its group reads and batch b's key length.
struct QueryTileOfBlock {
  std::int64_t h, b, row0, rows, kv, key_length;
};

__device__ __forceinline__ QueryTileOfBlock query_tile_of_block(const AttentionParams& p, int tile_rows) {
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * tile_rows;
  std::int64_t end = p.q_len - row0 < tile_rows ? p.q_len : row0 + tile_rows;
  const QueryRows existing = query_rows_of(p, b);
  if (existing.first > row0) row0 = existing.first;
  if (existing.first + existing.count < end) end = existing.first + existing.count;
  return {h, b, row0, end > row0 ? end - row0 : 0, h / p.group, key_length_of(p, b)};
}

/// The keys some row of query tile [row0, row0 + rows) may see: the hull [first, last) of the
/// rows' non-empty KeyRanges, or the empty {k_len, 0} when no row sees a key. Computed alike by
/// every thread, so a loop over it is uniform across the block.
__device__ __forceinline__ KeyRange query_tile_key_span(const AttentionParams& p, std::int64_t row0,
                                                        std::int64_t rows, std::int64_t key_length) {
  KeyRange span{p.k_len, 0};
  for (std::int64_t r = 0; r < rows; ++r) {
    const KeyRange range = row_key_range(p, row0 + r, key_length);
    if (range.first < range.last) {
      span.first = range.first < span.first ? range.first : span.first;
      span.last = range.last > span.last ? range.last : span.last;
    }
  }
  return span;
}

/// Element d of key j of (batch b, kv head kv) in K or V (`t`), through the block table when the
/// cache is paged. A used slot whose entry names no page of the pool (the caller broke backend.h's
/// contract, which the device cannot check cheaply) reads 0 instead of memory outside the pool.
template <class T>
__device__ __forceinline__ float key_value(const AttentionParams& p, const StridedTensor& t, std::int64_t b,
                                           std::int64_t kv, std::int64_t j, std::int64_t d) {
  if (p.cu_seqlens_k != nullptr) return to_float(element<T>(t, 0, kv, p.cu_seqlens_k[b] + j, d));
  if (p.block_table == nullptr) return to_float(element<T>(t, b, kv, j, d));
  const std::int64_t page = p.block_table[b * p.block_table_stride[0] + (j / p.page_size) * p.block_table_stride[1]];
  if (page < 0 || page >= p.num_pages) return 0.0f;
  return to_float(element<T>(t, page, kv, j % p.page_size, d));
}

/// Stages keys [key0, key0 + keys) of K and V of kv head kv.
template <class T>
__device__ __forceinline__ void load_key_tile(const AttentionParams& p, std::int64_t b, std::int64_t kv,
                                              std::int64_t key0, std::int64_t keys, float* k_tile, float* v_tile) {
  const std::int64_t dk = p.qk_dim, dv = p.v_dim;
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);
  for (std::int64_t e = tid; e < keys * dk; e += threads) k_tile[e] = key_value<T>(p, p.k, b, kv, key0 + e / dk, e % dk);
  for (std::int64_t e = tid; e < keys * dv; e += threads) v_tile[e] = key_value<T>(p, p.v, b, kv, key0 + e / dv, e % dv);
}

/// The final score of key j for query row i (j inside the row's KeyRange), from the fp32 dot
/// product q·k, and its slope ∂score/∂r with respect to the raw score r = scale·dot, which the
/// backward pass multiplies dS by: s = r, or c·tanh(r/c) with softcap (slope 1 − tanh²(r/c));
/// then the element mask, whose bias is added after the cap and so leaves the slope alone. A
/// masked key gets −inf by assignment, never by addition, so NaN or Inf stored at a masked key
/// cannot leak.
struct ScoredKey {
  float score;
  float slope;
};

template <class T>
__device__ __forceinline__ ScoredKey scored_key(const AttentionParams& p, float dot, std::int64_t b, std::int64_t h,
                                                std::int64_t i, std::int64_t j) {
  float s = p.scale * dot, slope = 1.0f;
  if (p.softcap > 0.0f) {
    const float t = tanhf(s / p.softcap);
    s = p.softcap * t;
    slope = 1.0f - t * t;
  }
  if (p.mask_kind == kMaskBoolean) {
    if (element<std::uint8_t>(p.mask, b, h, i, j) == 0) s = negative_infinity();
  } else if (p.mask_kind == kMaskAdditive) {
    const float bias = to_float(element<T>(p.mask, b, h, i, j));
    s = bias == negative_infinity() ? bias : s + bias;
  }
  return {s, slope};
}

/// The forward's view of scored_key: the score alone.
template <class T>
__device__ __forceinline__ float final_score(const AttentionParams& p, float dot, std::int64_t b, std::int64_t h,
                                             std::int64_t i, std::int64_t j) {
  return scored_key<T>(p, dot, b, h, i, j).score;
}

/// Writes LSE = m + log(l) for a row, or −inf for a row with no allowed key (l = 0).
__device__ __forceinline__ void write_lse(const AttentionParams& p, std::int64_t b, std::int64_t h, std::int64_t i,
                                          float row_max, float row_sum) {
  if (p.lse == nullptr) return;
  p.lse[b * p.lse_stride[0] + h * p.lse_stride[1] + i * p.lse_stride[2]] =
      row_sum == 0.0f ? negative_infinity() : row_max + logf(row_sum);
}

ATTNCHECK_KERNEL_NAMESPACE_END
