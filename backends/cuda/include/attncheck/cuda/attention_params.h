/// \file attention_params.h
/// \brief The plain-data description of one attention call that every CUDA-backend kernel reads.
///
/// Built once on the host from the ABI's attncheck_problem and DLTensors (make_params), then passed by
/// value to a kernel, so it holds only scalars and raw pointers. It is included by host C++ and by
/// nvcc alike and must stay free of CUDA and standard-library types.
#pragma once

#include <cstdint>

namespace attncheck::cuda {

/// Element type of q, k, v, out (and of an additive mask).
enum class ElementType : std::int32_t { F32, F16, BF16 };

/// A strided 4-d tensor: element (i0, i1, i2, i3) is at data + Σ i_d · stride[d] (strides in
/// elements, as DLPack). A broadcast dimension has stride 0.
struct StridedTensor {
  void* data = nullptr;
  std::int64_t stride[4] = {0, 0, 0, 0};
};

/// Everything a kernel needs. Field meanings follow attncheck_problem (backend.h).
struct AttentionParams {
  std::int64_t batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, k_len = 0, qk_dim = 0, v_dim = 0;
  std::int64_t group = 1;  ///< Hq / Hkv: query head h reads kv head h / group
  float scale = 1.0f;      ///< the problem's scale rounded to fp32, as the kernels apply it
  float softcap = 0.0f;    ///< 0 = off
  std::int32_t causal = 0;
  std::int32_t alignment = 0;  ///< attncheck_alignment
  std::int64_t diagonal_offset = 0;
  std::int64_t window_left = -1, window_right = -1;
  std::int32_t mask_kind = 0;        ///< attncheck_mask_kind
  std::int64_t mask_k_len = 0;       ///< Lkm: keys j >= Lkm are masked
  StridedTensor mask;                ///< [Bm, Hm, Lqm, Lkm], broadcast dims given stride 0
  const std::int64_t* key_lengths = nullptr;  ///< [B] or null
  std::int64_t key_lengths_stride = 1;
  StridedTensor q, k, v, out;
  float* lse = nullptr;              ///< [B, Hq, Lq] or null
  std::int64_t lse_stride[3] = {0, 0, 0};
  /// ABI 2.3: one sink logit per query head (backend.h), in the backend's memory, or null.
  const float* sinks = nullptr;
  std::int64_t sinks_stride = 1;
  /// ABI 2.4, a paged cache: k and v are page pools with strides ordered (page, kv head, row in
  /// page, dim) whatever their layout, and key j of batch b is row j mod page_size of page
  /// block_table[b, j / page_size] (in the backend's memory). Null: k and v are [B, Hkv, Lk, D].
  const std::int32_t* block_table = nullptr;
  std::int64_t block_table_stride[2] = {0, 0};
  std::int64_t page_size = 1, num_pages = 0;
  /// ABI 2.5, a packed batch: sequence b's queries are tokens [cu_seqlens_q[b], cu_seqlens_q[b + 1])
  /// of q, out and lse, its keys tokens [cu_seqlens_k[b], cu_seqlens_k[b + 1]) of k and v (in the
  /// backend's memory), whose strides are then (0, head, token, dim). The kernels work on the
  /// logical padded rows of problem.h: the sequence's queries are rows [first, first + count)
  /// with first = Lq − count under bottom-right alignment, 0 otherwise. Null: a padded batch.
  const std::int32_t* cu_seqlens_q = nullptr;
  const std::int32_t* cu_seqlens_k = nullptr;
  std::int64_t total_q = 0, total_k = 0;  ///< tokens of q and of k, which no offset may pass
};

/// Everything the backward kernels need (backend.h, attncheck_backward_tensors). `forward` holds
/// the forward call's inputs, with out = the forward's O and lse = its saved LSE, both read only.
struct BackwardParams {
  AttentionParams forward;
  StridedTensor d_out;                ///< dO [B, Hq, Lq, Dv], input dtype
  const float* d_lse = nullptr;       ///< dLSE [B, Hq, Lq] or null (zero)
  std::int64_t d_lse_stride[3] = {0, 0, 0};
  StridedTensor d_q, d_k, d_v;        ///< written entirely, in the input dtype
  /// Scratch [B, Hq, Lq], compact, allocated by the launch: δ_i = D_i − dLSE_i with
  /// D_i = Σ_d dO_id O_id, written by the first kernel and read by the other two.
  float* delta = nullptr;
};

}  // namespace attncheck::cuda
