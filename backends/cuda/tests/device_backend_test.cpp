// cuda-naive, cuda-flash and cuda-cublas on the device, over the same grid as the host-emulated
// backends. Without a usable device every test skips with CUDA's reason, and the backends must
// say the same through supports().
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "attention_grid.h"
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

TensorMemory cuda_memory() {
  TensorMemory m;
  m.device = kDLCUDA;
  m.allocate = [](std::size_t bytes) {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) throw std::bad_alloc();
    return p;
  };
  m.release = [](void* p) { cudaFree(p); };
  m.upload = [](void* dst, const void* src, std::size_t bytes) {
    if (cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) != cudaSuccess) throw std::runtime_error("cudaMemcpy to device");
  };
  m.download = [](void* dst, const void* src, std::size_t bytes) {
    if (cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) throw std::runtime_error("cudaMemcpy to host");
  };
  return m;
}

std::string case_name(const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; }

using Entry = attncheck_backend* (*)();

void run_on_device(Entry entry, const AttentionCase& c) {
  if (const std::string reason = no_device_reason(); !reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;
  Table table(entry());
  ASSERT_NE(table, nullptr);
  if (auto reason = check_case(table.get(), c, cuda_memory())) GTEST_SKIP() << *reason;
}

class NaiveDeviceGrid : public ::testing::TestWithParam<AttentionCase> {};
class FlashDeviceGrid : public ::testing::TestWithParam<AttentionCase> {};
class CublasDeviceGrid : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(NaiveDeviceGrid, MatchesReference) { run_on_device(&attncheck_cuda_naive_entry, GetParam()); }
TEST_P(FlashDeviceGrid, MatchesReference) { run_on_device(&attncheck_cuda_flash_entry, GetParam()); }
TEST_P(CublasDeviceGrid, MatchesReference) { run_on_device(&attncheck_cuda_cublas_entry, GetParam()); }

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
    DLTensor q{};
    q.dtype = {kDLFloat, 32, 1};
    q.device = {kDLCUDA, 0};
    none.q = &q;
    EXPECT_EQ(table->forward(table.get(), &p, &none), kAttncheckNotSupported) << table->name;
    EXPECT_NE(std::string(table->last_error(table.get())).find("no CUDA device: " + reason), std::string::npos)
        << table->last_error(table.get());
  }
}

}  // namespace
}  // namespace attncheck::cuda::testing
