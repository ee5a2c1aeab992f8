// cuda-cublas: S = Q·Kᵀ and O = P·V as cublasGemmStridedBatchedEx calls, with a mask-and-softmax
// kernel between them (three-pass softmax: max, sum, normalize) and a small epilogue.
//
// GQA through strides: for batch b and member r of a kv group (query heads h = g·G + r,
// G = Hq / Hkv), the query heads of consecutive groups are G head-strides apart while their kv
// heads are one head-stride apart, so one strided-batched GEMM over g = 0 .. Hkv−1 covers them.
// That is B·G calls per GEMM, whatever the layout ([B, H, L, D] or [B, L, H, D]).
//
// cuBLAS is column-major: a row-major [rows, cols] matrix with row stride ld is its transpose with
// leading dimension ld. Hence S (row-major [Lq, Lk]) is computed as Sᵀ = K·Qᵀ (K transposed), and
// O (row-major [Lq, Dv]) as Oᵀ = Vᵀ·Pᵀ.
#include <cublas_v2.h>

#include <climits>
#include <string>
#include <type_traits>

#include "attention_common.cuh"
#include "attncheck/cuda/cuda_backends.h"
#include "device_common.h"

ATTNCHECK_KERNEL_NAMESPACE_BEGIN

inline constexpr int kSoftmaxThreads = 128;

template <bool kMax>
__device__ float block_reduce(float value, float* buffer) {
  const unsigned t = threadIdx.x;
  buffer[t] = value;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) buffer[t] = kMax ? fmaxf(buffer[t], buffer[t + stride]) : buffer[t] + buffer[t + stride];
    __syncthreads();
  }
  const float result = buffer[0];
  __syncthreads();  // buffer is reused by the next reduction
  return result;
}

// One block per query row (grid Lq, Hq, B). `scores` holds scale-free Q·Kᵀ dots [B, Hq, Lq, Lk];
// they become final scores (masked keys −inf by assignment), then P = e^{s−m}/l in `probs` (which
// may alias `scores` when P is fp32: each key is read and written by the same thread).
template <class T, class P>
__global__ void mask_softmax_kernel(AttentionParams p, float* scores, P* probs, unsigned char* empty_rows) {
  ATTNCHECK_SHARED_ARRAY(float, buffer, kSoftmaxThreads);
  const std::int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const std::int64_t row = (b * p.q_heads + h) * p.q_len + i;
  float* const s = scores + row * p.k_len;
  P* const out = probs + row * p.k_len;
  const KeyRange range = row_key_range(p, i, key_length_of(p, b));

  float m = negative_infinity();
  for (std::int64_t j = threadIdx.x; j < p.k_len; j += blockDim.x) {
    const float score = j >= range.first && j < range.last ? final_score<T>(p, s[j], b, h, i, j) : negative_infinity();
    s[j] = score;
    m = fmaxf(m, score);
  }
  m = block_reduce<true>(m, buffer);
  // An empty row has m = −inf: every weight is set to 0 without forming −inf − (−inf).
  float l = 0.0f;
  for (std::int64_t j = threadIdx.x; j < p.k_len; j += blockDim.x) {
    const float weight = s[j] == negative_infinity() ? 0.0f : expf(s[j] - m);
    s[j] = weight;
    l += weight;
  }
  l = block_reduce<false>(l, buffer);
  for (std::int64_t j = threadIdx.x; j < p.k_len; j += blockDim.x) {
    const float weight = s[j];
    out[j] = from_float<P>(l == 0.0f ? 0.0f : weight / l);
  }
  if (threadIdx.x == 0) {
    write_lse(p, b, h, i, m, l);
    empty_rows[row] = l == 0.0f;
  }
}

// V copied to a compact [B, Hkv, Lk, Dv] buffer with non-finite values replaced by 0, counting
// them: the P·V GEMM would otherwise turn 0·NaN at a masked key into a NaN output.
template <class T>
__global__ void sanitize_values_kernel(AttentionParams p, T* values, unsigned* nonfinite) {
  const std::int64_t n = p.batch * p.kv_heads * p.k_len * p.v_dim;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t d = e % p.v_dim, j = (e / p.v_dim) % p.k_len, g = (e / (p.v_dim * p.k_len)) % p.kv_heads,
                       b = e / (p.v_dim * p.k_len * p.kv_heads);
    const T x = element<T>(p.v, b, g, j, d);
    const bool finite = isfinite(to_float(x));
    values[e] = finite ? x : from_float<T>(0.0f);
    if (!finite) atomicAdd(nonfinite, 1u);
  }
}

// Rows with no allowed key get +0 (the GEMM could leave −0 from 0·negative V); where V held
// non-finite values (*nonfinite, counted on the device, so the host never waits for it), keys
// with a nonzero weight add them back, as the reference does.
template <class T, class P>
__global__ void epilogue_kernel(AttentionParams p, const P* probs, const unsigned char* empty_rows,
                                const unsigned* nonfinite) {
  const bool nonfinite_v = *nonfinite != 0;
  const std::int64_t n = p.batch * p.q_heads * p.q_len * p.v_dim;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t d = e % p.v_dim, row = e / p.v_dim, i = row % p.q_len, h = (row / p.q_len) % p.q_heads,
                       b = row / (p.q_len * p.q_heads);
    T& out = mutable_element<T>(p.out, b, h, i, d);
    if (empty_rows[row]) {
      out = from_float<T>(0.0f);
      continue;
    }
    if (!nonfinite_v) continue;
    float extra = 0.0f;
    bool any = false;
    for (std::int64_t j = 0; j < p.k_len; ++j) {
      const float weight = to_float(probs[row * p.k_len + j]);
      if (weight == 0.0f) continue;
      const float x = to_float(element<T>(p.v, b, h / p.group, j, d));
      if (!isfinite(x)) {
        extra += weight * x;
        any = true;
      }
    }
    if (any) out = from_float<T>(to_float(out) + extra);
  }
}

ATTNCHECK_KERNEL_NAMESPACE_END


namespace attncheck::cuda {
namespace {

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw impl::AbiError(kAttncheckInternalError, std::string(what) + ": " + cublasGetStatusName(status) + " (" +
                                                      cublasGetStatusString(status) + ")");
}

cudaDataType cuda_type(ElementType type) {
  switch (type) {
    case ElementType::F32: return CUDA_R_32F;
    case ElementType::F16: return CUDA_R_16F;
    case ElementType::BF16: return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

std::size_t element_size(ElementType type) { return type == ElementType::F32 ? 4 : 2; }

// cuBLAS reads a matrix through its leading dimension: the last dim must be contiguous and the
// row stride at least the row length (a single row may have any row stride).
void require_gemm_layout(const char* name, const StridedTensor& t, std::int64_t rows, std::int64_t cols) {
  if (t.stride[3] != 1)
    impl::unsupported(std::string(name) + ": cuBLAS needs a contiguous last dim (stride " +
                      std::to_string(t.stride[3]) + ")");
  if (rows > 1 && (t.stride[2] < cols || t.stride[2] > INT_MAX))
    impl::unsupported(std::string(name) + ": row stride " + std::to_string(t.stride[2]) +
                      " is not a valid cuBLAS leading dimension (>= " + std::to_string(cols) + ")");
  if (t.stride[0] < 0 || t.stride[1] < 0) impl::unsupported(std::string(name) + ": negative strides are not supported");
}

int leading_dim(const StridedTensor& t, std::int64_t rows, std::int64_t cols) {
  return static_cast<int>(rows > 1 ? t.stride[2] : cols);
}

class CublasBackend final : public CudaBackend {
 public:
  CublasBackend() : CudaBackend({kDLCUDA, 0}, {ElementType::F32, ElementType::F16, ElementType::BF16}) {}
  ~CublasBackend() override {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }

 protected:
  ProfileTraits traits(ElementType input) const override {
    const bool half = input != ElementType::F32;
    ProfileTraits traits;
    // P is stored in the input dtype for the P·V GEMM (both GEMM operands share a type); fp16 and
    // bf16 GEMMs run on tensor cores, whose fp32 accumulation truncates. fp32 uses the pedantic
    // compute type: plain fp32 FMA, no TF32.
    traits.probability_rounded_to_input = half;
    traits.accumulation = half ? kAttncheckRoundTowardZero : kAttncheckRoundNearest;
    traits.softmax_block = 0;     // three-pass softmax
    traits.deterministic = true;  // one stream, fixed GEMM configuration
    return traits;
  }

  void check_available() const override { require_cuda_device(); }

  void check_limits(const attncheck_problem& p) const override {
    if (p.q_len > INT_MAX || p.k_len > INT_MAX || p.qk_dim > INT_MAX || p.v_dim > INT_MAX)
      impl::unsupported("cuBLAS takes matrix dims as int");
    if (p.batch * p.q_heads * p.q_len * p.k_len > (std::int64_t{1} << 31))
      impl::unsupported("the score matrix B·Hq·Lq·Lk exceeds 2^31 elements");
  }

  void run(const AttentionParams& p, ElementType type, void* stream) override {
    require_gemm_layout("q", p.q, p.q_len, p.qk_dim);
    require_gemm_layout("k", p.k, p.k_len, p.qk_dim);
    require_gemm_layout("out", p.out, p.q_len, p.v_dim);
    if (handle_ == nullptr) check_cublas(cublasCreate(&handle_), "cublasCreate");
    const auto s = static_cast<cudaStream_t>(stream);
    // The suite may hand each call another stream: the GEMMs must be ordered with its kernels.
    check_cublas(cublasSetStream(handle_, s), "cublasSetStream");
    // P is stored in the input dtype (see traits()).
    with_element_type(type, [&](auto zero) { launch<decltype(zero), decltype(zero)>(p, type, s); });
  }

 private:
  // Everything below is enqueued on `stream`, scratch memory included: its frees are queued
  // behind the kernels that use it, so nothing waits here.
  template <class T, class P>
  void launch(const AttentionParams& p, ElementType type, cudaStream_t stream) {
    const std::int64_t rows = p.batch * p.q_heads * p.q_len, score_elements = rows * p.k_len;
    const std::int64_t value_elements = p.batch * p.kv_heads * p.k_len * p.v_dim;
    StreamBuffer scores(static_cast<std::size_t>(score_elements) * sizeof(float), stream,
                        "allocating the score matrix");
    StreamBuffer probs_storage;
    P* probs = static_cast<P*>(scores.get());  // fp32 P overwrites the scores in place
    if constexpr (!std::is_same_v<P, float>) {
      probs_storage = StreamBuffer(static_cast<std::size_t>(score_elements) * sizeof(P), stream, "allocating P");
      probs = static_cast<P*>(probs_storage.get());
    }
    StreamBuffer empty_rows(static_cast<std::size_t>(rows), stream, "allocating the empty-row flags");
    StreamBuffer values(static_cast<std::size_t>(value_elements) * sizeof(T), stream, "allocating the V copy");
    StreamBuffer counter(sizeof(unsigned), stream, "allocating a counter");
    check_cuda(cudaMemsetAsync(counter.get(), 0, sizeof(unsigned), stream), "clearing a counter");

    const unsigned elementwise_blocks = 1024, elementwise_threads = 256;
    sanitize_values_kernel<T><<<elementwise_blocks, elementwise_threads, 0, stream>>>(
        p, static_cast<T*>(values.get()), static_cast<unsigned*>(counter.get()));
    check_launch("sanitize_values_kernel");

    const cudaDataType data_type = cuda_type(type);
    const cublasComputeType_t compute = type == ElementType::F32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    const float one = 1.0f, zero = 0.0f;
    const std::int64_t group = p.group, lq = p.q_len, lk = p.k_len;
    const auto* q_bytes = static_cast<const char*>(p.q.data);
    const auto* k_bytes = static_cast<const char*>(p.k.data);
    auto* out_bytes = static_cast<char*>(p.out.data);
    const std::size_t es = element_size(type);

    // S = Q·Kᵀ (unscaled: the softmax kernel applies scale, softcap and masks exactly as the
    // other kernels do, through final_score).
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t r = 0; r < group; ++r) {
        const void* k_ptr = k_bytes + static_cast<std::size_t>(b * p.k.stride[0]) * es;
        const void* q_ptr = q_bytes + static_cast<std::size_t>(b * p.q.stride[0] + r * p.q.stride[1]) * es;
        float* s_ptr = static_cast<float*>(scores.get()) + (b * p.q_heads + r) * lq * lk;
        check_cublas(cublasGemmStridedBatchedEx(
                         handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(lk), static_cast<int>(lq),
                         static_cast<int>(p.qk_dim), &one, k_ptr, data_type, leading_dim(p.k, lk, p.qk_dim),
                         p.k.stride[1], q_ptr, data_type, leading_dim(p.q, lq, p.qk_dim), group * p.q.stride[1],
                         &zero, s_ptr, CUDA_R_32F, static_cast<int>(lk), group * lq * lk, static_cast<int>(p.kv_heads),
                         compute, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmStridedBatchedEx (Q·Kᵀ)");
      }

    const dim3 grid(static_cast<unsigned>(lq), static_cast<unsigned>(p.q_heads), static_cast<unsigned>(p.batch));
    mask_softmax_kernel<T, P><<<grid, kSoftmaxThreads, 0, stream>>>(p, static_cast<float*>(scores.get()), probs,
                                                                    static_cast<unsigned char*>(empty_rows.get()));
    check_launch("mask_softmax_kernel");

    // O = P·V from the sanitized compact V.
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t r = 0; r < group; ++r) {
        const T* v_ptr = static_cast<const T*>(values.get()) + b * p.kv_heads * lk * p.v_dim;
        const P* p_ptr = probs + (b * p.q_heads + r) * lq * lk;
        void* o_ptr = out_bytes + static_cast<std::size_t>(b * p.out.stride[0] + r * p.out.stride[1]) * es;
        check_cublas(cublasGemmStridedBatchedEx(
                         handle_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(p.v_dim), static_cast<int>(lq),
                         static_cast<int>(lk), &one, v_ptr, data_type, static_cast<int>(p.v_dim), lk * p.v_dim, p_ptr,
                         data_type, static_cast<int>(lk), group * lq * lk, &zero, o_ptr, data_type,
                         leading_dim(p.out, lq, p.v_dim), group * p.out.stride[1], static_cast<int>(p.kv_heads),
                         compute, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmStridedBatchedEx (P·V)");
      }

    epilogue_kernel<T, P><<<elementwise_blocks, elementwise_threads, 0, stream>>>(
        p, probs, static_cast<const unsigned char*>(empty_rows.get()), static_cast<const unsigned*>(counter.get()));
    check_launch("epilogue_kernel");
  }

  cublasHandle_t handle_ = nullptr;  // created on first use: cublasCreate needs a device
};

}  // namespace

// C linkage, declared in cuda_backends.h at global scope: the same function.
extern "C" attncheck_backend* attncheck_cuda_cublas_entry(void) {
  return impl::make_backend_table<CublasBackend>(
      "cuda-cublas", "cuBLAS strided-batched GEMMs for Q·Kᵀ and P·V with a mask-and-softmax kernel between");
}

}  // namespace attncheck::cuda
