// CUDA memory for the suite: device, host-pinned and managed allocations, copies and the stream
// a call runs on. Compiled only when CUDA is built; the runtime is first touched here, in the
// process that runs the call.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "attncheck/backend_handle.h"
#include "attncheck/memory_domain.h"

namespace attncheck {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw BackendError(kAttncheckInternalError, fmt::format("{}: {} ({})", what, cudaGetErrorString(status), cudaGetErrorName(status)));
}

class CudaDomain final : public MemoryDomain {
 public:
  explicit CudaDomain(DLDevice device) : device_(device) {
    int count = 0;
    if (const cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess || count == 0)
      throw BackendError(kAttncheckNotSupported,
                         fmt::format("no CUDA device: {}", cudaGetErrorString(status != cudaSuccess ? status : cudaErrorNoDevice)));
    if (device.device_id < 0 || device.device_id >= count)
      throw BackendError(kAttncheckNotSupported,
                         fmt::format("the backend asks for CUDA device {}, but {} device(s) are visible", device.device_id, count));
    check(cudaSetDevice(device.device_id), "cudaSetDevice");
    // Non-blocking: work a backend leaves on the legacy default stream is not ordered with this
    // one, exactly as in an application that hands the kernel its own stream.
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~CudaDomain() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  DLDevice device() const override { return device_; }
  void* allocate(std::size_t bytes) override {
    void* p = nullptr;
    const std::size_t size = std::max<std::size_t>(bytes, 1);
    switch (static_cast<int>(device_.device_type)) {
      case kDLCUDAHost: check(cudaHostAlloc(&p, size, cudaHostAllocPortable), "cudaHostAlloc"); break;
      case kDLCUDAManaged: check(cudaMallocManaged(&p, size), "cudaMallocManaged"); break;
      default: check(cudaMalloc(&p, size), "cudaMalloc"); break;
    }
    return p;
  }
  void release(void* pointer) noexcept override {
    if (device_.device_type == kDLCUDAHost)
      cudaFreeHost(pointer);
    else
      cudaFree(pointer);
  }
  void copy_in(void* destination, const void* source, std::size_t bytes) override {
    check(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDefault, stream_), "cudaMemcpy to the device");
    check(cudaStreamSynchronize(stream_), "cudaMemcpy to the device");
  }
  void copy_out(void* destination, const void* source, std::size_t bytes) override {
    check(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDefault, stream_), "cudaMemcpy from the device");
    check(cudaStreamSynchronize(stream_), "cudaMemcpy from the device");
  }
  void* stream() override { return stream_; }
  std::optional<std::string> synchronize() override {
    cudaError_t status = cudaStreamSynchronize(stream_);
    if (status == cudaSuccess) status = cudaGetLastError();
    if (status == cudaSuccess) return std::nullopt;
    return fmt::format("{} ({})", cudaGetErrorString(status), cudaGetErrorName(status));
  }

 private:
  DLDevice device_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<MemoryDomain> make_cuda_memory_domain(DLDevice device) { return std::make_unique<CudaDomain>(device); }

}  // namespace attncheck
