// cuda-naive: naive_attention.cuh on the device, one thread per query row.
#include "attncheck/cuda/cuda_backends.h"
#include "device_common.h"
#include "naive_attention.cuh"

namespace attncheck::cuda {
namespace {

constexpr KernelConfig kConfig{"cuda-naive", "CUDA, one thread per query row, online softmax, fp32", KernelKind::Naive,
                               128, 1, 1};

void launch_naive(const KernelConfig&, const LaunchShape& s, const AttentionParams& p, ElementType, void* stream) {
  naive_attention_kernel<float><<<dim3(s.grid_x, s.grid_y, s.grid_z), s.threads, s.shared_bytes,
                                  static_cast<cudaStream_t>(stream)>>>(p);
  check_launch("naive_attention_kernel");
}

}  // namespace

// C linkage, declared in cuda_backends.h at global scope: the same function.
extern "C" attncheck_backend* attncheck_cuda_naive_entry(void) {
  return impl::make_backend_table<DeviceKernelBackend>(kConfig.name, kConfig.description, kConfig, &launch_naive);
}

}  // namespace attncheck::cuda
