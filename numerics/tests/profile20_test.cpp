// A profile that sets none of ABI 2.1's fields means what it meant under 2.0: its τ and LSE bound
// are bit-identical to the model before those fields existed. The expected values were printed
// (as hex floats, ATTNCHECK_PRINT_FROZEN=1) by this test's own body run against the tolerance
// model as it stood before any 2.1 field entered a bound: commit c1c40c4, whose aggregate check
// already counts sub-normal results as coherent error (numerics/README.md §4.4).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <tuple>

#include "attncheck/tolerance.h"
#include "sim_kernels.h"

namespace attncheck {
namespace {

struct Frozen {
  const char* name;
  double total, coherent, noise_variance, lse;
};

NumericsProfile profile_named(int which) {
  NumericsProfile p;
  switch (which) {
    case 0:  // fp32 three-pass
      break;
    case 1:  // fp16 inputs and P, fp32 accumulation, online softmax
      p.input = DType::F16;
      p.probability = DType::F16;
      p.output = DType::F16;
      p.softmax_block = 64;
      p.writes_lse = true;
      break;
    case 2:  // bf16 with an fp16 accumulator rounding toward zero, k0 = 4, FTZ
      p.input = DType::BF16;
      p.probability = DType::F16;
      p.accumulator = DType::F16;
      p.output = DType::BF16;
      p.accumulation_rounding = Rounding::TowardZero;
      p.products_per_rounding = 4;
      p.flushes_subnormals = true;
      break;
    default:  // fp16 logits stored after an fp32 dot, fp16 accumulation
      p.input = DType::F16;
      p.score = DType::F16;
      p.score_accumulator = DType::F32;
      p.probability = DType::F16;
      p.accumulator = DType::F16;
      p.output = DType::F16;
      p.softmax_block = 32;
      break;
  }
  return p;
}

TEST(Profile20, BoundsAreBitIdenticalToTheModelBefore21) {
  const Frozen frozen[] = {
#include "profile20_frozen.inc"
  };
  const bool print = std::getenv("ATTNCHECK_PRINT_FROZEN") != nullptr;
  size_t next = 0;
  for (int which = 0; which < 4; ++which) {
    for (const auto& [n, d, logit_std, data] :
         {std::tuple{100, 16, 1.0, DataCharacter::GenericRandom}, std::tuple{700, 64, 3.0, DataCharacter::Structured}}) {
      const sim::Case c = sim::make_case(profile_named(which).input, n, d, 2, 11 + static_cast<std::uint64_t>(which), logit_std);
      const AttentionResult ref = sim::reference_of(c);
      const ToleranceModel model(c.problem, profile_named(which), data, c.inputs());
      for (std::int64_t i = 0; i < 2; ++i)
        for (std::int64_t j : {std::int64_t{0}, std::int64_t{d - 1}}) {
          const ToleranceTerms t = model.at(ref, 0, 0, i, j);
          const double lse = model.lse_bound(ref, 0, 0, i);
          const std::string name = fmt::format("profile {} n={} d={} i={} j={}", which, n, d, i, j);
          if (print) {
            std::printf("{\"%s\", %a, %a, %a, %a},\n", name.c_str(), t.total(), t.coherent, t.noise_variance, lse);
            continue;
          }
          ASSERT_LT(next, std::size(frozen));
          const Frozen& f = frozen[next++];
          EXPECT_EQ(name, f.name);
          EXPECT_EQ(t.total(), f.total) << name;
          EXPECT_EQ(t.coherent, f.coherent) << name;
          EXPECT_EQ(t.noise_variance, f.noise_variance) << name;
          EXPECT_EQ(lse, f.lse) << name;
        }
    }
  }
  if (!print) {
    EXPECT_EQ(next, std::size(frozen));
  }
}

}  // namespace
}  // namespace attncheck
