/*!
 * \file backend.h
 * \brief attncheck's backend plug-in ABI: the C contract between the suite and any attention kernel.
 *
 * A backend is a shared library exporting one symbol, attncheck_backend_entry(), that returns a
 * table of function pointers (attncheck_backend). Every tensor crosses as a DLPack DLTensor
 * (dtype, device, shape, strides in elements), so a kernel written in any language, built by any
 * toolchain, for CPU or CUDA memory, loads and is checked. Built-in backends use the same table.
 *
 * Pure C99; only <stdint.h>, <stddef.h> and <dlpack/dlpack.h>. Exceptions, longjmp and C++
 * objects never cross it: every entry point returns an attncheck_status, and a human-readable
 * message for the last failure is available from last_error().
 *
 * Versioning (as dlpack.h):
 *  - ATTNCHECK_ABI_VERSION_MAJOR changes when the layout or meaning of an existing field or
 *    function changes. The loader refuses a backend whose major differs from its own.
 *  - ATTNCHECK_ABI_VERSION_MINOR changes when something is added without breaking old readers:
 *    a new enumerator, or a field appended to the end of a struct whose size is recorded in its
 *    struct_size. A reader checks struct_size before touching a field added in a later minor.
 *  - The first field of attncheck_backend (abi_version) is frozen forever.
 *
 * Threading: the suite calls one backend instance from one thread at a time. A backend may use
 * as many threads as it likes inside a call.
 */
#ifndef ATTNCHECK_BACKEND_H_
#define ATTNCHECK_BACKEND_H_

#include <dlpack/dlpack.h>
#include <stddef.h>
#include <stdint.h>

#define ATTNCHECK_ABI_VERSION_MAJOR 1
#define ATTNCHECK_ABI_VERSION_MINOR 0

#if defined(_WIN32)
#define ATTNCHECK_EXPORT __declspec(dllexport)
#else
#define ATTNCHECK_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*! \brief Major and minor ABI version a table was compiled against. */
typedef struct {
  uint32_t major; /*!< \brief ATTNCHECK_ABI_VERSION_MAJOR of the backend's build. */
  uint32_t minor; /*!< \brief ATTNCHECK_ABI_VERSION_MINOR of the backend's build. */
} attncheck_abi_version;

/*! \brief Result of every ABI call. Enumerated values are int32_t constants so the width is fixed in C and C++. */
typedef int32_t attncheck_status;
enum {
  kAttncheckOk = 0,             /*!< \brief Success. */
  kAttncheckNotSupported = 1,   /*!< \brief The backend does not implement this problem or dtype: a skip, never a failure. */
  kAttncheckInvalidProblem = 2, /*!< \brief The problem or a tensor is inconsistent (shape, dtype, device). */
  kAttncheckInternalError = 3   /*!< \brief The backend failed (allocation, CUDA error, caught exception). */
};

/*! \brief Diagonal alignment for causal and window masks (see attncheck_problem). */
typedef int32_t attncheck_alignment;
enum {
  kAttncheckAlignTopLeft = 0,     /*!< \brief offset = 0: query i sees keys j <= i (PyTorch is_causal). */
  kAttncheckAlignBottomRight = 1, /*!< \brief offset = Lk - Lq (FlashAttention). */
  kAttncheckAlignOffset = 2,      /*!< \brief offset = diagonal_offset (a KV cache of that many past tokens). */
  kAttncheckAlignKeyLengths = 3   /*!< \brief offset = key_lengths[b] - Lq (ONNX nonpad_kv_seqlen). */
};

/*! \brief Kind of the mask tensor. */
typedef int32_t attncheck_mask_kind;
enum {
  kAttncheckMaskNone = 0,     /*!< \brief No mask tensor; forward receives NULL. */
  kAttncheckMaskBoolean = 1,  /*!< \brief uint8, nonzero = attend. */
  kAttncheckMaskAdditive = 2  /*!< \brief Floating bias added to the (soft-capped) scores; -inf masks the key. */
};

/*! \brief What a backend writes for a query row with no allowed key. */
typedef int32_t attncheck_empty_row;
enum {
  kAttncheckEmptyRowZeros = 0,   /*!< \brief O = 0, LSE = -inf (ONNX opset 23, PyTorch _safe_softmax). */
  kAttncheckEmptyRowNaN = 1,     /*!< \brief O = NaN (the unguarded 0/0). */
  kAttncheckEmptyRowMeanOfV = 2  /*!< \brief O = mean of V over all Lk keys (large finite fill values). */
};

/*! \brief How an accumulator rounds. */
typedef int32_t attncheck_rounding;
enum {
  kAttncheckRoundNearest = 0,    /*!< \brief IEEE round-to-nearest-even (CPU FMA, CUDA cores). */
  kAttncheckRoundTowardZero = 1  /*!< \brief Truncation, as tensor-core accumulation behaves. */
};

/*!
 * \brief One attention call. Logical shapes (any strides):
 *   q [B, Hq, Lq, Dk], k [B, Hkv, Lk, Dk], v [B, Hkv, Lk, Dv], out [B, Hq, Lq, Dv], lse [B, Hq, Lq],
 *   mask [mask_shape], key_lengths [B].
 * Scores: s = scale * q.k; if softcap > 0, s = softcap * tanh(s / softcap); then the additive mask
 * is added. Allowed keys for query i of batch b, with p = i + offset(b) (see attncheck_alignment):
 * j < key_lengths[b] (if given); j < mask_shape[3] (if masked); mask[b, h, i, j] != 0 (boolean);
 * j <= p (if causal); p - window_left <= j <= p + window_right (each side if >= 0). Query head h
 * reads kv head h / (Hq / Hkv). Masked keys contribute exactly nothing, whatever K and V hold.
 */
typedef struct {
  int64_t batch;           /*!< \brief B >= 1. */
  int64_t q_heads;         /*!< \brief Hq >= 1. */
  int64_t kv_heads;        /*!< \brief Hkv >= 1, Hq % Hkv == 0. */
  int64_t q_len;           /*!< \brief Lq >= 1. */
  int64_t k_len;           /*!< \brief Lk >= 1, cached past tokens included. */
  int64_t qk_dim;          /*!< \brief Dk >= 1. */
  int64_t v_dim;           /*!< \brief Dv >= 1. */
  double scale;            /*!< \brief Applied as given (the suite resolves the 1/sqrt(Dk) default). */
  double softcap;          /*!< \brief c > 0 caps scores as c*tanh(s/c) before the mask; 0 = off. */
  int32_t causal;          /*!< \brief Nonzero: keys after the diagonal are masked. */
  attncheck_alignment alignment; /*!< \brief Diagonal for causal and window. */
  int64_t diagonal_offset; /*!< \brief Used with kAttncheckAlignOffset only; else 0. */
  int64_t window_left;     /*!< \brief Keys before p - window_left are masked; -1 = unbounded. */
  int64_t window_right;    /*!< \brief Keys after p + window_right are masked; -1 = unbounded. */
  attncheck_mask_kind mask_kind; /*!< \brief Kind of the mask tensor. */
  int32_t has_key_lengths; /*!< \brief Nonzero: key_lengths is given. */
  int64_t mask_shape[4];   /*!< \brief [Bm in {1,B}, Hm in {1,Hq}, Lqm in {1,Lq}, 1 <= Lkm <= Lk]; keys >= Lkm are masked. */
} attncheck_problem;

/*!
 * \brief How a backend computes, declared honestly: the tolerance model derives every bound from
 * it (the suite's numerics model, §2). A dtype field names where a value is rounded; a stage that
 * stays in a wider type names that type. "Unit roundoff" below means the dtype's 2^-p.
 */
typedef struct {
  uint32_t struct_size;            /*!< \brief sizeof(attncheck_numerics_profile) as compiled by the backend. */
  DLDataType input_dtype;          /*!< \brief dtype of q, k, v (and of an additive mask). */
  DLDataType score_dtype;          /*!< \brief Where Q.K^T is accumulated and the scores are kept (u_S). */
  DLDataType probability_dtype;    /*!< \brief P as stored for P.V (u_P); equal to accumulator_dtype if not re-rounded. */
  DLDataType accumulator_dtype;    /*!< \brief P.V and row-sum accumulator (u_A). */
  DLDataType output_dtype;         /*!< \brief dtype of out (u_O). lse is always float32. */
  attncheck_rounding accumulation_rounding; /*!< \brief Rounding of the P.V / row-sum accumulator. */
  int32_t products_per_rounding;   /*!< \brief k0 >= 1: products summed exactly before each accumulator rounding. */
  int32_t softmax_block;           /*!< \brief Keys per online-softmax block; 0 = three-pass softmax. */
  int32_t deterministic;           /*!< \brief Nonzero: repeated calls are bitwise equal. */
  attncheck_empty_row empty_row;   /*!< \brief Convention for rows with no allowed key. */
  int32_t flushes_subnormals;      /*!< \brief Nonzero: subnormal P or output values become zero (FTZ). */
  int32_t accepts_strides;         /*!< \brief Nonzero: any strides; zero: compact row-major tensors only. */
  int32_t writes_lse;              /*!< \brief Nonzero: forward fills lse when it is not NULL. */
  double exp_relative_error;       /*!< \brief u_E, the relative error of exp; 0 = the suite's default 2^-22. */
  double tanh_relative_error;      /*!< \brief u_T for softcap; 0 = the suite's default 2^-22. */
} attncheck_numerics_profile;

/*! \brief Tensors of one forward call. Inputs are read-only; a backend that writes them is caught. */
typedef struct {
  const DLTensor* q;           /*!< \brief [B, Hq, Lq, Dk]. */
  const DLTensor* k;           /*!< \brief [B, Hkv, Lk, Dk]. */
  const DLTensor* v;           /*!< \brief [B, Hkv, Lk, Dv]. */
  const DLTensor* mask;        /*!< \brief mask_shape; uint8 (boolean) or input dtype (additive); NULL when mask_kind is none. */
  const DLTensor* key_lengths; /*!< \brief [B] int64; NULL unless has_key_lengths. */
  DLTensor* out;               /*!< \brief [B, Hq, Lq, Dv] in output_dtype; written entirely. */
  DLTensor* lse;               /*!< \brief [B, Hq, Lq] float32, natural log; NULL when not wanted. */
} attncheck_attention_tensors;

/*!
 * \brief The multi-head attention layer: out = concat_h(attention(X W_Q^(h) + b_Q^(h),
 * X_kv W_K^(g) + b_K^(g), X_kv W_V^(g) + b_V^(g))) W_O + b_O, with g = h / (Hq / Hkv).
 * attention.q_len is the length of X, attention.k_len that of X_kv (= X for self-attention).
 */
typedef struct {
  attncheck_problem attention; /*!< \brief The core problem (Dk, Dv, heads, masks, causal...). */
  int64_t model_dim;           /*!< \brief d_model >= 1. */
  int32_t self_attention;      /*!< \brief Nonzero: keys and values are projected from x (x_kv is NULL). */
  int32_t has_qkv_bias;        /*!< \brief Nonzero: b_q, b_k, b_v are given. */
  int32_t has_out_bias;        /*!< \brief Nonzero: b_o is given. */
} attncheck_layer_problem;

/*! \brief Tensors of one layer call. Shapes are logical; any strides. */
typedef struct {
  const DLTensor* x;           /*!< \brief [B, Lq, d_model]. */
  const DLTensor* x_kv;        /*!< \brief [B, Lk, d_model]; NULL for self-attention. */
  const DLTensor* w_q;         /*!< \brief [Hq, d_model, Dk]: one projection per query head. */
  const DLTensor* w_k;         /*!< \brief [Hkv, d_model, Dk]: shared by the Hq/Hkv heads of a group. */
  const DLTensor* w_v;         /*!< \brief [Hkv, d_model, Dv]. */
  const DLTensor* b_q;         /*!< \brief [Hq, Dk] or NULL. */
  const DLTensor* b_k;         /*!< \brief [Hkv, Dk] or NULL. */
  const DLTensor* b_v;         /*!< \brief [Hkv, Dv] or NULL. */
  const DLTensor* w_o;         /*!< \brief [Hq * Dv, d_model]; rows h*Dv .. h*Dv+Dv-1 take head h. */
  const DLTensor* b_o;         /*!< \brief [d_model] or NULL. */
  const DLTensor* mask;        /*!< \brief As in attncheck_attention_tensors. */
  const DLTensor* key_lengths; /*!< \brief As in attncheck_attention_tensors. */
  DLTensor* out;               /*!< \brief [B, Lq, d_model] in output_dtype. */
} attncheck_layer_tensors;

typedef struct attncheck_backend attncheck_backend;

/*! \brief The table a backend library hands out. All function pointers are required unless marked optional. */
struct attncheck_backend {
  attncheck_abi_version abi_version; /*!< \brief Frozen first field: the loader reads it before anything else. */
  uint32_t struct_size;              /*!< \brief sizeof(attncheck_backend) as compiled by the backend. */
  const char* name;                  /*!< \brief Short stable name, e.g. "cpu-flash"; owned by the backend. */
  const char* description;           /*!< \brief One line for listings; owned by the backend; may be NULL. */
  void* context;                     /*!< \brief The backend's own state; the suite never touches it. */

  /*! \brief Fills *profile for inputs of input_dtype; kAttncheckNotSupported if that dtype is not handled. */
  attncheck_status (*get_profile)(const attncheck_backend* self, DLDataType input_dtype,
                                  attncheck_numerics_profile* profile);
  /*!
   * \brief kAttncheckOk if forward would compute this problem for inputs of input_dtype in memory
   * of device_type; otherwise kAttncheckNotSupported (or kAttncheckInvalidProblem) with a
   * NUL-terminated reason written to reason[0 .. reason_size) (reason may be NULL when reason_size is 0).
   */
  attncheck_status (*supports)(const attncheck_backend* self, const attncheck_problem* problem,
                               DLDataType input_dtype, DLDeviceType device_type, char* reason, size_t reason_size);
  /*! \brief Computes out (and lse if non-NULL) for the problem. Must not write its inputs. */
  attncheck_status (*forward)(attncheck_backend* self, const attncheck_problem* problem,
                              const attncheck_attention_tensors* tensors);
  /*! \brief Optional (NULL when the backend implements only the core): the whole layer. */
  attncheck_status (*forward_layer)(attncheck_backend* self, const attncheck_layer_problem* problem,
                                    const attncheck_layer_tensors* tensors);
  /*! \brief Message of the last non-OK status of this instance; never NULL; valid until the next call. */
  const char* (*last_error)(const attncheck_backend* self);
  /*! \brief Releases the table and everything it owns. self is invalid afterwards. */
  void (*destroy)(attncheck_backend* self);
};

/*! \brief Type of the one symbol a plug-in library exports: returns a new table owned by the caller (destroy() frees it), or NULL. */
typedef attncheck_backend* (*attncheck_backend_entry_fn)(void);

/*! \brief Name of the exported entry symbol. */
#define ATTNCHECK_BACKEND_ENTRY_SYMBOL "attncheck_backend_entry"

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* ATTNCHECK_BACKEND_H_ */
