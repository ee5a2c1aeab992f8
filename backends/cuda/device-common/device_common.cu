#include "device_common.h"

#include <string>

namespace attncheck::cuda {

void require_cuda_device() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // not sticky, but leave no error behind for the next call
    impl::unsupported(std::string("no CUDA device: ") + cudaGetErrorString(status));
  }
  if (count == 0) impl::unsupported(std::string("no CUDA device: ") + cudaGetErrorString(cudaErrorNoDevice));
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
    throw impl::AbiError(kAttncheckInternalError, std::string(what) + ": " + cudaGetErrorName(status) + " (" +
                                                      cudaGetErrorString(status) + ")");
}

void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), (std::string("launching ") + kernel).c_str()); }

StreamBuffer::StreamBuffer(std::size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
  check_cuda(cudaMallocAsync(&data_, bytes == 0 ? 1 : bytes, stream), what);
}

StreamBuffer::~StreamBuffer() {
  if (data_ != nullptr) cudaFreeAsync(data_, stream_);
}

}  // namespace attncheck::cuda
