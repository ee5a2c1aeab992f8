// cpu-flash's building blocks measured against what its profile declares.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attncheck/backend_handle.h"
#include <fmt/format.h>

#include "flash_kernel.h"

namespace attncheck {
namespace {

using ExpFn = void (*)(const float*, float*, std::int64_t);

// u_E in cpu-flash's profile must bound the relative error of the exp each kernel path uses, over
// every argument the kernel feeds it: s − m ∈ [−inf, 0] (and m_old − m_new for the rescale).
TEST(CpuFlashKernel, ExpIsWithinTheDeclaredRelativeError) {
  Backend flash = open_backend("cpu-flash");
  const double declared = flash.profile(DType::F32)->exp_relative_error;
  ASSERT_GT(declared, 0.0);
  const struct {
    const char* isa;
    ExpFn fn;
  } paths[] = {{"avx512", &cpu_flash::exp_avx512}, {"avx2", &cpu_flash::exp_avx2}, {"generic", &cpu_flash::exp_generic}};
  // Every float in [-87.3, 0] with a stride, plus the whole subnormal-result range below it.
  std::vector<float> x;
  for (float v = -103.97f; v <= 0.0f; v += 1.3e-5f) x.push_back(v);
  x.push_back(0.0f);
  std::vector<float> y(x.size());
  for (const auto& path : paths) {
    if (!cpu_flash::cpu_flash_isa_available(path.isa)) continue;
    SCOPED_TRACE(path.isa);
    path.fn(x.data(), y.data(), static_cast<std::int64_t>(x.size()));
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double exact = std::exp(static_cast<double>(x[i]));
      if (exact < 0x1p-126) {
        // Subnormal results: the kernel rounds once, so within the spacing 2^-149 of the exact value
        // plus the relative error of the unscaled polynomial.
        ASSERT_LE(std::fabs(y[i] - exact), 0x1p-149 + declared * exact) << "x = " << x[i];
        continue;
      }
      worst = std::max(worst, std::fabs(y[i] - exact) / exact);
    }
    EXPECT_LE(worst, declared) << "measured " << worst;
    RecordProperty(std::string("exp_max_rel_error_") + path.isa, fmt::format("{:.3g}", worst));
    // Exact values the online softmax relies on.
    const float special[] = {0.0f, -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), -200.0f};
    float out[4];
    path.fn(special, out, 4);
    EXPECT_EQ(out[0], 1.0f);  // exp(0) = 1 exactly: the row maximum's weight
    EXPECT_EQ(out[1], 0.0f);  // a masked key weighs exactly nothing
    EXPECT_TRUE(std::isnan(out[2]));
    EXPECT_EQ(out[3], 0.0f);
  }
}

TEST(CpuFlashKernel, HalfConversionsRoundToNearestEven) {
  // binary16 facts: 1 + 2^-11 is the tie between 1 and 1 + 2^-10 (even: 1 → 0x3c00); 65520 rounds
  // to inf; 2^-25 is the tie between 0 and the smallest subnormal (even: 0); 3·2^-25 → 2·2^-24.
  EXPECT_EQ(cpu_flash::float_to_half_rn(1.0f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(cpu_flash::float_to_half_rn(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(cpu_flash::float_to_half_rn(65520.0f), 0x7c00);
  EXPECT_EQ(cpu_flash::float_to_half_rn(65519.0f), 0x7bff);
  EXPECT_EQ(cpu_flash::float_to_half_rn(0x1p-25f), 0x0000);
  EXPECT_EQ(cpu_flash::float_to_half_rn(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(cpu_flash::float_to_half_rn(-2.0f), 0xc000);
  EXPECT_EQ(cpu_flash::float_to_half_rn(std::numeric_limits<float>::quiet_NaN()) & 0x7e00, 0x7e00);
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f = cpu_flash::half_to_float_exact(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(cpu_flash::float_to_half_rn(f), bits) << "round trip of 0x" << std::hex << h;
  }
}

}  // namespace
}  // namespace attncheck
