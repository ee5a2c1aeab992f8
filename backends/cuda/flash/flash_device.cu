// cuda-flash: flash_attention.cuh and flash_attention_backward.cuh on the device.
#include "attncheck/cuda/cuda_backends.h"
#include "device_common.h"
#include "flash_attention.cuh"
#include "flash_attention_backward.cuh"

namespace attncheck::cuda {
namespace {

// 128 threads per block; a tile is 32 query rows × 32 keys.
constexpr KernelConfig kConfig{
    "cuda-flash", "CUDA, query tile per block, K/V tiles in shared memory, online softmax, fp32 accumulation",
    KernelKind::Flash, 128, 32, 32};

// Above 48 KiB a kernel must opt in to more dynamic shared memory (supports() and the backward's
// limits have checked the device's).
template <class Kernel>
void allow_shared(Kernel kernel, std::size_t bytes, const char* what) {
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), what);
}

template <class T>
void launch_on(cudaStream_t stream, const KernelConfig& c, const LaunchShape& s, const AttentionParams& p) {
  allow_shared(flash_attention_kernel<T>, s.shared_bytes, "raising flash_attention_kernel's shared memory limit");
  flash_attention_kernel<T><<<dim3(s.grid_x, s.grid_y, s.grid_z), s.threads, s.shared_bytes, stream>>>(
      p, c.tile_rows, c.tile_keys);
  check_launch("flash_attention_kernel");
}

void launch_flash(const KernelConfig& c, const LaunchShape& s, const AttentionParams& p, ElementType type,
                  void* stream) {
  with_element_type(type, [&](auto zero) { launch_on<decltype(zero)>(static_cast<cudaStream_t>(stream), c, s, p); });
}

template <class T>
void launch_backward_on(cudaStream_t stream, const KernelConfig& c, const BackwardLaunchShape& s, BackwardParams p) {
  const AttentionParams& f = p.forward;
  // δ lives until the last of the three kernels on `stream` is done: its free is queued behind them.
  StreamBuffer delta(static_cast<std::size_t>(f.batch * f.q_heads * f.q_len) * sizeof(float), stream,
                     "allocating the backward's row scratch");
  p.delta = static_cast<float*>(delta.get());
  flash_backward_delta_kernel<T><<<dim3(s.delta.grid_x, s.delta.grid_y, s.delta.grid_z), s.delta.threads, 0, stream>>>(p);
  check_launch("flash_backward_delta_kernel");
  allow_shared(flash_backward_kv_kernel<T>, s.kv.shared_bytes, "raising flash_backward_kv_kernel's shared memory limit");
  flash_backward_kv_kernel<T><<<dim3(s.kv.grid_x, s.kv.grid_y, s.kv.grid_z), s.kv.threads, s.kv.shared_bytes, stream>>>(
      p, c.tile_rows, c.tile_keys);
  check_launch("flash_backward_kv_kernel");
  allow_shared(flash_backward_q_kernel<T>, s.q.shared_bytes, "raising flash_backward_q_kernel's shared memory limit");
  flash_backward_q_kernel<T><<<dim3(s.q.grid_x, s.q.grid_y, s.q.grid_z), s.q.threads, s.q.shared_bytes, stream>>>(
      p, c.tile_rows, c.tile_keys);
  check_launch("flash_backward_q_kernel");
}

void launch_flash_backward(const KernelConfig& c, const BackwardLaunchShape& s, BackwardParams p, ElementType type,
                           void* stream) {
  with_element_type(type, [&](auto zero) {
    launch_backward_on<decltype(zero)>(static_cast<cudaStream_t>(stream), c, s, p);
  });
}

}  // namespace

// C linkage, declared in cuda_backends.h at global scope: the same function.
extern "C" attncheck_backend* attncheck_cuda_flash_entry(void) {
  return impl::make_backend_table<DeviceKernelBackend>(kConfig.name, kConfig.description, kConfig, &launch_flash,
                                                       &launch_flash_backward);
}

}  // namespace attncheck::cuda
