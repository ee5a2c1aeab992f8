/// \file flash_attention_backward.cuh
/// \brief cuda-flash's backward pass: FlashAttention-2's (Dao, arXiv:2307.08691, Algorithm 2)
/// with dQ computed by a kernel of its own instead of atomics, so every gradient element is one
/// sum in a fixed order and repeated calls are bitwise equal.
///
/// With r = scale·q·k the raw score, s the final score (softcap, mask: scored_key), the saved
/// LSE and the output gradients dO, dLSE (backend.h, attncheck_backward_profile):
///   P_ij  = exp(s_ij − LSE_i)                 recomputed, never stored between kernels
///   δ_i   = Σ_d dO_id O_id − dLSE_i            (flash_backward_delta_kernel)
///   dP_ij = Σ_d dO_id V_jd,   dS_ij = P_ij (dP_ij − δ_i)
///   dR_ij = dS_ij · ∂s/∂r                      (1 − tanh²(r/c) with softcap c, else 1)
///   dV_j = Σ_i P_ij dO_i,  dK_j = scale Σ_i dR_ij Q_i      (flash_backward_kv_kernel)
///   dQ_i = scale Σ_j dR_ij K_j                              (flash_backward_q_kernel)
/// dK and dV sum over every query head of the kv head's GQA group. All arithmetic is fp32.
///
/// Zeros: a key not allowed to row i, a key whose P underflows to exactly 0, and every key of a
/// row with LSE = −inf (no allowed key) have dS = 0, and such a term is skipped rather than
/// multiplied, so NaN or Inf stored at a masked key (K, V) never reaches a gradient and a key no
/// row may see keeps dK = dV = 0 exactly. A NaN LSE is not skipped: that row's gradients and
/// those of the keys it attends are NaN, as the reference's.
///
/// Order of each sum (fixed, one fp32 running sum per element, continued across tiles):
/// dK_j, dV_j over the group's heads h, then rows i ascending; dQ_i over keys j ascending. The
/// scale is applied once to the finished dK and dQ sums.
#pragma once

#include "attention_common.cuh"

ATTNCHECK_KERNEL_NAMESPACE_BEGIN

/// Dynamic shared memory of flash_backward_kv_kernel: K, V tiles, dK, dV accumulators [keys][D];
/// Q, dO tiles [rows][D]; P and dR [rows][keys]; LSE and δ per row (floats).
inline std::size_t flash_backward_kv_shared_bytes(std::int64_t qk_dim, std::int64_t v_dim, int tile_rows,
                                                  int tile_keys) {
  const std::int64_t floats = 2 * tile_keys * (qk_dim + v_dim) + tile_rows * (qk_dim + v_dim) +
                              2 * static_cast<std::int64_t>(tile_rows) * tile_keys + 2 * tile_rows;
  return static_cast<std::size_t>(floats) * sizeof(float);
}

/// Dynamic shared memory of flash_backward_q_kernel: Q, dO tiles and the dQ accumulator
/// [rows][D]; K, V tiles [keys][D]; dR [rows][keys]; LSE and δ per row (floats).
inline std::size_t flash_backward_q_shared_bytes(std::int64_t qk_dim, std::int64_t v_dim, int tile_rows,
                                                 int tile_keys) {
  const std::int64_t floats = tile_rows * (2 * qk_dim + v_dim) + tile_keys * (qk_dim + v_dim) +
                              static_cast<std::int64_t>(tile_rows) * tile_keys + 2 * tile_rows;
  return static_cast<std::size_t>(floats) * sizeof(float);
}

/// grid (⌈Lq / blockDim.x⌉, Hq, B), a thread per row, no shared memory: δ_i into bp.delta.
template <class T>
__global__ void flash_backward_delta_kernel(BackwardParams bp) {
  const AttentionParams& p = bp.forward;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  if (i >= p.q_len) return;
  float d = 0.0f;
  for (std::int64_t e = 0; e < p.v_dim; ++e)
    d += to_float(element<T>(bp.d_out, b, h, i, e)) * to_float(element<T>(p.out, b, h, i, e));
  if (bp.d_lse != nullptr) d -= bp.d_lse[b * bp.d_lse_stride[0] + h * bp.d_lse_stride[1] + i * bp.d_lse_stride[2]];
  bp.delta[(b * p.q_heads + h) * p.q_len + i] = d;
}

/// P and dR of row i (tile row r) and key j (tile column c) from the staged tiles. Both kernels
/// call this one definition, so they agree on which terms are zero.
struct ProbabilityAndScoreGradient {
  float probability;
  float raw_score_gradient;  ///< dR = P (dP − δ) ∂s/∂r
};

template <class T>
__device__ __forceinline__ ProbabilityAndScoreGradient backward_term(const AttentionParams& p, const float* q_row,
                                                                     const float* d_out_row, const float* k_row,
                                                                     const float* v_row, float lse, float delta,
                                                                     std::int64_t b, std::int64_t h, std::int64_t i,
                                                                     std::int64_t j, std::int64_t key_length) {
  ProbabilityAndScoreGradient t{0.0f, 0.0f};
  if (lse == negative_infinity()) return t;  // a row with no allowed key contributes nothing
  const KeyRange range = row_key_range(p, i, key_length);
  if (j < range.first || j >= range.last) return t;
  float dot = 0.0f;
  for (std::int64_t d = 0; d < p.qk_dim; ++d) dot += q_row[d] * k_row[d];
  const ScoredKey key = scored_key<T>(p, dot, b, h, i, j);
  if (key.score == negative_infinity()) return t;  // element-masked
  t.probability = expf(key.score - lse);
  if (t.probability == 0.0f) return t;  // underflowed: dS = 0 exactly, V_j never read
  float dp = 0.0f;
  for (std::int64_t d = 0; d < p.v_dim; ++d) dp += d_out_row[d] * v_row[d];
  t.raw_score_gradient = t.probability * (dp - delta) * key.slope;
  return t;
}

/// The rows of query tile [row0, row0 + rows) that may see some key of [key0, key0 + keys):
/// whether any does. Element masks only remove keys inside a row's KeyRange, so a false answer
/// means every term of the tile pair is zero. Uniform across the block's threads.
__device__ __forceinline__ bool tiles_meet(const AttentionParams& p, std::int64_t row0, std::int64_t rows,
                                           std::int64_t key0, std::int64_t keys, std::int64_t key_length) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const KeyRange range = row_key_range(p, row0 + r, key_length);
    if (range.first < range.last && range.first < key0 + keys && range.last > key0) return true;
  }
  return false;
}

/// Stages rows [row0, row0 + rows) of Q and dO of head h with their LSE and δ.
template <class T>
__device__ __forceinline__ void load_query_tile(const BackwardParams& bp, std::int64_t b, std::int64_t h,
                                                std::int64_t row0, std::int64_t rows, float* q_tile,
                                                float* d_out_tile, float* lse_tile, float* delta_tile) {
  const AttentionParams& p = bp.forward;
  const std::int64_t dk = p.qk_dim, dv = p.v_dim;
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);
  for (std::int64_t e = tid; e < rows * dk; e += threads)
    q_tile[e] = to_float(element<T>(p.q, b, h, row0 + e / dk, e % dk));
  for (std::int64_t e = tid; e < rows * dv; e += threads)
    d_out_tile[e] = to_float(element<T>(bp.d_out, b, h, row0 + e / dv, e % dv));
  for (std::int64_t r = tid; r < rows; r += threads) {
    const std::int64_t i = row0 + r;
    lse_tile[r] = p.lse[b * p.lse_stride[0] + h * p.lse_stride[1] + i * p.lse_stride[2]];
    delta_tile[r] = bp.delta[(b * p.q_heads + h) * p.q_len + i];
  }
}

/// acc[o][d] += Σ_s w(o, s) x[s][d] for o < outputs, d < width, with w(o, s) =
/// weights[o·output_stride + s·term_stride]: one element per thread at a time, one fp32 running sum
/// per element over s ascending (the fixed order of the file comment). A zero weight is skipped,
/// never multiplied, so a NaN or Inf x behind it never reaches the sum. dV and dK take the weights
/// P and dR by column (output = key), dQ takes dR by row (output = query row).
__device__ __forceinline__ void accumulate_weighted_sum(float* acc, std::int64_t outputs, std::int64_t width,
                                                        const float* weights, std::int64_t output_stride,
                                                        std::int64_t term_stride, const float* x,
                                                        std::int64_t terms) {
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);
  for (std::int64_t e = tid; e < outputs * width; e += threads) {
    const std::int64_t o = e / width, d = e % width;
    float a = acc[e];
    for (std::int64_t s = 0; s < terms; ++s) {
      const float w = weights[o * output_stride + s * term_stride];
      if (w != 0.0f) a += w * x[s * width + d];
    }
    acc[e] = a;
  }
}

/// grid (⌈Lk / tile_keys⌉, Hkv, B), any block size, flash_backward_kv_shared_bytes(...) of
/// dynamic shared memory; after flash_backward_delta_kernel. A block owns a tile of keys of one
/// (batch, kv head), keeps its K, V and the dK, dV accumulators in shared memory, and walks the
/// query tiles of every head of the group that may see it. Writes every key of its tile (0 where
/// no row sees it).
template <class T>
__global__ void flash_backward_kv_kernel(BackwardParams bp, int tile_rows, int tile_keys) {
  const AttentionParams& p = bp.forward;
  const std::int64_t kv = blockIdx.y, b = blockIdx.z;
  const std::int64_t key0 = static_cast<std::int64_t>(blockIdx.x) * tile_keys;
  const std::int64_t keys = p.k_len - key0 < tile_keys ? p.k_len - key0 : tile_keys;
  const std::int64_t key_length = key_length_of(p, b);
  const std::int64_t dk = p.qk_dim, dv = p.v_dim;
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);

  ATTNCHECK_DYNAMIC_SHARED(float, shared);
  float* const k_tile = shared;                            // [tile_keys][dk]
  float* const v_tile = k_tile + tile_keys * dk;           // [tile_keys][dv]
  float* const dk_acc = v_tile + tile_keys * dv;           // [tile_keys][dk]
  float* const dv_acc = dk_acc + tile_keys * dk;           // [tile_keys][dv]
  float* const q_tile = dv_acc + tile_keys * dv;           // [tile_rows][dk]
  float* const d_out_tile = q_tile + tile_rows * dk;       // [tile_rows][dv]
  float* const p_tile = d_out_tile + tile_rows * dv;       // [tile_rows][tile_keys]
  float* const dr_tile = p_tile + tile_rows * tile_keys;   // [tile_rows][tile_keys]
  float* const lse_tile = dr_tile + tile_rows * tile_keys;
  float* const delta_tile = lse_tile + tile_rows;

  load_key_tile<T>(p, b, kv, key0, keys, k_tile, v_tile);
  for (std::int64_t e = tid; e < keys * dk; e += threads) dk_acc[e] = 0.0f;
  for (std::int64_t e = tid; e < keys * dv; e += threads) dv_acc[e] = 0.0f;
  __syncthreads();

  for (std::int64_t h = kv * p.group; h < (kv + 1) * p.group; ++h) {
    for (std::int64_t row0 = 0; row0 < p.q_len; row0 += tile_rows) {
      const std::int64_t rows = p.q_len - row0 < tile_rows ? p.q_len - row0 : tile_rows;
      if (!tiles_meet(p, row0, rows, key0, keys, key_length)) continue;  // uniform: every thread skips
      load_query_tile<T>(bp, b, h, row0, rows, q_tile, d_out_tile, lse_tile, delta_tile);
      __syncthreads();

      for (std::int64_t e = tid; e < rows * keys; e += threads) {
        const std::int64_t r = e / keys, c = e % keys;
        const ProbabilityAndScoreGradient t =
            backward_term<T>(p, q_tile + r * dk, d_out_tile + r * dv, k_tile + c * dk, v_tile + c * dv, lse_tile[r],
                             delta_tile[r], b, h, row0 + r, key0 + c, key_length);
        p_tile[r * tile_keys + c] = t.probability;
        dr_tile[r * tile_keys + c] = t.raw_score_gradient;
      }
      __syncthreads();

      // dV_c += Σ_r P_rc dO_r and dK_c += Σ_r dR_rc Q_r, one element per thread at a time, rows
      // in order; zero terms skipped (see the file comment).
      accumulate_weighted_sum(dv_acc, keys, dv, p_tile, 1, tile_keys, d_out_tile, rows);
      accumulate_weighted_sum(dk_acc, keys, dk, dr_tile, 1, tile_keys, q_tile, rows);
      __syncthreads();  // the next query tile overwrites q_tile, d_out_tile, p_tile and dr_tile
    }
  }

  for (std::int64_t e = tid; e < keys * dk; e += threads)
    mutable_element<T>(bp.d_k, b, kv, key0 + e / dk, e % dk) = from_float<T>(p.scale * dk_acc[e]);
  for (std::int64_t e = tid; e < keys * dv; e += threads)
    mutable_element<T>(bp.d_v, b, kv, key0 + e / dv, e % dv) = from_float<T>(dv_acc[e]);
}

/// grid (⌈Lq / tile_rows⌉, Hq, B), any block size, flash_backward_q_shared_bytes(...) of dynamic
/// shared memory; after flash_backward_delta_kernel. A block owns a tile of query rows of one
/// (batch, head), keeps Q, dO and the dQ accumulator in shared memory and walks the key tiles its
/// rows may see, as the forward kernel does. A row with no allowed key gets dQ = 0.
template <class T>
__global__ void flash_backward_q_kernel(BackwardParams bp, int tile_rows, int tile_keys) {
  const AttentionParams& p = bp.forward;
  const auto [h, b, row0, rows, kv, key_length] = query_tile_of_block(p, tile_rows);
  const std::int64_t dk = p.qk_dim, dv = p.v_dim;
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);

  ATTNCHECK_DYNAMIC_SHARED(float, shared);
  float* const q_tile = shared;                             // [tile_rows][dk]
  float* const d_out_tile = q_tile + tile_rows * dk;        // [tile_rows][dv]
  float* const dq_acc = d_out_tile + tile_rows * dv;        // [tile_rows][dk]
  float* const k_tile = dq_acc + tile_rows * dk;            // [tile_keys][dk]
  float* const v_tile = k_tile + tile_keys * dk;            // [tile_keys][dv]
  float* const dr_tile = v_tile + tile_keys * dv;           // [tile_rows][tile_keys]
  float* const lse_tile = dr_tile + tile_rows * tile_keys;
  float* const delta_tile = lse_tile + tile_rows;

  // The keys any row of this tile may see, as in flash_attention_kernel: uniform across threads.
  const KeyRange span = query_tile_key_span(p, row0, rows, key_length);

  load_query_tile<T>(bp, b, h, row0, rows, q_tile, d_out_tile, lse_tile, delta_tile);
  for (std::int64_t e = tid; e < rows * dk; e += threads) dq_acc[e] = 0.0f;
  __syncthreads();

  for (std::int64_t key0 = span.first; key0 < span.last; key0 += tile_keys) {
    const std::int64_t keys = span.last - key0 < tile_keys ? span.last - key0 : tile_keys;
    load_key_tile<T>(p, b, kv, key0, keys, k_tile, v_tile);
    __syncthreads();

    for (std::int64_t e = tid; e < rows * keys; e += threads) {
      const std::int64_t r = e / keys, c = e % keys;
      dr_tile[r * tile_keys + c] =
          backward_term<T>(p, q_tile + r * dk, d_out_tile + r * dv, k_tile + c * dk, v_tile + c * dv, lse_tile[r],
                           delta_tile[r], b, h, row0 + r, key0 + c, key_length)
              .raw_score_gradient;
    }
    __syncthreads();

    // dQ_r += Σ_c dR_rc K_c, keys in order; a zero dR never multiplies a (possibly poisoned) K.
    accumulate_weighted_sum(dq_acc, rows, dk, dr_tile, tile_keys, 1, k_tile, keys);
    __syncthreads();  // the next key tile overwrites k_tile, v_tile and dr_tile
  }

  for (std::int64_t e = tid; e < rows * dk; e += threads)
    mutable_element<T>(bp.d_q, b, h, row0 + e / dk, e % dk) = from_float<T>(p.scale * dq_acc[e]);
}

ATTNCHECK_KERNEL_NAMESPACE_END
