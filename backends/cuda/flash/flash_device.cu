// cuda-flash: flash_attention.cuh on the device.
#include "attncheck/cuda/cuda_backends.h"
#include "device_common.h"
#include "flash_attention.cuh"

namespace attncheck::cuda {
namespace {

// 128 threads per block; a tile is 32 query rows × 32 keys.
constexpr KernelConfig kConfig{
    "cuda-flash", "CUDA, query tile per block, K/V tiles in shared memory, online softmax, fp32 accumulation",
    KernelKind::Flash, 128, 32, 32};

template <class T>
void launch_on(cudaStream_t stream, const KernelConfig& c, const LaunchShape& s, const AttentionParams& p) {
  // Above 48 KiB a kernel must opt in to more dynamic shared memory (supports() has checked the
  // device's limit).
  check_cuda(cudaFuncSetAttribute(flash_attention_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(s.shared_bytes)),
             "raising flash_attention_kernel's shared memory limit");
  flash_attention_kernel<T><<<dim3(s.grid_x, s.grid_y, s.grid_z), s.threads, s.shared_bytes, stream>>>(
      p, c.tile_rows, c.tile_keys);
  check_launch("flash_attention_kernel");
}

void launch_flash(const KernelConfig& c, const LaunchShape& s, const AttentionParams& p, ElementType type,
                  void* stream) {
  with_element_type(type, [&](auto zero) { launch_on<decltype(zero)>(static_cast<cudaStream_t>(stream), c, s, p); });
}

}  // namespace

// C linkage, declared in cuda_backends.h at global scope: the same function.
extern "C" attncheck_backend* attncheck_cuda_flash_entry(void) {
  return impl::make_backend_table<DeviceKernelBackend>(kConfig.name, kConfig.description, kConfig, &launch_flash);
}

}  // namespace attncheck::cuda
