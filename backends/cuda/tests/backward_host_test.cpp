// cuda-flash@host's backward pass — flash_attention_backward.cuh run by host emulation — against
// reference_attention_backward over the forward's grid, every dtype, with and without dLSE; and
// what its table declares.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "attncheck/backend_handle.h"
#include "attncheck/cuda/cuda_backends.h"
#include "backward_grid.h"

namespace attncheck::cuda::testing {
namespace {

class FlashHostBackward : public ::testing::TestWithParam<GridCase> {};
class FlashHostBackwardWithDLse : public ::testing::TestWithParam<GridCase> {};

TEST_P(FlashHostBackward, MatchesReference) { expect_gradients_conform("cuda-flash@host", GetParam(), false); }
TEST_P(FlashHostBackwardWithDLse, MatchesReference) { expect_gradients_conform("cuda-flash@host", GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(CudaFlashHost, FlashHostBackward,
                         ::testing::ValuesIn(backward_attention_grid({DType::F32, DType::F16, DType::BF16})), case_name);
INSTANTIATE_TEST_SUITE_P(CudaFlashHost, FlashHostBackwardWithDLse, ::testing::ValuesIn(backward_attention_grid({DType::F32})),
                         case_name);

// The profile states the kernels of flash_attention_backward.cuh: fp32 throughout, P from the
// saved lse, dQ by a kernel of its own (no atomics), hence deterministic; dLSE taken, dbias not.
TEST(CudaFlashHostBackward, DeclaresItsBackwardProfile) {
  Backend flash = open_backend("cuda-flash@host");
  ASSERT_TRUE(flash.has_backward());
  const Problem p = with_fp32_parameters(Problem::of_shape(1, 2, 1, 5, 7, 8, 8));
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    const std::optional<BackwardProfile> profile = flash.backward_profile(p, dtype);
    ASSERT_TRUE(profile.has_value()) << dtype_name(dtype);
    EXPECT_EQ(profile->gradient_dtype(dtype), dtype);
    EXPECT_EQ(profile->probability, DType::F32);
    EXPECT_EQ(profile->dp, DType::F32);
    EXPECT_EQ(profile->ds, DType::F32);
    EXPECT_EQ(profile->accumulator, DType::F32);
    EXPECT_EQ(profile->group_sum_dtype(), DType::F32);
    EXPECT_EQ(profile->query_block, 0);
    EXPECT_EQ(profile->key_block, 0);
    EXPECT_TRUE(profile->recomputes_from_lse);
    EXPECT_FALSE(profile->dq_atomic);
    EXPECT_TRUE(profile->deterministic);
    EXPECT_TRUE(profile->accepts_dlse);
    EXPECT_FALSE(profile->writes_dbias);
  }
  // cuda-naive@host has no backward pass: its table leaves both entries NULL.
  EXPECT_FALSE(open_backend("cuda-naive@host").has_backward());
}

}  // namespace
}  // namespace attncheck::cuda::testing
