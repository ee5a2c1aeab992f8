#include "device_common.h"

namespace attncheck::cuda {

std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // not sticky, but leave no error behind for the next call
    return std::string("no CUDA device: ") + cudaGetErrorString(status);
  }
  if (count == 0) return std::string("no CUDA device: ") + cudaGetErrorString(cudaErrorNoDevice);
  return "";
}

std::size_t cuda_shared_memory_optin() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    cudaGetLastError();
    return 48 * 1024;  // every architecture we build for offers at least this without opting in
  }
  return static_cast<std::size_t>(bytes);
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw BackendFailure(kAttncheckInternalError, std::string(what) + ": " + cudaGetErrorName(status) + " (" +
                                                      cudaGetErrorString(status) + ")");
}

void finish_launch(const char* kernel) {
  check_cuda(cudaGetLastError(), (std::string("launching ") + kernel).c_str());
  check_cuda(cudaDeviceSynchronize(), (std::string("running ") + kernel).c_str());
}

DeviceBuffer::DeviceBuffer(std::size_t bytes, const char* what) {
  check_cuda(cudaMalloc(&data_, bytes == 0 ? 1 : bytes), what);
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

}  // namespace attncheck::cuda
