// The host emulation layer itself: kernels written in the shared CUDA subset, run on the host.
#include <gtest/gtest.h>

#include <numeric>
#include <stdexcept>
#include <vector>

#include "attncheck/cuda/kernel_portability.cuh"

ATTNCHECK_KERNEL_NAMESPACE_BEGIN

// A tree reduction in static shared memory: correct only if every thread of the block sees the
// others' writes after each __syncthreads(), and only if shared memory is per block.
__global__ void block_sum_kernel(const int* in, int* out, int n) {
  ATTNCHECK_SHARED_ARRAY(int, partial, 64);
  const unsigned block = blockIdx.x + gridDim.x * blockIdx.y;
  const unsigned t = threadIdx.x;
  const long long i = static_cast<long long>(block) * blockDim.x + t;
  partial[t] = i < n ? in[i] : 0;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) out[block] = partial[0];
}

// Dynamic shared memory plus a second static array: each thread writes its reversed index, then
// reads its neighbour's after a barrier.
__global__ void rotate_kernel(int* out) {
  ATTNCHECK_DYNAMIC_SHARED(int, buffer);
  ATTNCHECK_SHARED_ARRAY(int, block_tag, 1);
  const unsigned t = threadIdx.x, n = blockDim.x;
  if (t == 0) block_tag[0] = static_cast<int>(blockIdx.x) * 1000;
  buffer[t] = static_cast<int>(n - 1 - t);
  __syncthreads();
  out[blockIdx.x * n + t] = buffer[(t + 1) % n] + block_tag[0];
}

__global__ void thread_index_kernel(int* out) {
  const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[block * (blockDim.x * blockDim.y * blockDim.z) + linear] = static_cast<int>(block * 100 + linear);
}

__global__ void throwing_kernel() {
  __syncthreads();
  if (threadIdx.x == 3) throw std::runtime_error("kernel failure");
  __syncthreads();
}

ATTNCHECK_KERNEL_NAMESPACE_END

namespace attncheck::cuda {
namespace {

namespace emu = attncheck::cuda_emulation;

TEST(CudaHostEmulation, BlockReductionWithSharedMemoryAndBarriers) {
  const int n = 1000;
  std::vector<int> in(n);
  std::iota(in.begin(), in.end(), 1);
  const unsigned blocks_x = 4, blocks_y = 4;  // 16 blocks of 64 threads cover 1024 >= n
  std::vector<int> out(blocks_x * blocks_y, -1);
  emu::launch(emu::dim3(blocks_x, blocks_y), emu::dim3(64), 0, &block_sum_kernel, in.data(), out.data(), n);
  for (unsigned b = 0; b < out.size(); ++b) {
    int expected = 0;
    for (unsigned i = b * 64; i < (b + 1) * 64 && i < n; ++i) expected += in[i];
    EXPECT_EQ(out[b], expected) << "block " << b;
  }
  EXPECT_EQ(std::accumulate(out.begin(), out.end(), 0), n * (n + 1) / 2);
}

TEST(CudaHostEmulation, DynamicSharedMemoryIsPerLaunchAndStaticArraysFollowIt) {
  const unsigned threads = 33, blocks = 3;
  std::vector<int> out(threads * blocks, -1);
  emu::launch(emu::dim3(blocks), emu::dim3(threads), threads * sizeof(int), &rotate_kernel, out.data());
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threads; ++t)
      EXPECT_EQ(out[b * threads + t], static_cast<int>(threads - 1 - (t + 1) % threads) + static_cast<int>(b) * 1000);
}

TEST(CudaHostEmulation, ThreeDimensionalIndices) {
  const emu::dim3 grid(2, 3, 2), block(4, 2, 2);
  std::vector<int> out(12 * 16, -1);
  emu::launch(grid, block, 0, &thread_index_kernel, out.data());
  for (int i = 0; i < 12 * 16; ++i) EXPECT_EQ(out[static_cast<size_t>(i)], (i / 16) * 100 + i % 16);
}

TEST(CudaHostEmulation, KernelExceptionReachesTheCallerWithoutDeadlock) {
  EXPECT_THROW(emu::launch(emu::dim3(2), emu::dim3(8), 0, &throwing_kernel), std::runtime_error);
}

TEST(CudaHostEmulation, RejectsEmptyAndOversizedBlocks) {
  EXPECT_THROW(emu::launch(emu::dim3(1), emu::dim3(0), 0, &throwing_kernel), std::invalid_argument);
  EXPECT_THROW(emu::launch(emu::dim3(1), emu::dim3(2048), 0, &throwing_kernel), std::invalid_argument);
}

TEST(CudaHostEmulation, HalfAndBfloat16ConversionsRoundToNearestEven) {
  // 1 + 2^-11 is halfway between two halves: ties to even gives 1; 1 + 3·2^-11 rounds up.
  EXPECT_EQ(to_float(from_float<half_t>(1.0f + 0x1p-11f)), 1.0f);
  EXPECT_EQ(to_float(from_float<half_t>(1.0f + 3 * 0x1p-11f)), 1.0f + 0x1p-9f);
  EXPECT_EQ(to_float(from_float<half_t>(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(to_float(from_float<half_t>(65520.0f))));
  EXPECT_EQ(to_float(from_float<half_t>(0x1p-24f)), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(to_float(from_float<half_t>(0x1p-25f)), 0.0f);      // tie to even (zero)
  EXPECT_EQ(to_float(from_float<half_t>(-3.5f)), -3.5f);
  EXPECT_EQ(to_float(from_float<bfloat16_t>(1.0f + 0x1p-8f)), 1.0f);
  EXPECT_EQ(to_float(from_float<bfloat16_t>(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  EXPECT_TRUE(std::isnan(to_float(from_float<bfloat16_t>(NAN))));
  EXPECT_TRUE(std::isnan(to_float(from_float<half_t>(NAN))));
}

}  // namespace
}  // namespace attncheck::cuda
