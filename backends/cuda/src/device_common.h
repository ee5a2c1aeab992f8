/// \file device_common.h
/// \brief What the device backends (cuda-naive, cuda-flash, cuda-cublas) share: the device
/// check that turns "no GPU" into a kAttncheckNotSupported with CUDA's own words, CUDA error
/// checks with context, and device memory that frees itself.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "kernel_backend.h"

namespace attncheck::cuda {

/// "" when a CUDA device is usable; else "no CUDA device: <cudaGetErrorString>".
std::string cuda_unavailable_reason();
/// Dynamic shared memory a block may opt in to on the current device.
std::size_t cuda_shared_memory_optin();
/// Throws BackendFailure(kAttncheckInternalError, "<what>: <cudaGetErrorString>") unless ok.
void check_cuda(cudaError_t status, const char* what);
/// Checks the launch just made and waits for it, so forward() returns finished results.
void finish_launch(const char* kernel);

/// cudaMalloc'd bytes, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes, const char* what);
  DeviceBuffer(DeviceBuffer&& other) noexcept : data_(other.data_) { other.data_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void* get() const { return data_; }

 private:
  void* data_ = nullptr;
};

/// KernelBackend for CUDA memory: available only with a device; shared memory per the device.
class DeviceKernelBackend : public KernelBackend {
 public:
  using KernelBackend::KernelBackend;

 protected:
  std::string unavailable_reason() const override { return cuda_unavailable_reason(); }
  std::size_t shared_memory_limit() const override { return cuda_shared_memory_optin(); }
};

/// 128 threads per block on the device; the flash tile is 32 query rows × 32 keys.
inline constexpr KernelConfig kNaiveDeviceConfig{KernelKind::Naive, kDLCUDA, 128, 1, 1};
inline constexpr KernelConfig kFlashDeviceConfig{KernelKind::Flash, kDLCUDA, 128, 32, 32};

}  // namespace attncheck::cuda
