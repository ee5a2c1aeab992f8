// cuda-naive@host and cuda-flash@host — the device kernels' source, run by host emulation —
// against reference_attention() over the whole grid. They declare the simulated device, so every
// case reaches them through the harness's simulated memory domain: pages that fault outside the
// suite's copies and the call, the device path of the suite proven without a GPU.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "attention_grid.h"
#include "attncheck/backend_handle.h"
#include "attncheck/cuda/cuda_backends.h"
#include "attncheck/execute.h"

namespace attncheck::cuda::testing {
namespace {

struct TableDeleter {
  void operator()(attncheck_backend* b) const {
    if (b != nullptr) b->destroy(b);
  }
};
using Table = std::unique_ptr<attncheck_backend, TableDeleter>;

class NaiveHostGrid : public ::testing::TestWithParam<GridCase> {};
class FlashHostGrid : public ::testing::TestWithParam<GridCase> {};

TEST_P(NaiveHostGrid, MatchesReference) { expect_conforms("cuda-naive@host", GetParam()); }
TEST_P(FlashHostGrid, MatchesReference) { expect_conforms("cuda-flash@host", GetParam()); }

// cuda-naive is the fp32 baseline; its half-precision refusals are checked separately below.
INSTANTIATE_TEST_SUITE_P(CudaNaiveHost, NaiveHostGrid, ::testing::ValuesIn(attention_grid({DType::F32})), case_name);
INSTANTIATE_TEST_SUITE_P(CudaFlashHost, FlashHostGrid,
                         ::testing::ValuesIn(attention_grid({DType::F32, DType::F16, DType::BF16})), case_name);

attncheck_problem small_problem() {
  attncheck_problem p{};
  p.struct_size = sizeof(attncheck_problem);
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
  EXPECT_EQ(naive->device.device_type, kAttncheckSimulatedDevice);
  EXPECT_EQ(flash->device.device_type, kAttncheckSimulatedDevice);

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
  const DLDeviceType simulated = kAttncheckSimulatedDevice;
  EXPECT_EQ(naive->supports(naive.get(), &p, {kDLFloat, 16, 1}, simulated, reason, sizeof reason),
            kAttncheckNotSupported);
  EXPECT_STRNE(reason, "");
  EXPECT_EQ(flash->supports(flash.get(), &p, {kDLFloat, 32, 1}, kDLCUDA, reason, sizeof reason), kAttncheckNotSupported);
  EXPECT_NE(std::string(reason).find("simulated device"), std::string::npos) << reason;
  EXPECT_EQ(flash->supports(flash.get(), &p, {kDLFloat, 32, 1}, kDLCPU, reason, sizeof reason), kAttncheckNotSupported);
  EXPECT_EQ(flash->supports(flash.get(), &p, {kDLFloat, 64, 1}, simulated, reason, sizeof reason),
            kAttncheckNotSupported);
  EXPECT_EQ(flash->supports(flash.get(), &p, {kDLFloat, 32, 1}, simulated, nullptr, 0), kAttncheckOk);

  attncheck_problem bad = p;
  bad.q_heads = 3;
  bad.kv_heads = 2;
  EXPECT_EQ(flash->supports(flash.get(), &bad, {kDLFloat, 32, 1}, simulated, reason, sizeof reason),
            kAttncheckInvalidProblem);
  EXPECT_NE(std::string(reason).find("kv_heads"), std::string::npos) << reason;
}

// Tensors placed on the simulated device for a problem with Dv = 8, handed over with a problem
// that says Dv = 4: an invalid call, refused naming the tensor and the dimension.
TEST(CudaHostBackends, ForwardRejectsMismatchedTensorsWithContext) {
  Backend flash = open_backend("cuda-flash@host");
  AttentionCase c;
  c.problem = with_fp32_parameters(Problem::of_shape(1, 1, 1, 1, 1, 8, 8));
  const CaseData data = make_case_data(c);
  Problem wrong = c.problem;
  wrong.v_dim = 4;
  const auto error = forward_with_problem(flash, c.problem, wrong, *flash.profile(DType::F32), data.inputs(c.problem));
  ASSERT_TRUE(error.has_value()) << "cuda-flash@host accepted a V of the wrong value dim";
  EXPECT_EQ(error->status(), kAttncheckInvalidProblem) << error->what();
  EXPECT_NE(std::string(error->what()).find("v: dim 3 (value dim) is 8, expected 4"), std::string::npos) << error->what();
}

}  // namespace
}  // namespace attncheck::cuda::testing
