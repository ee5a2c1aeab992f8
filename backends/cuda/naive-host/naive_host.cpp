// cuda-naive@host: naive_attention.cuh compiled as host C++ and run by host_emulation.h.
#include "attncheck/cuda/cuda_backends.h"
#include "kernel_backend.h"
#include "naive_attention.cuh"

namespace attncheck::cuda {
namespace {

// One host thread per emulated CUDA thread: blocks stay small.
constexpr KernelConfig kConfig{
    "cuda-naive@host", "cuda-naive's kernel (one thread per row, online softmax) run on the host by emulation",
    KernelKind::Naive, 32, 1, 1};

void launch_naive(const KernelConfig&, const LaunchShape& s, const AttentionParams& p, ElementType, void*) {
  cuda_emulation::launch(cuda_emulation::dim3(s.grid_x, s.grid_y, s.grid_z), cuda_emulation::dim3(s.threads),
                         s.shared_bytes, &naive_attention_kernel<float>, p);
}

}  // namespace

// C linkage, declared in cuda_backends.h at global scope: the same function.
extern "C" attncheck_backend* attncheck_cuda_naive_host_entry(void) {
  return impl::make_backend_table<HostKernelBackend>(kConfig.name, kConfig.description, kConfig, &launch_naive);
}

}  // namespace attncheck::cuda
