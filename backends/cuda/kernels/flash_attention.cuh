/// \file flash_attention.cuh
/// \brief cuda-flash's kernel: FlashAttention's tiling (Dao et al., arXiv:2205.14135) in its
/// plainest form. A block owns a tile of `tile_rows` query rows of one (batch, head); it walks
/// the keys those rows may see in tiles of `tile_keys`, staging K, V and the scores in shared
/// memory, and keeps an online softmax per row. All arithmetic is fp32 whatever the input dtype.
///
/// Per key tile, for each row with running max m, normalizer l and accumulator acc (Milakov &
/// Gimelshein, arXiv:1805.02867):
///   m_new = max(m, rowmax(S_tile));  α = e^{m − m_new};  P = e^{S_tile − m_new}
///   l = l·α + Σ P;                   acc = acc·α + P·V_tile
/// and at the end O = acc / l, LSE = m + log l. A tile in which a row has no allowed key leaves
/// that row untouched (when m_new is still −inf the update is skipped, so −inf − (−inf) never
/// forms); a row that never sees a key ends with l = 0 and is written as zeros with LSE = −inf.
///
/// Shared memory (floats): Q tile [rows][Dk], K tile [keys][Dk], V tile [keys][Dv], accumulator
/// [rows][Dv], scores/probabilities [rows][keys], and per row m, l, α (flash_shared_bytes).
#pragma once

#include "attention_common.cuh"

ATTNCHECK_KERNEL_NAMESPACE_BEGIN

/// Bytes of dynamic shared memory flash_attention_kernel needs.
inline std::size_t flash_shared_bytes(std::int64_t qk_dim, std::int64_t v_dim, int tile_rows, int tile_keys) {
  const std::int64_t floats = tile_rows * qk_dim + tile_keys * qk_dim + tile_keys * v_dim + tile_rows * v_dim +
                              static_cast<std::int64_t>(tile_rows) * tile_keys + 3 * tile_rows;
  return static_cast<std::size_t>(floats) * sizeof(float);
}

/// grid (⌈Lq / tile_rows⌉, Hq, B), any block size, flash_shared_bytes(...) of dynamic shared memory.
template <class T>
__global__ void flash_attention_kernel(AttentionParams p, int tile_rows, int tile_keys) {
  const auto [h, b, row0, rows, kv, key_length] = query_tile_of_block(p, tile_rows);
  const std::int64_t dk = p.qk_dim, dv = p.v_dim;
  const std::int64_t shift = query_address_shift(p, b);  // logical row → the row q, out and lse hold it in
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);

  ATTNCHECK_DYNAMIC_SHARED(float, shared);
  float* const q_tile = shared;                       // [tile_rows][dk]
  float* const k_tile = q_tile + tile_rows * dk;      // [tile_keys][dk]
  float* const v_tile = k_tile + tile_keys * dk;      // [tile_keys][dv]
  float* const acc = v_tile + tile_keys * dv;         // [tile_rows][dv]
  float* const s_tile = acc + tile_rows * dv;         // [tile_rows][tile_keys]
  float* const row_max = s_tile + tile_rows * tile_keys;
  float* const row_sum = row_max + tile_rows;
  float* const row_rescale = row_sum + tile_rows;

  // Fully masked key tiles (causal, window, padding) are never loaded; the span is uniform across
  // threads, so every thread reaches every barrier of the loop below.
  const KeyRange span = query_tile_key_span(p, row0, rows, key_length);

  for (std::int64_t e = tid; e < rows * dk; e += threads)
    q_tile[e] = to_float(element<T>(p.q, b, h, shift + row0 + e / dk, e % dk));
  for (std::int64_t e = tid; e < rows * dv; e += threads) acc[e] = 0.0f;
  for (std::int64_t r = tid; r < rows; r += threads) {
    row_max[r] = negative_infinity();
    row_sum[r] = 0.0f;
  }
  __syncthreads();

  for (std::int64_t key0 = span.first; key0 < span.last; key0 += tile_keys) {
    const std::int64_t keys = span.last - key0 < tile_keys ? span.last - key0 : tile_keys;
    load_key_tile<T>(p, b, kv, key0, keys, k_tile, v_tile);
    __syncthreads();

    // S = scale·Q Kᵀ, capped and masked; one (row, key) pair per thread at a time.
    for (std::int64_t e = tid; e < rows * keys; e += threads) {
      const std::int64_t r = e / keys, c = e % keys, i = row0 + r, j = key0 + c;
      const KeyRange range = row_key_range(p, i, key_length);
      float s = negative_infinity();
      if (j >= range.first && j < range.last) {
        float dot = 0.0f;
        for (std::int64_t d = 0; d < dk; ++d) dot += q_tile[r * dk + d] * k_tile[c * dk + d];
        s = final_score<T>(p, dot, b, h, i, j);
      }
      s_tile[r * tile_keys + c] = s;
    }
    __syncthreads();

    // Online softmax, one row per thread: S becomes P in place.
    for (std::int64_t r = tid; r < rows; r += threads) {
      float* const s_row = s_tile + r * tile_keys;
      float tile_max = negative_infinity();
      for (std::int64_t c = 0; c < keys; ++c) tile_max = fmaxf(tile_max, s_row[c]);
      const float m_old = row_max[r], m_new = fmaxf(m_old, tile_max);
      if (m_new == negative_infinity()) {  // nothing allowed yet: P = 0, state unchanged
        for (std::int64_t c = 0; c < keys; ++c) s_row[c] = 0.0f;
        row_rescale[r] = 1.0f;
        continue;
      }
      const float alpha = expf(m_old - m_new);  // m_old = −inf: 0, and acc, l are still 0
      float sum = 0.0f;
      for (std::int64_t c = 0; c < keys; ++c) {
        const float weight = s_row[c] == negative_infinity() ? 0.0f : expf(s_row[c] - m_new);
        s_row[c] = weight;
        sum += weight;
      }
      row_sum[r] = row_sum[r] * alpha + sum;
      row_max[r] = m_new;
      row_rescale[r] = alpha;
    }
    __syncthreads();

    // acc = acc·α + P·V, one output element per thread at a time. A zero weight (masked or
    // underflowed) is skipped so that 0·NaN from a masked V never reaches the row.
    for (std::int64_t e = tid; e < rows * dv; e += threads) {
      const std::int64_t r = e / dv, d = e % dv;
      const float* const p_row = s_tile + r * tile_keys;
      float a = acc[e] * row_rescale[r];
      for (std::int64_t c = 0; c < keys; ++c)
        if (p_row[c] != 0.0f) a += p_row[c] * v_tile[c * dv + d];
      acc[e] = a;
    }
    __syncthreads();
  }

  // A sink σ (backend.h) is one last block of one key of value 0: it may raise the row's max,
  // rescaling acc and l by α = e^{m − m'}, and adds e^{σ − m'} to l (a row with no allowed key:
  // O = 0, LSE = σ).
  const float sink = p.sinks != nullptr ? p.sinks[h * p.sinks_stride] : negative_infinity();
  for (std::int64_t r = tid; r < rows; r += threads) {
    row_rescale[r] = 1.0f;
    if (sink == negative_infinity()) continue;
    const float m_old = row_max[r], m_new = fmaxf(m_old, sink);
    const float alpha = m_old == negative_infinity() ? 0.0f : expf(m_old - m_new);
    row_sum[r] = row_sum[r] * alpha + expf(sink - m_new);
    row_max[r] = m_old != m_old ? m_old : m_new;  // a NaN row stays NaN
    row_rescale[r] = alpha;
  }
  __syncthreads();
  for (std::int64_t e = tid; e < rows * dv; e += threads) {
    const std::int64_t r = e / dv, d = e % dv;
    const float l = row_sum[r];
    mutable_element<T>(p.out, b, h, shift + row0 + r, d) = from_float<T>(l == 0.0f ? 0.0f : acc[e] * row_rescale[r] / l);
  }
  for (std::int64_t r = tid; r < rows; r += threads) write_lse(p, b, h, shift + row0 + r, row_max[r], row_sum[r]);
}

ATTNCHECK_KERNEL_NAMESPACE_END
