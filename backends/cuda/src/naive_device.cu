// cuda-naive: naive_attention.cuh on the device, one thread per query row.
#include <memory>

#include "attncheck/cuda/cuda_backends.h"
#include "device_common.h"
#include "naive_attention.cuh"

namespace attncheck::cuda {
namespace {

class NaiveDeviceBackend final : public DeviceKernelBackend {
 public:
  NaiveDeviceBackend() : DeviceKernelBackend(kNaiveDeviceConfig) {}

 protected:
  void launch(const AttentionParams& p, ElementType type) override {
    if (type != ElementType::F32) throw BackendFailure(kAttncheckNotSupported, "f32 inputs only");
    const auto threads = static_cast<unsigned>(config().threads);
    const dim3 grid(static_cast<unsigned>((p.q_len + threads - 1) / threads), static_cast<unsigned>(p.q_heads),
                    static_cast<unsigned>(p.batch));
    naive_attention_kernel<float><<<grid, threads>>>(p);
    finish_launch("naive_attention_kernel");
  }
};

}  // namespace
}  // namespace attncheck::cuda

extern "C" attncheck_backend* attncheck_cuda_naive_entry(void) {
  try {
    return attncheck::cuda::make_table("cuda-naive", "CUDA, one thread per query row, online softmax, fp32",
                                       std::make_unique<attncheck::cuda::NaiveDeviceBackend>());
  } catch (...) {
    return nullptr;
  }
}
