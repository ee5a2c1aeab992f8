// cuda-flash: flash_attention.cuh on the device.
#include <memory>

#include "attncheck/cuda/cuda_backends.h"
#include "device_common.h"
#include "flash_attention.cuh"

namespace attncheck::cuda {
namespace {

class FlashDeviceBackend final : public DeviceKernelBackend {
 public:
  FlashDeviceBackend() : DeviceKernelBackend(kFlashDeviceConfig) {}

 protected:
  void launch(const AttentionParams& p, ElementType type) override {
    switch (type) {
      case ElementType::F32: return run<float>(p);
      case ElementType::F16: return run<half_t>(p);
      case ElementType::BF16: return run<bfloat16_t>(p);
    }
  }

 private:
  template <class T>
  void run(const AttentionParams& p) {
    const KernelConfig& c = config();
    const std::size_t shared = flash_shared_bytes(p.qk_dim, p.v_dim, c.tile_rows, c.tile_keys);
    // Above 48 KiB a kernel must opt in to more dynamic shared memory (supports() has checked
    // the device's limit).
    check_cuda(cudaFuncSetAttribute(flash_attention_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(shared)),
               "raising flash_attention_kernel's shared memory limit");
    const dim3 grid(static_cast<unsigned>((p.q_len + c.tile_rows - 1) / c.tile_rows),
                    static_cast<unsigned>(p.q_heads), static_cast<unsigned>(p.batch));
    flash_attention_kernel<T><<<grid, static_cast<unsigned>(c.threads), shared>>>(p, c.tile_rows, c.tile_keys);
    finish_launch("flash_attention_kernel");
  }
};

}  // namespace
}  // namespace attncheck::cuda

extern "C" attncheck_backend* attncheck_cuda_flash_entry(void) {
  try {
    return attncheck::cuda::make_table(
        "cuda-flash", "CUDA, query tile per block, K/V tiles in shared memory, online softmax, fp32 accumulation",
        std::make_unique<attncheck::cuda::FlashDeviceBackend>());
  } catch (...) {
    return nullptr;
  }
}
