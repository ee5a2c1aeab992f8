/// \file flash_kernel.h
/// \brief cpu-flash's tile kernel interface: plain data in, one query tile of one (batch, head)
/// out; and the backward pass's phases. Implemented once (flash_tile.inl, flash_backward.inl)
/// over a SIMD traits type and compiled three times:
/// kernel_avx512.cpp, kernel_avx2.cpp (per-file ISA flags, see backends/CMakeLists.txt) and
/// kernel_generic.cpp (portable). cpu_flash.cpp picks one at run time (__builtin_cpu_supports).
#pragma once

#include <cstdint>

#include "attncheck/backend.h"

namespace attncheck::cpu_flash {

/// Keys per tile (the online-softmax block declared in the profile) and query rows per tile.
inline constexpr std::int64_t kBlockKeys = 64;
inline constexpr std::int64_t kBlockRows = 96;
/// The value dim is padded to a multiple of this in the workspace (the widest vector).
inline constexpr std::int64_t kPad = 16;
/// Query rows per backward tile (its key tiles are the forward's kBlockKeys), and the rows of the
/// backward's register micro-tiles: a divisor of both tile sizes, so every product of the
/// backward (whose row count is a query tile or a key tile) splits into whole micro-tiles.
inline constexpr std::int64_t kBackwardRows = 64;
inline constexpr std::int64_t kBackwardMicroRows = 4;
static_assert(kBlockKeys % kBackwardMicroRows == 0 && kBackwardRows % kBackwardMicroRows == 0);

enum class Elem : std::int32_t { F32, F16, BF16, U8 };

/// A strided tensor in elements; data already includes the DLTensor's byte_offset. Broadcast
/// dimensions carry stride 0.
struct Strided {
  const char* data = nullptr;
  Elem type = Elem::F32;
  std::int64_t stride[4] = {0, 0, 0, 0};
};

struct FlashParams {
  std::int64_t batch = 1, q_heads = 1, kv_heads = 1, q_len = 1, k_len = 1, qk_dim = 1, v_dim = 1;
  std::int64_t group = 1;   ///< Hq / Hkv
  std::int64_t dv_pad = kPad;  ///< v_dim rounded up to kPad
  float scale = 1, softcap = 0;
  bool causal = false;
  std::int64_t window_left = -1, window_right = -1;
  const std::int64_t* offset = nullptr;     ///< [B]: diagonal of row i is i + offset[b]
  const std::int64_t* key_limit = nullptr;  ///< [B]: keys >= key_limit[b] are masked (Lk, key length, mask length)
  Strided q, k, v;
  std::int32_t mask_kind = 0;  ///< attncheck_mask_kind
  Strided mask;                ///< [Bm, Hm, Lqm, Lkm] with stride 0 on broadcast dims
  Strided out;                 ///< written in the input dtype
  float* lse = nullptr;        ///< compact-strided float32 or NULL
  std::int64_t lse_stride[3] = {0, 0, 0};
  // K and V packed once per call by pack_kv_*: tile t of (b, g) is tile (b·Hkv + g)·key_tiles + t.
  std::int64_t key_tiles = 0;          ///< ceil(Lk / kBlockKeys)
  const float* packed_k = nullptr;     ///< [tiles][Dk][kBlockKeys]
  const float* packed_v = nullptr;     ///< [tiles][kBlockKeys][dv_pad]
  const unsigned char* v_finite = nullptr;  ///< [tiles]: V's tile holds no NaN/Inf
  // ABI 2.3 (backend.h): ALiBi slopes [Hq] or [B, Hq] (alibi_batch_stride Hq or 0), sinks [Hq].
  const float* alibi_slopes = nullptr;  ///< NULL without ALiBi
  std::int64_t alibi_batch_stride = 0;
  const float* sinks = nullptr;         ///< NULL without sinks

  // ABI 2.4, a paged cache: k and v are page pools whose strides are ordered (page, kv head, row
  // in page, dim) whatever the layout, and key j of batch b is row j mod page_size of page
  // block_table[b·table_stride + j / page_size]. NULL: k and v are [B, Hkv, Lk, D].
  const std::int32_t* block_table = nullptr;
  std::int64_t table_stride = 0, page_size = 1;

  float alibi_slope(std::int64_t b, std::int64_t h) const {
    return alibi_slopes != nullptr ? alibi_slopes[b * alibi_batch_stride + h] : 0.0f;
  }
  /// Keys of batch b that pack_kv reads: below its key limit (what no row can see is not read).
  std::int64_t key_read_limit(std::int64_t b) const { return key_limit != nullptr ? key_limit[b] : k_len; }
};

/// One backward call: the forward's problem and inputs, the output gradients, the gradients to
/// write, and the per-call fp32 buffers the phases share (cpu_flash.cpp owns them). Rows of the
/// row buffers are (b, h, i) with i < q_len_pad, row-major: row (b·Hq + h)·q_len_pad + i.
struct BackwardParams {
  FlashParams f;  ///< problem, Q, K, V, mask, key lengths; f.out is the forward's O (read), f.lse its lse
  Strided dout;   ///< dO, input dtype
  const float* dlse = nullptr;  ///< dL/dlse (float32) or NULL (zero)
  std::int64_t dlse_stride[3] = {0, 0, 0};
  Strided dq, dk, dv;      ///< written in the input dtype
  Strided dbias;           ///< the mask's shape, input dtype; data NULL when not wanted
  std::int64_t mask_shape[4] = {1, 1, 1, 1};  ///< [Bm, Hm, Lqm, Lkm] (problem.h), for dbias
  std::int64_t dk_pad = kPad;   ///< qk_dim rounded up to kPad
  std::int64_t q_len_pad = 0;   ///< q_len rounded up to kBackwardMicroRows
  // Written by backward_rows_* (phase 1), read by backward_keys_* (phase 2):
  float* q_rows = nullptr;     ///< [rows][dk_pad]: Q in fp32; zero for padding and rows with no allowed key
  float* dout_rows = nullptr;  ///< [rows][dv_pad]: dO in fp32; likewise zero
  float* row_lse = nullptr;    ///< [rows]: lse; −inf for padding rows
  float* row_delta = nullptr;  ///< [rows]: D_i = Σ_d dO_id O_id
  float* row_dlse = nullptr;   ///< [rows]: dlse_i (0 without dlse), so that dS = P ((dP − D) + dlse)
  float* dq_sum = nullptr;     ///< [rows][dk_pad]: Σ_j dS_ij K_j in fp32, one tile sum per key tile; dQ = σ · this
  // The bias gradient: each (b, g) of phase 2 sums into its own partial, [dbias_heads][Lqm][Lkm]
  // with dbias_heads = 1 when the mask broadcasts over heads, else the group's Hq / Hkv heads;
  // backward_dbias_* (phase 3) adds the partials in a fixed order.
  float* dbias_partial = nullptr;
  std::int64_t dbias_heads = 1;
};

/// Per-thread scratch of the backward (floats), sized by backward_workspace_floats().
struct BackwardWorkspace {
  float *kt, *kr, *vt;       ///< the key tile: Kᵀ [Dk][Bc], K [Bc][dk_pad], Vᵀ [Dv][Bc]
  float *dk_sum, *dv_sum;    ///< its gradients' fp32 sums: [Bc][dk_pad], [Bc][dv_pad]
  float *p, *ds, *tanh, *bias;  ///< [kBackwardRows][Bc]: P, dP then dS, tanh(r/c), the mask's bias
  float* dq_row;             ///< [dk_pad]: one row's tile sum on the path that skips zero dS
};

std::int64_t backward_workspace_floats(std::int64_t qk_dim, std::int64_t dk_pad, std::int64_t v_dim, std::int64_t dv_pad);
BackwardWorkspace carve_backward_workspace(float* base, std::int64_t qk_dim, std::int64_t dk_pad, std::int64_t v_dim,
                                           std::int64_t dv_pad);

/// Per-thread scratch (floats), sized by workspace_floats().
struct Workspace {
  float *q, *s, *bias, *o, *m, *l, *alpha;
};

/// Floats a workspace needs for these dims (each array rounded to 64-byte multiples).
std::int64_t workspace_floats(std::int64_t qk_dim, std::int64_t dv_pad);
/// Carves a workspace out of `base` (64-byte aligned, workspace_floats() long).
Workspace carve_workspace(float* base, std::int64_t qk_dim, std::int64_t dv_pad);

/// Computes and writes rows [q0, q0 + kBlockRows) ∩ [0, Lq) of (batch b, query head h): out, and
/// lse when params.lse is set.
void flash_tile_avx512(const FlashParams& params, std::int64_t b, std::int64_t h, std::int64_t q0, const Workspace& ws);
void flash_tile_avx2(const FlashParams& params, std::int64_t b, std::int64_t h, std::int64_t q0, const Workspace& ws);
void flash_tile_generic(const FlashParams& params, std::int64_t b, std::int64_t h, std::int64_t q0, const Workspace& ws);

/// A cpu-flash table with `threads` threads (0: one per hardware thread) and the kernels of `isa`
/// ("avx512", "avx2", "generic"; NULL or "": the widest this CPU runs). NULL if `isa` is unknown
/// or this CPU cannot run it. For tests of every kernel path and for benchmarks; the registry's
/// entry is make_cpu_flash(0, NULL).
attncheck_backend* make_cpu_flash(int threads, const char* isa);
/// Whether this CPU runs the kernels of `isa`.
bool cpu_flash_isa_available(const char* isa);

/// Scalar binary16 conversions (portable): exact widening, and round-to-nearest-even narrowing.
float half_to_float_exact(std::uint16_t h);
std::uint16_t float_to_half_rn(float x);

/// Packs key tile t of (batch b, kv heads [g, g + heads)) into the buffers FlashParams::packed_* point to.
void pack_kv_avx512(const FlashParams& params, std::int64_t b, std::int64_t g, std::int64_t heads, std::int64_t t, float* packed_k,
                    float* packed_v, unsigned char* v_finite);
void pack_kv_avx2(const FlashParams& params, std::int64_t b, std::int64_t g, std::int64_t heads, std::int64_t t, float* packed_k,
                  float* packed_v, unsigned char* v_finite);
void pack_kv_generic(const FlashParams& params, std::int64_t b, std::int64_t g, std::int64_t heads, std::int64_t t, float* packed_k,
                     float* packed_v, unsigned char* v_finite);

/// Backward phase 1, for (batch b, query head h): its rows of q_rows, dout_rows, row_lse,
/// row_delta, and dq_sum zeroed.
void backward_rows_avx512(const BackwardParams& params, std::int64_t b, std::int64_t h);
void backward_rows_avx2(const BackwardParams& params, std::int64_t b, std::int64_t h);
void backward_rows_generic(const BackwardParams& params, std::int64_t b, std::int64_t h);
/// Backward phase 2, for (batch b, kv head g): dK and dV of its keys written, its query heads'
/// dq_sum accumulated and dQ written, its dbias partial (when wanted) filled.
void backward_keys_avx512(const BackwardParams& params, std::int64_t b, std::int64_t g, const BackwardWorkspace& ws);
void backward_keys_avx2(const BackwardParams& params, std::int64_t b, std::int64_t g, const BackwardWorkspace& ws);
void backward_keys_generic(const BackwardParams& params, std::int64_t b, std::int64_t g, const BackwardWorkspace& ws);
/// Backward phase 3: row `row` of dbias, [Bm][Hm][Lqm] row-major, from the partials.
void backward_dbias_avx512(const BackwardParams& params, std::int64_t row);
void backward_dbias_avx2(const BackwardParams& params, std::int64_t row);
void backward_dbias_generic(const BackwardParams& params, std::int64_t row);

/// The vectorized exp of each path, for the test that measures it against the declared u_E.
void exp_avx512(const float* x, float* y, std::int64_t n);
void exp_avx2(const float* x, float* y, std::int64_t n);
void exp_generic(const float* x, float* y, std::int64_t n);

}  // namespace attncheck::cpu_flash
