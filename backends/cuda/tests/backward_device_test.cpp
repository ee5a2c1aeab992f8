// cuda-flash's backward pass on the device, over the same grid as cuda-flash@host's, its tensors
// in CUDA memory through the harness's CUDA domain. Without a usable device every case skips with
// the backend's own reason ("no CUDA device: …"), and backward itself declines with it.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "attncheck/backend_handle.h"
#include "attncheck/cuda/cuda_backends.h"
#include "backward_grid.h"

namespace attncheck::cuda::testing {
namespace {

// "" when a device is usable, else the reason CUDA gives.
std::string no_device_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) return cudaGetErrorString(status);
  if (count == 0) return cudaGetErrorString(cudaErrorNoDevice);
  return "";
}

class FlashDeviceBackward : public ::testing::TestWithParam<GridCase> {};
class FlashDeviceBackwardWithDLse : public ::testing::TestWithParam<GridCase> {};

TEST_P(FlashDeviceBackward, MatchesReference) { expect_gradients_conform("cuda-flash", GetParam(), false); }
TEST_P(FlashDeviceBackwardWithDLse, MatchesReference) { expect_gradients_conform("cuda-flash", GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(CudaFlash, FlashDeviceBackward,
                         ::testing::ValuesIn(backward_attention_grid({DType::F32, DType::F16, DType::BF16})), case_name);
INSTANTIATE_TEST_SUITE_P(CudaFlash, FlashDeviceBackwardWithDLse, ::testing::ValuesIn(backward_attention_grid({DType::F32})),
                         case_name);

// Without a device, backward declines with CUDA's reason (a skip).
TEST(CudaFlashDeviceBackward, DeclinesWithCudasReasonWhenNoDevice) {
  const std::string reason = no_device_reason();
  if (reason.empty()) GTEST_SKIP() << "a CUDA device is present";
  struct TableDeleter {
    void operator()(attncheck_backend* b) const { b->destroy(b); }
  };
  const std::unique_ptr<attncheck_backend, TableDeleter> table(attncheck_cuda_flash_entry());
  ASSERT_NE(table, nullptr);
  ASSERT_NE(table->get_backward_profile, nullptr);
  ASSERT_NE(table->backward, nullptr);
  attncheck_problem p{};
  p.struct_size = sizeof(attncheck_problem);
  p.batch = p.q_heads = p.kv_heads = p.q_len = p.k_len = 1;
  p.qk_dim = p.v_dim = 8;
  p.scale = 1.0;
  p.window_left = p.window_right = -1;
  // The profile is asked in the parent process under isolation, which must not touch the
  // device: it answers for the dtype alone, and the call declines.
  attncheck_backward_profile profile{};
  profile.struct_size = sizeof profile;
  EXPECT_EQ(table->get_backward_profile(table.get(), &p, {kDLFloat, 32, 1}, &profile), kAttncheckOk)
      << table->last_error(table.get());
  attncheck_backward_tensors none{};
  none.struct_size = sizeof none;
  DLTensor q{};
  q.dtype = {kDLFloat, 32, 1};
  q.device = {kDLCUDA, 0};
  none.q = &q;
  EXPECT_EQ(table->backward(table.get(), &p, &none), kAttncheckNotSupported);
  EXPECT_NE(std::string(table->last_error(table.get())).find("no CUDA device: " + reason), std::string::npos)
      << table->last_error(table.get());
}

}  // namespace
}  // namespace attncheck::cuda::testing
