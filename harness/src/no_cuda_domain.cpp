// Builds without CUDA cannot place tensors in CUDA memory; a backend that asks is declined, so
// its units skip with this reason instead of failing.
#include <fmt/format.h>

#include "attncheck/backend_handle.h"
#include "attncheck/memory_domain.h"

namespace attncheck {

std::unique_ptr<MemoryDomain> make_cuda_memory_domain(DLDevice device) {
  throw BackendError(kAttncheckNotSupported,
                     fmt::format("this attncheck was built without CUDA, so it cannot place tensors in CUDA memory "
                                 "(device type {}); rebuild with the CUDA toolkit installed",
                                 static_cast<int>(device.device_type)));
}

}  // namespace attncheck
