// cuda-naive@host and cuda-flash@host — the device kernels' source, run by host emulation —
// against reference_attention() over the whole grid.
#include <gtest/gtest.h>

#include <memory>

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

std::string case_name(const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; }

class NaiveHostGrid : public ::testing::TestWithParam<AttentionCase> {};
class FlashHostGrid : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(NaiveHostGrid, MatchesReference) {
  Table table(attncheck_cuda_naive_host_entry());
  ASSERT_NE(table, nullptr);
  if (auto reason = check_case(table.get(), GetParam(), host_memory())) GTEST_SKIP() << *reason;
}

TEST_P(FlashHostGrid, MatchesReference) {
  Table table(attncheck_cuda_flash_host_entry());
  ASSERT_NE(table, nullptr);
  if (auto reason = check_case(table.get(), GetParam(), host_memory())) GTEST_SKIP() << *reason;
}

// cuda-naive is the fp32 baseline; its half-precision refusals are checked separately below.
INSTANTIATE_TEST_SUITE_P(CudaNaiveHost, NaiveHostGrid, ::testing::ValuesIn(attention_grid({DType::F32})), case_name);
INSTANTIATE_TEST_SUITE_P(CudaFlashHost, FlashHostGrid,
                         ::testing::ValuesIn(attention_grid({DType::F32, DType::F16, DType::BF16})), case_name);

attncheck_problem small_problem() {
  attncheck_problem p{};
  p.batch = p.q_heads = p.kv_heads = p.q_len = p.k_len = 1;
  p.qk_dim = p.v_dim = 8;
  p.scale = 1.0;
  p.window_left = p.window_right = -1;
  return p;
}

TEST(CudaHostBackends, NamesProfilesAndRefusals) {
  Table naive(attncheck_cuda_naive_host_entry()), flash(attncheck_cuda_flash_host_entry());
  ASSERT_NE(naive, nullptr);
  ASSERT_NE(flash, nullptr);
  EXPECT_STREQ(naive->name, "cuda-naive@host");
  EXPECT_STREQ(flash->name, "cuda-flash@host");
  EXPECT_EQ(naive->abi_version.major, static_cast<uint32_t>(ATTNCHECK_ABI_VERSION_MAJOR));

  attncheck_numerics_profile profile{};
  ASSERT_EQ(flash->get_profile(flash.get(), {kDLBfloat, 16, 1}, &profile), kAttncheckOk);
  EXPECT_EQ(profile.softmax_block, 16);
  EXPECT_EQ(profile.output_dtype.code, kDLBfloat);
  EXPECT_EQ(profile.accumulator_dtype.bits, 32);
  EXPECT_EQ(profile.empty_row, kAttncheckEmptyRowZeros);
  EXPECT_EQ(profile.writes_lse, 1);
  ASSERT_EQ(naive->get_profile(naive.get(), {kDLFloat, 32, 1}, &profile), kAttncheckOk);
  EXPECT_EQ(profile.softmax_block, 1);
  EXPECT_EQ(naive->get_profile(naive.get(), {kDLFloat, 16, 1}, &profile), kAttncheckNotSupported);

  const attncheck_problem p = small_problem();
  char reason[256];
  EXPECT_EQ(naive->supports(naive.get(), &p, {kDLFloat, 16, 1}, kDLCPU, reason, sizeof reason), kAttncheckNotSupported);
  EXPECT_STRNE(reason, "");
  EXPECT_EQ(flash->supports(flash.get(), &p, {kDLFloat, 32, 1}, kDLCUDA, reason, sizeof reason), kAttncheckNotSupported);
  EXPECT_NE(std::string(reason).find("kDLCPU"), std::string::npos) << reason;
  EXPECT_EQ(flash->supports(flash.get(), &p, {kDLFloat, 64, 1}, kDLCPU, reason, sizeof reason), kAttncheckNotSupported);
  EXPECT_EQ(flash->supports(flash.get(), &p, {kDLFloat, 32, 1}, kDLCPU, nullptr, 0), kAttncheckOk);

  attncheck_problem bad = p;
  bad.q_heads = 3;
  bad.kv_heads = 2;
  EXPECT_EQ(flash->supports(flash.get(), &bad, {kDLFloat, 32, 1}, kDLCPU, reason, sizeof reason),
            kAttncheckInvalidProblem);
  EXPECT_NE(std::string(reason).find("kv_heads"), std::string::npos) << reason;
}

TEST(CudaHostBackends, ForwardRejectsMismatchedTensorsWithContext) {
  Table flash(attncheck_cuda_flash_host_entry());
  ASSERT_NE(flash, nullptr);
  const attncheck_problem p = small_problem();
  std::vector<float> data(64, 0.0f);
  int64_t shape[4] = {1, 1, 1, 8}, wrong[4] = {1, 1, 1, 4};
  DLTensor good{data.data(), {kDLCPU, 0}, 4, {kDLFloat, 32, 1}, shape, nullptr, 0};
  DLTensor bad = good;
  bad.shape = wrong;
  attncheck_attention_tensors t{&good, &good, &bad, nullptr, nullptr, &good, nullptr};
  EXPECT_EQ(flash->forward(flash.get(), &p, &t), kAttncheckInvalidProblem);
  const std::string message = flash->last_error(flash.get());
  EXPECT_NE(message.find("v: dim 3 (value dim) is 4"), std::string::npos) << message;
}

}  // namespace
}  // namespace attncheck::cuda::testing
