// cuda-flash@host: flash_attention.cuh compiled as host C++ and run by host_emulation.h.
#include <memory>

#include "attncheck/cuda/cuda_backends.h"
#include "flash_attention.cuh"
#include "host_launch.h"

namespace attncheck::cuda {
namespace {

namespace emu = attncheck::cuda_emulation;

class FlashHostBackend final : public KernelBackend {
 public:
  FlashHostBackend() : KernelBackend(kFlashHostConfig) {}

 protected:
  std::size_t shared_memory_limit() const override { return kHostSharedMemoryLimit; }
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
    const emu::dim3 grid(static_cast<unsigned>((p.q_len + c.tile_rows - 1) / c.tile_rows),
                         static_cast<unsigned>(p.q_heads), static_cast<unsigned>(p.batch));
    emu::launch(grid, emu::dim3(static_cast<unsigned>(c.threads)),
                flash_shared_bytes(p.qk_dim, p.v_dim, c.tile_rows, c.tile_keys), &flash_attention_kernel<T>, p,
                c.tile_rows, c.tile_keys);
  }
};

}  // namespace
}  // namespace attncheck::cuda

extern "C" attncheck_backend* attncheck_cuda_flash_host_entry(void) {
  try {
    return attncheck::cuda::make_table(
        "cuda-flash@host",
        "cuda-flash's kernel (query tile per block, K/V tiles in shared memory, online softmax) run on the host by "
        "emulation",
        std::make_unique<attncheck::cuda::FlashHostBackend>());
  } catch (...) {
    return nullptr;
  }
}
