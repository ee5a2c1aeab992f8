// cuda-flash@host: flash_attention.cuh compiled as host C++ and run by host_emulation.h.
#include "attncheck/cuda/cuda_backends.h"
#include "flash_attention.cuh"
#include "kernel_backend.h"

namespace attncheck::cuda {
namespace {

// One host thread per emulated CUDA thread keeps blocks small (32 threads); short tiles (16 × 16)
// make property tests at small sizes cross several tile boundaries.
constexpr KernelConfig kConfig{"cuda-flash@host",
                               "cuda-flash's kernel (query tile per block, K/V tiles in shared memory, online "
                               "softmax) run on the host by emulation",
                               KernelKind::Flash, 32, 16, 16};

template <class T>
void emulate(const KernelConfig& c, const LaunchShape& s, const AttentionParams& p) {
  cuda_emulation::launch(cuda_emulation::dim3(s.grid_x, s.grid_y, s.grid_z), cuda_emulation::dim3(s.threads),
                         s.shared_bytes, &flash_attention_kernel<T>, p, c.tile_rows, c.tile_keys);
}

void launch_flash(const KernelConfig& c, const LaunchShape& s, const AttentionParams& p, ElementType type, void*) {
  with_element_type(type, [&](auto zero) { emulate<decltype(zero)>(c, s, p); });
}

}  // namespace

// C linkage, declared in cuda_backends.h at global scope: the same function.
extern "C" attncheck_backend* attncheck_cuda_flash_host_entry(void) {
  return impl::make_backend_table<HostKernelBackend>(kConfig.name, kConfig.description, kConfig, &launch_flash);
}

}  // namespace attncheck::cuda
