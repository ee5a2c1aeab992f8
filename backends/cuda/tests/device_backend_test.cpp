// cuda-naive, cuda-flash and cuda-cublas on the device, over the same grid as the host-emulated
// backends, their tensors in CUDA memory through the harness's CUDA domain. Without a usable
// device every grid case skips with the backend's own reason ("no CUDA device: …"), and the
// backends must give CUDA's reason through supports() and forward().
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

#include "attention_grid.h"
#include "attncheck/backend_handle.h"
#include "attncheck/cuda/cuda_backends.h"

namespace attncheck::cuda::testing {
namespace {

struct TableDeleter {
  void operator()(attncheck_backend* b) const {
    if (b != nullptr) b->destroy(b);
  }
};
using Table = std::unique_ptr<attncheck_backend, TableDeleter>;

// "" when a device is usable, else the reason CUDA gives.
std::string no_device_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) return cudaGetErrorString(status);
  if (count == 0) return cudaGetErrorString(cudaErrorNoDevice);
  return "";
}

using Entry = attncheck_backend* (*)();

class NaiveDeviceGrid : public ::testing::TestWithParam<GridCase> {};
class FlashDeviceGrid : public ::testing::TestWithParam<GridCase> {};
class CublasDeviceGrid : public ::testing::TestWithParam<GridCase> {};

TEST_P(NaiveDeviceGrid, MatchesReference) { expect_conforms("cuda-naive", GetParam()); }
TEST_P(FlashDeviceGrid, MatchesReference) { expect_conforms("cuda-flash", GetParam()); }
TEST_P(CublasDeviceGrid, MatchesReference) { expect_conforms("cuda-cublas", GetParam()); }

INSTANTIATE_TEST_SUITE_P(CudaNaive, NaiveDeviceGrid, ::testing::ValuesIn(attention_grid({DType::F32})), case_name);
INSTANTIATE_TEST_SUITE_P(CudaFlash, FlashDeviceGrid,
                         ::testing::ValuesIn(attention_grid({DType::F32, DType::F16, DType::BF16})), case_name);
INSTANTIATE_TEST_SUITE_P(CudaCublas, CublasDeviceGrid,
                         ::testing::ValuesIn(attention_grid({DType::F32, DType::F16, DType::BF16})), case_name);

// Without a device, supports() and forward() decline with CUDA's reason (a skip, not a failure).
TEST(CudaDeviceBackends, DeclineWithCudasReasonWhenNoDevice) {
  const std::string reason = no_device_reason();
  if (reason.empty()) GTEST_SKIP() << "a CUDA device is present";
  attncheck_problem p{};
  p.struct_size = sizeof(attncheck_problem);
  p.batch = p.q_heads = p.kv_heads = p.q_len = p.k_len = 1;
  p.qk_dim = p.v_dim = 8;
  p.scale = 1.0;
  p.window_left = p.window_right = -1;
  for (Entry entry : {&attncheck_cuda_naive_entry, &attncheck_cuda_flash_entry, &attncheck_cuda_cublas_entry}) {
    Table table(entry());
    ASSERT_NE(table, nullptr);
    char why[256] = {};
    EXPECT_EQ(table->supports(table.get(), &p, {kDLFloat, 32, 1}, kDLCUDA, why, sizeof why), kAttncheckNotSupported)
        << table->name;
    EXPECT_EQ(std::string(why), "no CUDA device: " + reason) << table->name;
    attncheck_attention_tensors none{};
    none.struct_size = sizeof(attncheck_attention_tensors);
    DLTensor q{};
    q.dtype = {kDLFloat, 32, 1};
    q.device = {kDLCUDA, 0};
    none.q = &q;
    EXPECT_EQ(table->forward(table.get(), &p, &none), kAttncheckNotSupported) << table->name;
    EXPECT_NE(std::string(table->last_error(table.get())).find("no CUDA device: " + reason), std::string::npos)
        << table->last_error(table.get());
  }
}

// Without a device a grid case is declined with the backend's own reason, which expect_conforms
// turns into the skip message.
TEST(CudaDeviceBackends, GridCasesAreDeclinedWithTheBackendsReasonWhenNoDevice) {
  const std::string reason = no_device_reason();
  if (reason.empty()) GTEST_SKIP() << "a CUDA device is present";
  const GridCase g = attention_grid({DType::F32}).front();
  for (const char* name : {"cuda-naive", "cuda-flash", "cuda-cublas"}) {
    Backend backend = open_backend(name);
    const CaseCheck check = check_case(backend, g);
    EXPECT_EQ(check.declined, std::optional<std::string>("no CUDA device: " + reason)) << name;
  }
}

}  // namespace
}  // namespace attncheck::cuda::testing
