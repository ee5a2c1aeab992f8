/// \file device_common.h
/// \brief What the device backends (cuda-naive, cuda-flash, cuda-cublas) share: the device check
/// that turns "no GPU" into a decline in CUDA's own words, CUDA error checks with context, and
/// stream-ordered scratch memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "kernel_backend.h"

namespace attncheck::cuda {

/// Throws impl::unsupported("no CUDA device: <cudaGetErrorString>") unless a device is usable.
void require_cuda_device();
/// Dynamic shared memory a block may opt in to on the current device.
std::size_t cuda_shared_memory_optin();
/// Throws AbiError(kAttncheckInternalError, "<what>: <cudaGetErrorName> (<cudaGetErrorString>)")
/// unless ok.
void check_cuda(cudaError_t status, const char* what);
/// Checks the launch of `kernel` just made. It does not wait for the kernel: the suite
/// synchronizes the call's stream, and reports what the kernel hits while running.
void check_launch(const char* kernel);

/// Bytes allocated and freed in the order of `stream`: the free is queued behind every kernel
/// the call enqueued on that stream, so no work still in flight loses its memory.
class StreamBuffer {
 public:
  StreamBuffer() = default;
  StreamBuffer(std::size_t bytes, cudaStream_t stream, const char* what);
  StreamBuffer(StreamBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), stream_(other.stream_) {}
  StreamBuffer& operator=(StreamBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(stream_, other.stream_);
    return *this;
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  ~StreamBuffer();
  void* get() const { return data_; }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

/// KernelBackend for CUDA memory: available only with a device; shared memory as the device allows.
class DeviceKernelBackend final : public KernelBackend {
 public:
  DeviceKernelBackend(const KernelConfig& config, KernelLaunch launch, KernelBackwardLaunch backward_launch = nullptr)
      : KernelBackend({kDLCUDA, 0}, config, launch, backward_launch) {}

 protected:
  void check_available() const override { require_cuda_device(); }
  std::size_t shared_memory_limit() const override { return cuda_shared_memory_optin(); }
};

}  // namespace attncheck::cuda
