// cuda-naive@host: naive_attention.cuh compiled as host C++ and run by host_emulation.h.
#include <memory>

#include "attncheck/cuda/cuda_backends.h"
#include "host_launch.h"
#include "naive_attention.cuh"

namespace attncheck::cuda {
namespace {

namespace emu = attncheck::cuda_emulation;

class NaiveHostBackend final : public KernelBackend {
 public:
  NaiveHostBackend() : KernelBackend(kNaiveHostConfig) {}

 protected:
  std::size_t shared_memory_limit() const override { return kHostSharedMemoryLimit; }
  void launch(const AttentionParams& p, ElementType type) override {
    if (type != ElementType::F32) throw BackendFailure(kAttncheckNotSupported, "f32 inputs only");
    const auto threads = static_cast<unsigned>(config().threads);
    const emu::dim3 grid(static_cast<unsigned>((p.q_len + threads - 1) / threads), static_cast<unsigned>(p.q_heads),
                         static_cast<unsigned>(p.batch));
    emu::launch(grid, emu::dim3(threads), 0, &naive_attention_kernel<float>, p);
  }
};

}  // namespace
}  // namespace attncheck::cuda

extern "C" attncheck_backend* attncheck_cuda_naive_host_entry(void) {
  try {
    return attncheck::cuda::make_table(
        "cuda-naive@host", "cuda-naive's kernel (one thread per row, online softmax) run on the host by emulation",
        std::make_unique<attncheck::cuda::NaiveHostBackend>());
  } catch (...) {
    return nullptr;
  }
}
