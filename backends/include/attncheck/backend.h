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
 *    a new enumerator, or a field appended to the end of a struct. Every struct that crosses
 *    the ABI (the problem, the tensor sets, the layer problem, the profile, the table) begins
 *    with uint32_t struct_size, the sizeof() its writer was compiled with. The rules:
 *      1. Fields are only ever appended, never moved, resized or given a new meaning.
 *      2. A reader touches a field only if the writer's struct_size covers it:
 *         ATTNCHECK_HAS_FIELD(ptr, type, field). A field the writer did not know is absent, and
 *         absence means the documented default (every field added in a minor says what it is).
 *      3. A backend refuses (kAttncheckInvalidProblem) a struct smaller than the first version of
 *         it in this major (ATTNCHECK_*_SIZE_2_0), which is a corrupt or foreign caller.
 *  - The first field of attncheck_backend (abi_version) is frozen forever.
 *
 * Memory (new in 2.0): the table's `device` says where every tensor of a call must live: host
 * memory (kDLCPU), CUDA device memory (kDLCUDA), CUDA host-pinned (kDLCUDAHost) or managed
 * (kDLCUDAManaged) memory, or the suite's simulated device (kAttncheckSimulatedDevice). The suite
 * allocates there; the DLTensors' device fields say so too. Work on a device is ordered by the
 * `stream` of the tensor set, following DLPack's stream convention:
 *  - kDLCUDA, kDLCUDAHost, kDLCUDAManaged: stream is a cudaStream_t (NULL = the legacy default
 *    stream). forward may return as soon as its work is enqueued on that stream; the suite
 *    synchronizes the stream before it reads anything, and an asynchronous CUDA error found then
 *    (illegal address, launch failure) fails the call. Work left on any other stream is a bug: it
 *    is not waited for.
 *  - kDLCPU: stream is NULL; everything is written when forward returns.
 *  - kAttncheckSimulatedDevice: stream points to an attncheck_simulated_stream (below).
 * Isolation: a suite that runs calls in forked children (attncheck run --isolate, the default for
 * plug-ins loaded by path) asks get_profile in the parent process but supports() and forward in
 * the child when the device is not kDLCPU, so that only children initialise the device. The
 * entry function and get_profile of a device backend must therefore not initialise it (no CUDA
 * call); supports() and forward may.
 *
 * Threading: the suite calls one backend instance from one thread at a time. A backend may use
 * as many threads as it likes inside a call.
 */
#ifndef ATTNCHECK_BACKEND_H_
#define ATTNCHECK_BACKEND_H_

#include <dlpack/dlpack.h>
#include <stddef.h>
#include <stdint.h>

#define ATTNCHECK_ABI_VERSION_MAJOR 2
#define ATTNCHECK_ABI_VERSION_MINOR 6

/*! \brief Nonzero when the struct at ptr (of type type, whose first field is struct_size) was written
 * by code that knew field: the only safe way to read a field added in a later minor version. */
#define ATTNCHECK_HAS_FIELD(ptr, type, field) \
  ((ptr)->struct_size >= offsetof(type, field) + sizeof(((const type*)0)->field))

/*!
 * \brief The suite's simulated device: memory the host could address, but which the suite maps
 * (mprotect) only inside its explicit copies and for the duration of the backend call. It lets
 * kernels that run on the host stand in for device kernels, so the suite's device path (placing
 * inputs, probing guards, reading outputs back, synchronizing the stream) is exercised and proven
 * on machines without a GPU: any access to device memory outside those windows faults.
 */
#define kAttncheckSimulatedDevice kDLExtDev

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

/*! \brief ALiBi slopes of a problem (ABI 2.3). */
typedef int32_t attncheck_alibi;
enum {
  kAttncheckAlibiNone = 0,        /*!< \brief No ALiBi; alibi_slopes is NULL. The default. */
  kAttncheckAlibiPerHead = 1,     /*!< \brief alibi_slopes [Hq] float32. */
  kAttncheckAlibiPerBatchHead = 2 /*!< \brief alibi_slopes [B, Hq] float32 (FlashAttention's (batch, nheads)). */
};

/*! \brief Optional problem options a backend implements (ABI 2.3), bits of attncheck_backend's
 * problem_options. An option the table does not declare is never sent to it. */
enum {
  kAttncheckOptionAlibi = 1u << 0, /*!< \brief problem.alibi with alibi_slopes. */
  kAttncheckOptionSinks = 1u << 1, /*!< \brief problem.has_sinks with sinks. */
  kAttncheckOptionPagedKv = 1u << 2, /*!< \brief ABI 2.4: problem.kv_storage paged, with block_table. */
  kAttncheckOptionVarlen = 1u << 3,  /*!< \brief ABI 2.5: problem.varlen, packed sequences with cu_seqlens_q/k. */
  kAttncheckOptionFp8 = 1u << 4      /*!< \brief ABI 2.6: fp8 q, k, v (e4m3fn or e5m2) with problem.descale and its descales. */
};

/*! \brief DLPack 1.1's type codes of the two fp8 formats (ABI 2.6), bits = 8, lanes = 1: the
 * DLPack 0.6 header some systems ship predates them, so they are named here with DLPack's values. */
enum {
  kAttncheckDLFloat8E4M3FN = 10, /*!< \brief DLPack's kDLFloat8_e4m3fn: OCP e4m3, no infinity, largest finite 448. */
  kAttncheckDLFloat8E5M2 = 12    /*!< \brief DLPack's kDLFloat8_e5m2: OCP e5m2, IEEE-like, largest finite 57344. */
};

/*! \brief Descale factors of fp8 inputs (ABI 2.6); see attncheck_problem. */
typedef int32_t attncheck_descale;
enum {
  kAttncheckDescaleNone = 0,      /*!< \brief No descales; q_descale, k_descale, v_descale are NULL. The default. */
  kAttncheckDescalePerTensor = 1, /*!< \brief Each descale is [1] float32. */
  kAttncheckDescalePerHead = 2    /*!< \brief Each descale is [B, Hkv] float32 (FlashAttention 3's (batch, num_heads_k)). */
};

/*! \brief How K and V are stored (ABI 2.4); see attncheck_problem. */
typedef int32_t attncheck_kv_storage;
enum {
  kAttncheckKvContiguous = 0,      /*!< \brief k [B, Hkv, Lk, Dk], v [B, Hkv, Lk, Dv]. The default. */
  kAttncheckKvPagedTokenMajor = 1, /*!< \brief k [num_pages, page_size, Hkv, Dk] (FlashAttention's k_cache, vLLM). */
  kAttncheckKvPagedHeadMajor = 2   /*!< \brief k [num_pages, Hkv, page_size, Dk]. */
};

/*! \brief What a backend writes for a query row with no allowed key. */
typedef int32_t attncheck_empty_row;
enum {
  kAttncheckEmptyRowZeros = 0,   /*!< \brief O = 0, LSE = -inf (ONNX opset 23, PyTorch _safe_softmax). */
  kAttncheckEmptyRowNaN = 1,     /*!< \brief O = NaN (the unguarded 0/0). */
  kAttncheckEmptyRowMeanOfV = 2  /*!< \brief O = mean of V over all Lk keys (large finite fill values). */
};

/*! \brief What a backend writes to lse for a query row with no allowed key (ABI 2.1). */
typedef int32_t attncheck_empty_row_lse;
enum {
  kAttncheckEmptyRowLseNegInf = 0,     /*!< \brief -inf: log of an empty sum (ONNX, FlashAttention). The default. */
  kAttncheckEmptyRowLseZero = 1,       /*!< \brief 0 (PyTorch's CPU flash and math paths). */
  kAttncheckEmptyRowLseUnspecified = 2 /*!< \brief Any value, NaN included: the suite does not read it. */
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
 *
 * The diagonal p moves with the alignment whether or not causal is set: a non-causal sliding
 * window (causal = 0, window_left/right >= 0) is measured from the same aligned diagonal. Key
 * lengths lie in [0, Lk]; a length of 0 leaves every row of that batch without an allowed key
 * (see attncheck_empty_row).
 *
 * ABI 2.3 (read only where ATTNCHECK_HAS_FIELD says the suite wrote them; absent = off):
 *  - alibi: every allowed key's score gets -slope * |j - p| added after the softcap and with the
 *    additive mask, p the same aligned diagonal as causal (FlashAttention's alibi_slopes is
 *    kAttncheckAlignBottomRight); slope = alibi_slopes[h] or alibi_slopes[b, h].
 *  - has_sinks: query head h has a sink logit sinks[h] (float32, already in the final score
 *    space: not scaled, not capped, never masked; -inf = none) added to the softmax denominator
 *    only: Z = sum_k e^{s_k} + e^{sinks[h]}, O = sum_k e^{s_k} v_k / Z, lse = log Z. It is one extra
 *    key of value 0: a row with no allowed key writes O = 0 and lse = sinks[h].
 *
 * ABI 2.4, a paged KV cache (kv_storage != kAttncheckKvContiguous; vLLM, FlashAttention's
 * block_table): k and v are pools of pages, [num_pages, page_size, Hkv, D] (token-major) or
 * [num_pages, Hkv, page_size, D] (head-major), num_pages their dim 0 (any value >= 1), and
 * block_table [B, Lk / page_size] int32 names the page of each slot: key j of batch b is row
 * j mod page_size of page block_table[b, j / page_size]. Lk is the table's capacity (a multiple of
 * page_size); has_key_lengths is set and key_lengths[b] is the sequence's length. Only slots
 * s < ceil(key_lengths[b] / page_size) are used: an unused slot's entry may name any page, or
 * none, and must not be followed; keys past the length in the last used page are its tail,
 * masked as every key past the length is. Pages may be shared between sequences (a common
 * prefix). The backward pass takes contiguous K and V only.
 *
 * ABI 2.5, a packed variable-length batch (varlen != 0; FlashAttention's flash_attn_varlen):
 * sequence b has q_b = cu_seqlens_q[b + 1] - cu_seqlens_q[b] queries and k_b =
 * cu_seqlens_k[b + 1] - cu_seqlens_k[b] keys (int32 [B + 1] offsets from 0, non-decreasing, with
 * 0 <= q_b <= q_len and 0 <= k_b <= k_len: q_len and k_len are the longest a sequence may be, max_seqlen_q
 * and max_seqlen_k). q is [Tq, Hq, Dk] with Tq = cu_seqlens_q[B], k [Tk, Hkv, Dk], v [Tk, Hkv, Dv]
 * with Tk = cu_seqlens_k[B], out [Tq, Hq, Dv] and lse [Hq, Tq] (FlashAttention's varlen lse):
 * sequence b's query r is row cu_seqlens_q[b] + r, its key j row cu_seqlens_k[b] + j. Each
 * sequence is its own attention problem: causal, the window and ALiBi use its diagonal
 * p = r (kAttncheckAlignTopLeft) or p = r + k_b - q_b (kAttncheckAlignBottomRight, the only other
 * alignment allowed). A sequence of 0 queries writes nothing; one of 0 keys has only empty rows.
 * has_key_lengths is 0 and key_lengths NULL (the counts are the offsets'), mask_kind is none and
 * kv_storage contiguous. The backward pass takes padded batches only.
 *
 * ABI 2.6, fp8 inputs (kAttncheckOptionFp8; FlashAttention 3's q_descale, k_descale, v_descale):
 * q, k and v arrive in e4m3fn or e5m2 (kAttncheckDLFloat8E4M3FN, kAttncheckDLFloat8E5M2; all three
 * in the format the profile's input_dtype names), and the attention is that of the dequantized
 * values Q = q * q_descale, K = k * k_descale, V = v * v_descale. With kAttncheckDescalePerHead,
 * query head h of batch b uses q_descale[b, h / (Hq / Hkv)] (the kv head it reads) and kv head g
 * uses k_descale[b, g] and v_descale[b, g]. Descales are finite and positive. A kernel may fold
 * q_descale * k_descale into the softmax scale and apply v_descale to the output: the numerics
 * model allows either (numerics/README.md §2.14). out is written in output_dtype, lse in float32.
 * fp8 inputs take no additive mask, no paged cache and no packed batch (descale == none there).
 *
 * A suite sends an option only to a table whose problem_options declares it (absent or 0: none),
 * so rebuilding a plug-in against this header never makes it claim an option it ignores.
 */
typedef struct {
  uint32_t struct_size;    /*!< \brief sizeof(attncheck_problem) as compiled by the suite (ABI 2.0: ATTNCHECK_PROBLEM_SIZE_2_0). */
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
  /* ABI 2.3 */
  attncheck_alibi alibi;   /*!< \brief ALiBi slopes given in alibi_slopes; absent = kAttncheckAlibiNone. */
  int32_t has_sinks;       /*!< \brief Nonzero: sinks [Hq] is given; absent = 0. */
  /* ABI 2.4 */
  attncheck_kv_storage kv_storage; /*!< \brief Layout of k and v; absent = kAttncheckKvContiguous. */
  int64_t page_size;       /*!< \brief Keys per page (>= 1) when paged; 0 otherwise; absent = 0. */
  /* ABI 2.5 */
  int32_t varlen;          /*!< \brief Nonzero: a packed batch addressed by cu_seqlens_q and cu_seqlens_k; absent = 0. */
  /* ABI 2.6 */
  attncheck_descale descale; /*!< \brief Descales of fp8 q, k, v; absent = kAttncheckDescaleNone. */
} attncheck_problem;

/*! \brief Size of attncheck_problem in ABI 2.0: the smallest a backend of this major accepts. */
#define ATTNCHECK_PROBLEM_SIZE_2_0 (offsetof(attncheck_problem, mask_shape) + 4 * sizeof(int64_t))
/*! \brief Size of attncheck_problem in ABI 2.3 (alibi, has_sinks). */
#define ATTNCHECK_PROBLEM_SIZE_2_3 (offsetof(attncheck_problem, has_sinks) + sizeof(int32_t))
/*! \brief Size of attncheck_problem in ABI 2.4 (kv_storage, page_size). */
#define ATTNCHECK_PROBLEM_SIZE_2_4 (offsetof(attncheck_problem, page_size) + sizeof(int64_t))
/*! \brief Size of attncheck_problem in ABI 2.5 (varlen). */
#define ATTNCHECK_PROBLEM_SIZE_2_5 (offsetof(attncheck_problem, varlen) + sizeof(int32_t))
/*! \brief Size of attncheck_problem in ABI 2.6 (descale). */
#define ATTNCHECK_PROBLEM_SIZE_2_6 (offsetof(attncheck_problem, descale) + sizeof(int32_t))

/*!
 * \brief attncheck_problem as ABI 2.0 laid it out, frozen: the copy attncheck_layer_problem embeds.
 * A struct embedded by value cannot grow without moving the fields after it, so the layer keeps
 * this layout in every 2.x and its problem carries no option added after 2.0 (no ALiBi, no
 * sinks). The fields are attncheck_problem's first ones, with the same meaning; struct_size is
 * ATTNCHECK_PROBLEM_SIZE_2_0. attncheck_layer_core() turns it into an attncheck_problem.
 */
typedef struct {
  uint32_t struct_size;
  int64_t batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim;
  double scale, softcap;
  int32_t causal;
  attncheck_alignment alignment;
  int64_t diagonal_offset, window_left, window_right;
  attncheck_mask_kind mask_kind;
  int32_t has_key_lengths;
  int64_t mask_shape[4];
} attncheck_problem_2_0;

/*!
 * \brief How a backend computes, declared honestly: the tolerance model derives every bound from it
 * (the suite's numerics model, numerics/README.md §2.3). A dtype field names where a value is
 * rounded; a stage that stays in a wider type names that type. "Unit roundoff" below means the
 * dtype's 2^-p.
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
  /* ABI 2.1. A DLDataType field left zero ({0, 0, 0}, as a zero-initialised struct has it) means
   * "no such rounding": the stage keeps the precision named in its description. */
  DLDataType query_rounding;       /*!< \brief Q is rounded to this inside the kernel before Q.K^T (ggml's F16 path); zero = used as received. */
  DLDataType key_rounding;         /*!< \brief Likewise for K; zero = used as received. */
  DLDataType value_rounding;       /*!< \brief Likewise for V before P.V; zero = used as received. */
  DLDataType mask_dtype;           /*!< \brief dtype the kernel reads an additive mask in; zero = input_dtype. The suite rounds the bias to it before the reference. */
  DLDataType row_sum_dtype;        /*!< \brief Accumulator of the softmax row sum when it differs from the P.V one; zero = accumulator_dtype. */
  int32_t keys_per_partial_sum;    /*!< \brief Blocked accumulation: keys summed into a partial sum before it is added to the running total; 0 = one running sum. */
  int32_t kv_splits;               /*!< \brief Split-KV: the keys are cut into this many parts whose partial softmaxes are merged; 0 or 1 = no split. */
  attncheck_empty_row_lse empty_row_lse; /*!< \brief lse of a row with no allowed key; absent = kAttncheckEmptyRowLseNegInf. */
  int32_t masked_keys_weighted_by_zero;  /*!< \brief Nonzero: masked keys enter the sums with weight 0, so NaN or Inf in masked K/V propagates (PyTorch's math path). The suite then poisons masked keys with finite values only. */
} attncheck_numerics_profile;

/*! \brief Size of attncheck_numerics_profile in ABI 2.0: the smallest a suite of this major accepts. */
#define ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0 (offsetof(attncheck_numerics_profile, tanh_relative_error) + sizeof(double))

/*! \brief The copy behind the attncheck_write_*profile functions: at most `capacity` bytes of *full
 * (`size_if_zero` when capacity is 0, as a suite of the struct's first version leaves it); returns
 * the bytes written. */
static inline uint32_t attncheck_write_sized_(void* out, uint32_t capacity, size_t size_if_zero, const void* full,
                                              size_t full_size) {
  size_t n = capacity == 0 ? size_if_zero : (size_t)capacity;
  const unsigned char* from = (const unsigned char*)full;
  unsigned char* to = (unsigned char*)out;
  size_t i;
  if (n > full_size) n = full_size;
  for (i = 0; i < n; ++i) to[i] = from[i];
  return (uint32_t)n;
}

/*!
 * \brief Writes *full into the profile buffer the suite passed to get_profile or get_problem_profile,
 * no more bytes than that buffer holds, and sets its struct_size to the bytes written.
 *
 * The profile is the one struct a backend writes into memory the suite owns, so its size is
 * negotiated (ABI 2.1): on entry, out->struct_size is the size of the suite's buffer; 0, as a
 * 2.0 suite leaves its zero-initialised buffer, means ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0. A
 * backend built against a later minor must not write past it (`*out = profile` would); this
 * function is how to write it.
 */
static inline void attncheck_write_profile(attncheck_numerics_profile* out, const attncheck_numerics_profile* full) {
  out->struct_size = attncheck_write_sized_(out, out->struct_size, ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0, full, sizeof *full);
}

/*!
 * \brief Tensors of one forward call, all in the memory the table's device names. Inputs are
 * read-only; a backend that writes them is caught.
 */
typedef struct {
  uint32_t struct_size;        /*!< \brief sizeof(attncheck_attention_tensors) as compiled by the suite. */
  void* stream;                /*!< \brief Where the call's device work is ordered (see "Memory" above); NULL on the CPU. */
  const DLTensor* q;           /*!< \brief [B, Hq, Lq, Dk]. */
  const DLTensor* k;           /*!< \brief [B, Hkv, Lk, Dk]; a paged problem's page pool (attncheck_problem, ABI 2.4). */
  const DLTensor* v;           /*!< \brief [B, Hkv, Lk, Dv]; likewise. */
  const DLTensor* mask;        /*!< \brief mask_shape; uint8 (boolean) or input dtype (additive); NULL when mask_kind is none. */
  const DLTensor* key_lengths; /*!< \brief [B] int64; NULL unless has_key_lengths. */
  DLTensor* out;               /*!< \brief [B, Hq, Lq, Dv] in output_dtype; written entirely. */
  DLTensor* lse;               /*!< \brief [B, Hq, Lq] float32, natural log; NULL when not wanted. */
  /* ABI 2.3 */
  const DLTensor* alibi_slopes; /*!< \brief [Hq] or [B, Hq] float32 (problem.alibi); NULL without ALiBi. */
  const DLTensor* sinks;        /*!< \brief [Hq] float32 (problem.has_sinks); NULL without sinks. */
  /* ABI 2.4 */
  const DLTensor* block_table;  /*!< \brief [B, Lk / page_size] int32 (a paged problem); NULL for contiguous K and V. */
  /* ABI 2.5: a packed batch (problem.varlen), whose q, k, v, out and lse are packed (attncheck_problem). */
  const DLTensor* cu_seqlens_q; /*!< \brief [B + 1] int32 query offsets; NULL unless varlen. */
  const DLTensor* cu_seqlens_k; /*!< \brief [B + 1] int32 key offsets; NULL unless varlen. */
  /* ABI 2.6: fp8 inputs (problem.descale), float32 [1] or [B, Hkv]; NULL without descales. */
  const DLTensor* q_descale;
  const DLTensor* k_descale;
  const DLTensor* v_descale;
} attncheck_attention_tensors;

#define ATTNCHECK_ATTENTION_TENSORS_SIZE_2_0 (offsetof(attncheck_attention_tensors, lse) + sizeof(DLTensor*))

/*!
 * \brief ABI 2.2: how a backend's backward pass computes, declared as the forward's profile is
 * (numerics/README.md §10). The gradients of O = softmax(S) V, S the final scores, with
 * P recomputed from the scores and the saved lse (FlashAttention-2):
 *   dV = P^T dO,  dP = dO V^T,  D_i = sum_j dO_ij O_ij,  dS = P o (dP - D) (+ P o dlse),
 *   through softcap to the raw score, dQ = scale dS_raw K,  dK = scale dS_raw^T Q;
 * GQA sums dK and dV over the Hq/Hkv query heads of a group. A DLDataType field left zero means
 * float32; the backward profile's size is negotiated as the forward's is
 * (attncheck_write_backward_profile).
 */
typedef struct {
  uint32_t struct_size;           /*!< \brief sizeof(attncheck_backward_profile) as compiled by the backend. */
  DLDataType gradient_dtype;      /*!< \brief dq, dk, dv (and dbias) as written; zero = the input dtype. */
  DLDataType probability_dtype;   /*!< \brief P as recomputed and stored for dV = P^T dO. */
  DLDataType dp_dtype;            /*!< \brief Where dP = dO V^T is accumulated and kept. */
  DLDataType ds_dtype;            /*!< \brief dS as stored for the dQ and dK products. */
  DLDataType accumulator_dtype;   /*!< \brief Where dQ, dK and dV accumulate across tiles. */
  DLDataType group_sum_dtype;     /*!< \brief GQA: where the per-query-head dK, dV of a group are summed; zero = accumulator_dtype. */
  int32_t query_block;            /*!< \brief Query rows per tile: dK and dV add ceil(Lq / query_block) tile sums; 0 = one running sum. */
  int32_t key_block;              /*!< \brief Keys per tile: dQ adds ceil(Lk / key_block) tile sums; 0 = one running sum. */
  int32_t recomputes_from_lse;    /*!< \brief Nonzero: P = exp(s - lse) from the saved lse; zero: the row max and sum are recomputed. */
  int32_t dq_atomic;              /*!< \brief Nonzero: dQ's tile sums are added by atomics, in no fixed order. */
  int32_t deterministic;          /*!< \brief Nonzero: repeated calls are bitwise equal. */
  int32_t accepts_dlse;           /*!< \brief Nonzero: backward adds the dlse term when dlse is given; zero: dlse must be NULL. */
  int32_t writes_dbias;           /*!< \brief Nonzero: backward fills dbias (an additive mask's gradient) when it is given. */
} attncheck_backward_profile;

/*! \brief Size of attncheck_backward_profile in ABI 2.2, its first version. */
#define ATTNCHECK_BACKWARD_PROFILE_SIZE_2_2 (offsetof(attncheck_backward_profile, writes_dbias) + sizeof(int32_t))

/*!
 * \brief Writes *full into the backward profile buffer the suite passed, as
 * attncheck_write_profile does for the forward's: no more bytes than out->struct_size says it
 * holds (0 means ATTNCHECK_BACKWARD_PROFILE_SIZE_2_2), struct_size set to the bytes written.
 */
static inline void attncheck_write_backward_profile(attncheck_backward_profile* out, const attncheck_backward_profile* full) {
  out->struct_size =
      attncheck_write_sized_(out, out->struct_size, ATTNCHECK_BACKWARD_PROFILE_SIZE_2_2, full, sizeof *full);
}

/*!
 * \brief Tensors of one backward call (ABI 2.2), in the memory the table's device names. The
 * inputs are those of the forward call, its outputs and the output gradients; all read-only.
 * out and lse are the forward's O and lse for these inputs: the suite hands over the exact ones
 * rounded to output_dtype and float32, so that the backward is judged apart from the forward's
 * own error (numerics/README.md §10); a backward pass must not assume they are bitwise its own
 * forward's.
 */
typedef struct {
  uint32_t struct_size;        /*!< \brief sizeof(attncheck_backward_tensors) as compiled by the suite. */
  void* stream;                /*!< \brief As in attncheck_attention_tensors. */
  const DLTensor* q;           /*!< \brief [B, Hq, Lq, Dk]. */
  const DLTensor* k;           /*!< \brief [B, Hkv, Lk, Dk]. */
  const DLTensor* v;           /*!< \brief [B, Hkv, Lk, Dv]. */
  const DLTensor* mask;        /*!< \brief As in attncheck_attention_tensors. */
  const DLTensor* key_lengths; /*!< \brief As in attncheck_attention_tensors. */
  const DLTensor* out;         /*!< \brief [B, Hq, Lq, Dv] in output_dtype: the forward's O. */
  const DLTensor* lse;         /*!< \brief [B, Hq, Lq] float32: the forward's lse. */
  const DLTensor* dout;        /*!< \brief [B, Hq, Lq, Dv] in the input dtype: dL/dO. */
  const DLTensor* dlse;        /*!< \brief [B, Hq, Lq] float32: dL/dlse, or NULL (zero). */
  DLTensor* dq;                /*!< \brief [B, Hq, Lq, Dk] in gradient_dtype; written entirely. */
  DLTensor* dk;                /*!< \brief [B, Hkv, Lk, Dk]; written entirely (0 at keys no query may see). */
  DLTensor* dv;                /*!< \brief [B, Hkv, Lk, Dv]; written entirely. */
  DLTensor* dbias;             /*!< \brief mask_shape in gradient_dtype, summed over the mask's broadcast axes; NULL when not wanted. */
  /* ABI 2.3: as in attncheck_attention_tensors. With sinks, lse includes e^{sinks[h]}, so
   * P = exp(s - lse) is already the sink-aware softmax; no gradient flows to the sinks here. */
  const DLTensor* alibi_slopes; /*!< \brief As in attncheck_attention_tensors. */
  const DLTensor* sinks;        /*!< \brief As in attncheck_attention_tensors. */
} attncheck_backward_tensors;

#define ATTNCHECK_BACKWARD_TENSORS_SIZE_2_2 (offsetof(attncheck_backward_tensors, dbias) + sizeof(DLTensor*))

/*!
 * \brief The multi-head attention layer: out = concat_h(attention(X W_Q^(h) + b_Q^(h),
 * X_kv W_K^(g) + b_K^(g), X_kv W_V^(g) + b_V^(g))) W_O + b_O, with g = h / (Hq / Hkv).
 * attention.q_len is the length of X, attention.k_len that of X_kv (= X for self-attention).
 */
typedef struct {
  uint32_t struct_size;        /*!< \brief sizeof(attncheck_layer_problem) as compiled by the suite. */
  attncheck_problem_2_0 attention; /*!< \brief The core problem (Dk, Dv, heads, masks, causal...) in the frozen 2.0 layout (attncheck_layer_core). */
  int64_t model_dim;           /*!< \brief d_model >= 1. */
  int32_t self_attention;      /*!< \brief Nonzero: keys and values are projected from x (x_kv is NULL). */
  int32_t has_qkv_bias;        /*!< \brief Nonzero: b_q, b_k, b_v are given. */
  int32_t has_out_bias;        /*!< \brief Nonzero: b_o is given. */
} attncheck_layer_problem;

#define ATTNCHECK_LAYER_PROBLEM_SIZE_2_0 (offsetof(attncheck_layer_problem, has_out_bias) + sizeof(int32_t))

/*! \brief The layer's core problem as an attncheck_problem: its 2.0 fields, every later one at its
 * documented default (absent), struct_size ATTNCHECK_PROBLEM_SIZE_2_0. */
static inline attncheck_problem attncheck_layer_core(const attncheck_layer_problem* layer) {
  attncheck_problem core;
  const unsigned char* from = (const unsigned char*)&layer->attention;
  unsigned char* to = (unsigned char*)&core;
  size_t i;
  for (i = 0; i < sizeof core; ++i) to[i] = 0;
  for (i = 0; i < ATTNCHECK_PROBLEM_SIZE_2_0; ++i) to[i] = from[i];
  core.struct_size = (uint32_t)ATTNCHECK_PROBLEM_SIZE_2_0;
  return core;
}

/*! \brief Tensors of one layer call, in the table's device memory. Shapes are logical; any strides. */
typedef struct {
  uint32_t struct_size;        /*!< \brief sizeof(attncheck_layer_tensors) as compiled by the suite. */
  void* stream;                /*!< \brief As in attncheck_attention_tensors. */
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

#define ATTNCHECK_LAYER_TENSORS_SIZE_2_0 (offsetof(attncheck_layer_tensors, out) + sizeof(DLTensor*))

/*!
 * \brief What stream points to for kAttncheckSimulatedDevice. A simulated kernel that faults
 * asynchronously (as a CUDA kernel's illegal address surfaces only at the next synchronization)
 * records it here instead of failing the call; the suite reads it when it synchronizes and fails
 * the call with the message. The error is sticky for that stream, as a CUDA context's is.
 */
typedef struct {
  uint32_t struct_size;  /*!< \brief sizeof(attncheck_simulated_stream) as compiled by the suite. */
  int32_t error;         /*!< \brief Nonzero once a fault was recorded; never reset by the suite. */
  char message[256];     /*!< \brief NUL-terminated description of the first fault. */
} attncheck_simulated_stream;

typedef struct attncheck_backend attncheck_backend;

/*! \brief The table a backend library hands out. All function pointers are required unless marked optional. */
struct attncheck_backend {
  attncheck_abi_version abi_version; /*!< \brief Frozen first field: the loader reads it before anything else. */
  uint32_t struct_size;              /*!< \brief sizeof(attncheck_backend) as compiled by the backend. */
  const char* name;                  /*!< \brief Short stable name, e.g. "cpu-flash"; owned by the backend. */
  const char* description;           /*!< \brief One line for listings; owned by the backend; may be NULL. */
  void* context;                     /*!< \brief The backend's own state; the suite never touches it. */
  DLDevice device;                   /*!< \brief Where every tensor of a call must live (see "Memory" above); device_id selects the GPU. */

  /*! \brief Fills *profile for inputs of input_dtype; kAttncheckNotSupported if that dtype is not handled. */
  attncheck_status (*get_profile)(const attncheck_backend* self, DLDataType input_dtype,
                                  attncheck_numerics_profile* profile);
  /*!
   * \brief kAttncheckOk if forward would compute this problem for inputs of input_dtype in memory
   * of device_type (the suite passes the table's device); otherwise kAttncheckNotSupported (or kAttncheckInvalidProblem) with a
   * NUL-terminated reason written to reason[0 .. reason_size) (reason may be NULL when reason_size is 0).
   */
  attncheck_status (*supports)(const attncheck_backend* self, const attncheck_problem* problem,
                               DLDataType input_dtype, DLDeviceType device_type, char* reason, size_t reason_size);
  /*!
   * \brief Computes out (and lse if non-NULL) for the problem. Must not write its inputs. A
   * kAttncheckNotSupported status here is a skip, like a decline from supports(), never a failure.
   */
  attncheck_status (*forward)(attncheck_backend* self, const attncheck_problem* problem,
                              const attncheck_attention_tensors* tensors);
  /*! \brief Optional (NULL when the backend implements only the core): the whole layer. */
  attncheck_status (*forward_layer)(attncheck_backend* self, const attncheck_layer_problem* problem,
                                    const attncheck_layer_tensors* tensors);
  /*! \brief Message of the last non-OK status of this instance; never NULL; valid until the next call. */
  const char* (*last_error)(const attncheck_backend* self);
  /*! \brief Releases the table and everything it owns. self is invalid afterwards. */
  void (*destroy)(attncheck_backend* self);
  /*!
   * \brief Optional, ABI 2.1 (NULL or absent: get_profile for every problem). The profile of the
   * code path forward takes for this problem, for a kernel whose arithmetic depends on the shape
   * (a tiled path above some length, split-KV for long decodes). Same contract as get_profile;
   * called in the parent process under isolation, so it must not initialise a device either.
   */
  attncheck_status (*get_problem_profile)(const attncheck_backend* self, const attncheck_problem* problem,
                                          DLDataType input_dtype, attncheck_numerics_profile* profile);
  /*!
   * \brief Optional, ABI 2.2 (NULL or absent: no backward pass). The backward profile for this
   * problem and input dtype; kAttncheckNotSupported if backward does not handle them. Called in
   * the parent process under isolation, like get_problem_profile.
   */
  attncheck_status (*get_backward_profile)(const attncheck_backend* self, const attncheck_problem* problem,
                                           DLDataType input_dtype, attncheck_backward_profile* profile);
  /*!
   * \brief Optional, ABI 2.2, set together with get_backward_profile: computes dq, dk, dv (and
   * dbias when given) for the problem. Must not write its inputs. kAttncheckNotSupported is a skip.
   */
  attncheck_status (*backward)(attncheck_backend* self, const attncheck_problem* problem,
                               const attncheck_backward_tensors* tensors);
  /*!
   * \brief ABI 2.3: the optional problem options (kAttncheckOption* bits) forward, and backward if
   * set, implement. Absent or 0: none; the suite never sends a problem using an undeclared one.
   */
  uint32_t problem_options;
};

/*! \brief Size of attncheck_backend in ABI 2.0: the smallest table the loader accepts. */
#define ATTNCHECK_BACKEND_SIZE_2_0 (offsetof(attncheck_backend, destroy) + sizeof(void (*)(attncheck_backend*)))

/*! \brief Type of the one symbol a plug-in library exports: returns a new table owned by the caller (destroy() frees it), or NULL. */
typedef attncheck_backend* (*attncheck_backend_entry_fn)(void);

/*! \brief Name of the exported entry symbol. */
#define ATTNCHECK_BACKEND_ENTRY_SYMBOL "attncheck_backend_entry"

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* ATTNCHECK_BACKEND_H_ */
