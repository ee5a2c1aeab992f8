// cuda-flash@host: flash_attention.cuh and flash_attention_backward.cuh compiled as host C++ and run by host_emulation.h.
#include <vector>

#include "attncheck/cuda/cuda_backends.h"
#include "flash_attention.cuh"
#include "flash_attention_backward.cuh"
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

template <class T>
void emulate_backward(const KernelConfig& c, const BackwardLaunchShape& s, BackwardParams p) {
  namespace emu = cuda_emulation;
  const AttentionParams& f = p.forward;
  std::vector<float> delta(static_cast<std::size_t>(f.batch * f.q_heads * f.q_len));
  p.delta = delta.data();
  emu::launch(emu::dim3(s.delta.grid_x, s.delta.grid_y, s.delta.grid_z), emu::dim3(s.delta.threads),
              s.delta.shared_bytes, &flash_backward_delta_kernel<T>, p);
  emu::launch(emu::dim3(s.kv.grid_x, s.kv.grid_y, s.kv.grid_z), emu::dim3(s.kv.threads), s.kv.shared_bytes,
              &flash_backward_kv_kernel<T>, p, c.tile_rows, c.tile_keys);
  emu::launch(emu::dim3(s.q.grid_x, s.q.grid_y, s.q.grid_z), emu::dim3(s.q.threads), s.q.shared_bytes,
              &flash_backward_q_kernel<T>, p, c.tile_rows, c.tile_keys);
}

void launch_flash_backward(const KernelConfig& c, const BackwardLaunchShape& s, BackwardParams p, ElementType type,
                           void*) {
  with_element_type(type, [&](auto zero) { emulate_backward<decltype(zero)>(c, s, p); });
}

}  // namespace

// C linkage, declared in cuda_backends.h at global scope: the same function.
extern "C" attncheck_backend* attncheck_cuda_flash_host_entry(void) {
  return impl::make_backend_table<HostKernelBackend>(kConfig.name, kConfig.description, kConfig, &launch_flash,
                                                     &launch_flash_backward);
}

}  // namespace attncheck::cuda
