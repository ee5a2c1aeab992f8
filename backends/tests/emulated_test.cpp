// The emulated kernels (backends/emulated/): each rounding stage sits where the profile declares
// it (hand-derived cases whose answer changes with the stage), the profiles say what the code
// does, every planted defect changes the output as described, and the healthy kernels agree with
// the double reference within the τ of their declared profile.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attncheck/check.h"
#include "attncheck/engine.h"
#include "attncheck/execute.h"
#include "attncheck/property.h"
#include "emulated_kernel.h"

namespace attncheck {
namespace {

using emulated::Defect;
using emulated::Kernel;

constexpr Kernel kKernels[] = {Kernel::Fp32, Kernel::Fp16Acc, Kernel::Bf16P, Kernel::Ggml, Kernel::E4m3P, Kernel::E5m2P};

Backend open(Kernel kernel, Defect defect = Defect::None) {
  attncheck_backend* table = emulated::make_emulated(kernel, defect);
  if (table == nullptr) throw std::runtime_error("make_emulated returned NULL");
  return Backend(table, "make_emulated");
}

/// A one-head problem with an explicit scale, and its inputs filled by the caller.
struct HandCase {
  Problem problem;
  CaseData data;
  HandCase(std::int64_t q_len, std::int64_t k_len, std::int64_t qk_dim, std::int64_t v_dim, double scale = 1.0) {
    problem = Problem::of_shape(1, 1, 1, q_len, k_len, qk_dim, v_dim);
    problem.scale = scale;
    data.q = HostTensor({1, 1, q_len, qk_dim});
    data.k = HostTensor({1, 1, k_len, qk_dim});
    data.v = HostTensor({1, 1, k_len, v_dim});
  }
  void additive_mask() {
    problem.mask = MaskKind::Additive;
    problem.mask_k_len = problem.k_len;
    data.mask = HostTensor({1, 1, 1, problem.k_len});
  }
  /// The output of `backend` on f32 inputs (every value below is exact in fp32).
  HostTensor run(Backend& backend, DType dtype = DType::F32) const {
    const std::optional<NumericsProfile> profile = backend.profile(problem, dtype);
    if (!profile) throw std::runtime_error(std::string(backend.name()) + " has no profile for this dtype");
    return run_backend(backend, problem, *profile, data.inputs(problem)).out;
  }
};

bool rounds_operands_to_f16(Kernel k) { return k == Kernel::Fp16Acc || k == Kernel::Ggml; }

// --- each rounding stage where it is declared ---------------------------------------------------

// K rounded to fp16 inside the kernel. Dk = 1, q = 1, k0 = 1, k1 = 1 + 2^-11, v = (0, 1).
// 1 + 2^-11 is exactly halfway between the fp16 neighbours 1 and 1 + 2^-10 and rounds to even: 1.
// A kernel that rounds K to fp16 sees s0 = s1 = 1, equal weights, O = (0 + 1) / 2 = 0.5 exactly
// (exp(0) = 1 and every sum below is exact). One that does not sees s1 − s0 = 2^-11:
// O = σ(2^-11) = 0.5 + 2^-13 − O(2^-37), i.e. 0.50012207 to fp32 accuracy.
TEST(EmulatedStages, KeyRoundedToF16WhereDeclared) {
  for (Kernel kernel : kKernels) {
    Backend backend = open(kernel);
    HandCase c(1, 2, 1, 1);
    c.data.q(0, 0, 0, 0) = 1.0;
    c.data.k(0, 0, 0, 0) = 1.0;
    c.data.k(0, 0, 1, 0) = 1.0 + 0x1p-11;
    c.data.v(0, 0, 1, 0) = 1.0;
    const double o = c.run(backend)(0, 0, 0, 0);
    const NumericsProfile profile = *backend.profile(DType::F32);
    EXPECT_EQ(profile.key_rounding == DType::F16, rounds_operands_to_f16(kernel)) << backend.name();
    if (rounds_operands_to_f16(kernel))
      EXPECT_EQ(o, 0.5) << backend.name();
    else
      EXPECT_NEAR(o, 0.5 + 0x1p-13, 4e-7) << backend.name();
  }
}

// Q rounded to fp16: Dk = 2, q = (1, 1 + 2^-11), k0 = (1, 0), k1 = (0, 1), v = (0, 1). With Q
// rounded, s0 = s1 = 1 and O = 0.5 exactly; without, s1 − s0 = 2^-11 and O = 0.5 + 2^-13 as above.
TEST(EmulatedStages, QueryRoundedToF16WhereDeclared) {
  for (Kernel kernel : kKernels) {
    Backend backend = open(kernel);
    HandCase c(1, 2, 2, 1);
    c.data.q(0, 0, 0, 0) = 1.0;
    c.data.q(0, 0, 0, 1) = 1.0 + 0x1p-11;
    c.data.k(0, 0, 0, 0) = 1.0;
    c.data.k(0, 0, 1, 1) = 1.0;
    c.data.v(0, 0, 1, 0) = 1.0;
    const double o = c.run(backend)(0, 0, 0, 0);
    EXPECT_EQ(backend.profile(DType::F32)->query_rounding == DType::F16, rounds_operands_to_f16(kernel));
    if (rounds_operands_to_f16(kernel))
      EXPECT_EQ(o, 0.5) << backend.name();
    else
      EXPECT_NEAR(o, 0.5 + 0x1p-13, 4e-7) << backend.name();
  }
}

// P rounded before P·V, the row sum over the unrounded P. Dk = 1, q = 1, k = (0, −ln 3 in fp32),
// v = (0, 1): s = (0, s1), the max is key 0, p0 = exp(0) = 1, p1 = fl32(exp(s1)) ≈ 1/3, and
// O = R_P(p1) / (1 + p1). s1 = fl32(−ln 3) (K rounded to fp16 first where declared). p1 lies far
// from every fp16/bf16 rounding boundary (the neighbours of 1/3 are 0.33325195 and 0.33349609 in
// fp16, 0.33203125 and 0.33398438 in bf16), so R_P(p1) is R_P of the double exp(s1), and the
// kernel's remaining error (expf's 1 ulp, one add, one divide) is below 4 · 2^-24.
TEST(EmulatedStages, ProbabilityRoundedWhereDeclared) {
  for (Kernel kernel : kKernels) {
    Backend backend = open(kernel);
    HandCase c(1, 2, 1, 1);
    const double k1 = static_cast<float>(-std::log(3.0));
    c.data.q(0, 0, 0, 0) = 1.0;
    c.data.k(0, 0, 1, 0) = k1;
    c.data.v(0, 0, 1, 0) = 1.0;
    const NumericsProfile profile = *backend.profile(c.problem, DType::F32);
    const double s1 = profile.key_rounding ? round_to(*profile.key_rounding, k1) : k1;
    const double p1 = std::exp(s1);
    const double expected = round_to(profile.probability, p1) / (1.0 + p1);
    const DType want = kernel == Kernel::Bf16P   ? DType::BF16
                       : kernel == Kernel::E4m3P ? DType::E4M3
                       : kernel == Kernel::E5m2P ? DType::E5M2
                       : kernel == Kernel::Fp32  ? DType::F32
                                                 : DType::F16;
    EXPECT_EQ(profile.probability, want) << backend.name();
    EXPECT_NEAR(c.run(backend)(0, 0, 0, 0), expected, 4 * 0x1p-24) << backend.name();
    if (want != DType::F32) {
      EXPECT_GT(std::abs(expected - 0.25), 4e-5) << "the case must tell the stages apart";
    }
  }
}

// The P·V accumulator. All scores 0 (q = 0), so p = 1 for both keys and l = 2 exactly; v0 = 1.
//  (a) v1 = 2^-12: fp16 has 1 + 2^-10 as the next value after 1, so fl16(1 + 2^-12) = 1 — the
//      running sum stalls: O = 1/2. In fp32: O = (1 + 2^-12) / 2 = 0.5 + 2^-13 exactly.
//  (b) v1 = 2^-11 + 2^-21 (exact in fp16, so no operand rounding acts): 1 + v1 lies above the
//      midpoint 1 + 2^-11, fl16 gives 1 + 2^-10: O = 0.5 + 2^-11. In fp32: 0.5 + 2^-12 + 2^-22.
TEST(EmulatedStages, ValueAccumulatorWhereDeclared) {
  struct Expect {
    Kernel kernel;
    Defect defect;
    bool f16_accumulation;
  };
  const Expect cases[] = {{Kernel::Fp32, Defect::None, false},        {Kernel::Fp16Acc, Defect::None, true},
                          {Kernel::Bf16P, Defect::None, false},       {Kernel::Ggml, Defect::None, true},
                          {Kernel::Fp32, Defect::AccumulatorStall, true}};
  for (const Expect& e : cases) {
    Backend backend = open(e.kernel, e.defect);
    for (const auto& [v1, f16_answer, f32_answer] :
         {std::tuple{0x1p-12, 0.5, 0.5 + 0x1p-13}, std::tuple{0x1p-11 + 0x1p-21, 0.5 + 0x1p-11, 0.5 + 0x1p-12 + 0x1p-22}}) {
      HandCase c(1, 2, 1, 1);
      c.data.k(0, 0, 0, 0) = 1.0;
      c.data.k(0, 0, 1, 0) = 1.0;
      c.data.v(0, 0, 0, 0) = 1.0;
      c.data.v(0, 0, 1, 0) = v1;
      EXPECT_EQ(c.run(backend)(0, 0, 0, 0), e.f16_accumulation ? f16_answer : f32_answer) << backend.name() << " v1 = " << v1;
    }
    // What the profile says: fp16 for the healthy fp16 accumulators, fp32 for the stall defect
    // (its lie), and a separate fp32 row sum wherever P·V is declared in fp16.
    const NumericsProfile profile = *backend.profile(DType::F32);
    const bool declared_f16 = e.f16_accumulation && e.defect == Defect::None;
    EXPECT_EQ(profile.accumulator, declared_f16 ? DType::F16 : DType::F32) << backend.name();
    EXPECT_EQ(profile.row_sum_dtype(), DType::F32) << backend.name();
  }
}

// The row sum in fp32 beside an fp16 P·V accumulator: 2049 keys with equal scores and V = 1.
// fp16 integers are exact up to 2048, and fl16(2048 + 1) = 2048 (a tie, to even), so the fp16
// P·V sum stalls at 2048 while the fp32 row sum reaches 2049: O = 2048/2049 = 0.99951195…. With
// both sums in fp32, O = 2049/2049 = 1 exactly.
TEST(EmulatedStages, RowSumStaysInF32) {
  for (Kernel kernel : kKernels) {
    Backend backend = open(kernel);
    HandCase c(2, 2049, 1, 1);  // Lq = 2: emu-ggml's one-key-at-a-time path, no split
    for (std::int64_t j = 0; j < 2049; ++j) c.data.v(0, 0, j, 0) = 1.0;
    const double o = c.run(backend)(0, 0, 0, 0);
    if (rounds_operands_to_f16(kernel))
      EXPECT_NEAR(o, 2048.0 / 2049.0, 1e-7) << backend.name();
    else
      EXPECT_EQ(o, 1.0) << backend.name();
  }
}

// The accumulator stall at decode length: constant V = 10 over 8192 keys with equal scores. In
// fp16 the running sum grows by 10 while 10 exceeds half an ulp; from 16384 (ulp 16) every add
// rounds up to +16, and at 32768 (ulp 32, half-ulp 16 > 10) it stops: O = 32768 / 8192 = 4.0.
// emu-ggml at Lq = 1 splits the keys into two halves of 4096: each half stalls at 32768 on its
// own and the fp32 merge adds them, O = 65536 / 8192 = 8.0. In fp32 every partial sum is an exact
// integer below 2^24: O = 10 exactly.
TEST(EmulatedStages, AccumulatorStallsAt32768InF16) {
  struct Expect {
    Kernel kernel;
    std::int64_t q_len;
    double answer;
  };
  for (const Expect& e : {Expect{Kernel::Fp32, 2, 10.0}, Expect{Kernel::Bf16P, 2, 10.0}, Expect{Kernel::Fp16Acc, 2, 4.0},
                          Expect{Kernel::Ggml, 2, 4.0}, Expect{Kernel::Ggml, 1, 8.0}}) {
    Backend backend = open(e.kernel);
    HandCase c(e.q_len, 8192, 1, 1);
    for (std::int64_t j = 0; j < 8192; ++j) c.data.v(0, 0, j, 0) = 10.0;
    const HostTensor out = c.run(backend);
    for (std::int64_t i = 0; i < e.q_len; ++i) EXPECT_EQ(out(0, 0, i, 0), e.answer) << backend.name() << " Lq = " << e.q_len;
  }
}

// The additive mask read in fp16 (emu-ggml's mask_dtype). Scores 0 (q = 0), biases (1, 1 + 2^-12),
// v = (0, 1). fl16(1 + 2^-12) = 1: a kernel that reads the bias in fp16 sees equal scores and
// O = 0.5 exactly. Reading it in fp32, key 1 is the max: p1 = 1, p0 = fl32(e^(-2^-12)), and
// O = 1 / (1 + e^(-2^-12)) = 0.50006104 (σ(2^-12)), whatever the accumulator, since p1 · v1 = 1.
TEST(EmulatedStages, AdditiveMaskReadInItsDeclaredDtype) {
  for (Kernel kernel : kKernels) {
    Backend backend = open(kernel);
    HandCase c(1, 2, 1, 1);
    c.additive_mask();
    c.data.mask(0, 0, 0, 0) = 1.0;
    c.data.mask(0, 0, 0, 1) = 1.0 + 0x1p-12;
    c.data.v(0, 0, 1, 0) = 1.0;
    const NumericsProfile profile = *backend.profile(DType::F32);
    if (kernel == Kernel::Ggml) {
      EXPECT_EQ(profile.mask_dtype, DType::F16);
      // 1 + 2^-12 is no fp16 value: the harness refuses to hand it over unrounded (the reference
      // would see another bias than the kernel), and rounded (to 1, ties to even) both keys weigh
      // the same: O = (0 + 1)/2.
      EXPECT_THROW((void)c.run(backend), std::invalid_argument);
      HandCase rounded = c;
      round_additive_mask(rounded.problem, rounded.data, *profile.mask_dtype);
      EXPECT_EQ(rounded.data.mask(0, 0, 0, 1), 1.0);
      EXPECT_EQ(rounded.run(backend)(0, 0, 0, 0), 0.5);
    } else {
      const double o = c.run(backend)(0, 0, 0, 0);
      EXPECT_FALSE(profile.mask_dtype.has_value()) << backend.name();
      EXPECT_NEAR(o, 1.0 / (1.0 + std::exp(-0x1p-12)), 2e-7) << backend.name();
    }
  }
}

// --- emu-ggml's three paths, declared per problem ----------------------------------------------

TEST(EmulatedGgml, ProblemProfileNamesThePathForwardTakes) {
  Backend backend = open(Kernel::Ggml);
  ASSERT_TRUE(backend.has_problem_profiles());
  auto profile = [&](std::int64_t q_len, std::int64_t k_len) {
    return *backend.profile(Problem::of_shape(1, 1, 1, q_len, k_len, 64, 64), DType::F16);
  };
  // Lq < 64: one key at a time, V accumulated in fp16, row sum in fp32.
  const NumericsProfile short_rows = profile(8, 100);
  EXPECT_EQ(short_rows.softmax_block, 1);
  EXPECT_EQ(short_rows.accumulator, DType::F16);
  EXPECT_EQ(short_rows.row_sum_dtype(), DType::F32);
  EXPECT_LE(short_rows.kv_splits, 1);
  // Lq ≥ 64: 64-key tiles, everything accumulated in fp32.
  const NumericsProfile tiled = profile(64, 100);
  EXPECT_EQ(tiled.softmax_block, 64);
  EXPECT_EQ(tiled.accumulator, DType::F32);
  EXPECT_EQ(tiled.probability, DType::F32);
  // Decode over ≥ 512 keys: two halves merged.
  EXPECT_EQ(profile(1, 512).kv_splits, 2);
  EXPECT_LE(profile(1, 511).kv_splits, 1);
  EXPECT_LE(profile(2, 4096).kv_splits, 1);
  // Every path rounds Q, K, V and the mask to fp16 and writes fp32.
  for (const NumericsProfile& p : {short_rows, tiled, profile(1, 4096)}) {
    EXPECT_EQ(p.query_rounding, DType::F16);
    EXPECT_EQ(p.key_rounding, DType::F16);
    EXPECT_EQ(p.value_rounding, DType::F16);
    EXPECT_EQ(p.mask_dtype, DType::F16);
    EXPECT_EQ(p.output, DType::F32);
  }
}

// The tiled path really accumulates in fp32: the stall case of ValueAccumulatorWhereDeclared (a)
// at Lq = 64 gives 0.5 + 2^-13 in every row, where the one-key path gives 0.5.
TEST(EmulatedGgml, TiledPathAccumulatesInF32) {
  Backend backend = open(Kernel::Ggml);
  for (const auto& [q_len, answer] : {std::pair{std::int64_t{63}, 0.5}, std::pair{std::int64_t{64}, 0.5 + 0x1p-13}}) {
    HandCase c(q_len, 2, 1, 1);
    c.data.v(0, 0, 0, 0) = 1.0;
    c.data.v(0, 0, 1, 0) = 0x1p-12;
    const HostTensor out = c.run(backend);
    for (std::int64_t i = 0; i < q_len; ++i) ASSERT_EQ(out(0, 0, i, 0), answer) << "Lq = " << q_len << " row " << i;
  }
}

// --- planted defects ----------------------------------------------------------------------------

// Two keys, Dk = 1, q = 1, k = (0, 1), v = (0, 1), scale 1: O = σ(scale) = 0.73105858 healthy
// (emu-fp32, all fp32), σ(1 + 2^-10) = 0.73105858 + σ'(1)·2^-10 = +1.92e-4 with the scale defect.
TEST(EmulatedDefects, ScaleDefectMultipliesTheScaleBy1Plus2ToTheMinus10) {
  HandCase c(1, 2, 1, 1);
  c.data.q(0, 0, 0, 0) = 1.0;
  c.data.k(0, 0, 1, 0) = 1.0;
  c.data.v(0, 0, 1, 0) = 1.0;
  Backend healthy = open(Kernel::Fp32), defective = open(Kernel::Fp32, Defect::Scale);
  auto sigma = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  EXPECT_NEAR(c.run(healthy)(0, 0, 0, 0), sigma(1.0), 2e-7);
  EXPECT_NEAR(c.run(defective)(0, 0, 0, 0), sigma(1.0 + 0x1p-10), 2e-7);
  EXPECT_EQ(defective.name(), "emu-fp32+scale");
}

// Three keys with V = (1, 2, 4) and equal scores: O = 7/3 healthy; without the last key, 3/2.
// Causal, Lq = Lk = 3 top-left, V = (1, 2, 4): row i averages keys 0..i — (1, 3/2, 7/3); off by
// one (j < i) row 0 is empty (O = 0) and rows 1, 2 average keys 0..i−1 — (0, 1, 3/2).
TEST(EmulatedDefects, DroppedKeyAndCausalOffByOne) {
  for (Kernel kernel : kKernels) {
    HandCase c(3, 3, 1, 1);
    for (std::int64_t j = 0; j < 3; ++j) c.data.v(0, 0, j, 0) = std::ldexp(1.0, static_cast<int>(j));
    Backend healthy = open(kernel), dropped = open(kernel, Defect::DroppedKey);
    EXPECT_NEAR(c.run(healthy)(0, 0, 0, 0), 7.0 / 3.0, 2e-3) << healthy.name();  // fp16 output rounding at most
    EXPECT_EQ(c.run(dropped)(0, 0, 0, 0), 1.5) << dropped.name();
    c.problem.causal = true;
    Backend off_by_one = open(kernel, Defect::CausalOffByOne);
    const HostTensor good = c.run(healthy), bad = c.run(off_by_one);
    const double want_good[] = {1.0, 1.5, 7.0 / 3.0}, want_bad[] = {0.0, 1.0, 1.5};
    for (std::int64_t i = 0; i < 3; ++i) {
      EXPECT_NEAR(good(0, 0, i, 0), want_good[i], 2e-3) << healthy.name() << " row " << i;
      EXPECT_EQ(bad(0, 0, i, 0), want_bad[i]) << off_by_one.name() << " row " << i;
    }
  }
}

// --- agreement with the reference within the declared τ ----------------------------------------

/// Problems covering every option the suite draws, each small enough to run in milliseconds.
std::vector<AttentionCase> option_cases() {
  std::vector<AttentionCase> cases;
  auto add = [&](Problem p, ValueKind values = ValueKind::Gaussian, bool sequence_major = false, bool poison = false) {
    AttentionCase c;
    c.problem = with_fp32_parameters(p);
    c.values = values;
    c.sequence_major = sequence_major;
    c.poison_masked = poison;
    c.seed = 1000 + cases.size();
    cases.push_back(c);
  };
  const Problem mha = Problem::of_shape(2, 4, 4, 9, 70, 16, 8);
  add(mha);
  add(with_causal(mha, Alignment::BottomRight));
  add(with_causal(Problem::of_shape(1, 2, 2, 70, 70, 32, 32), Alignment::TopLeft));  // emu-ggml's tiled path
  add(with_causal(Problem::of_shape(1, 4, 2, 5, 40, 8, 8), Alignment::Offset, 30));
  add(with_mask(mha, MaskKind::Boolean, 2, 1, 9, 70), ValueKind::Gaussian, false, true);
  add(with_mask(mha, MaskKind::Additive, 1, 4, 1, 70));
  add(with_window(with_causal(mha, Alignment::BottomRight), 20, 0));
  add(with_window(mha, 5, 7));
  Problem capped = mha;
  capped.softcap = 5.0;
  add(capped, ValueKind::LargeLogits);
  Problem lengths = with_alignment(Problem::of_shape(3, 2, 1, 4, 60, 16, 16), Alignment::KeyLengths);
  lengths.has_key_lengths = true;
  lengths.causal = true;
  add(lengths, ValueKind::Gaussian, false, true);
  add(Problem::of_shape(1, 8, 2, 1, 600, 64, 64));  // GQA decode: emu-ggml's split path
  add(mha, ValueKind::Ties, true);
  add(mha, ValueKind::OneHotV);
  return cases;
}

// Every healthy kernel, every dtype it takes, every option above: within the τ its own profile
// derives. The defect test below shows the same check fails when the arithmetic is wrong.
TEST(EmulatedAgreement, HealthyKernelsAgreeWithTheReferenceWithinTheirDeclaredTau) {
  for (Kernel kernel : kKernels) {
    Backend backend = open(kernel);
    for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
      if (!backend.profile(dtype)) {
        EXPECT_TRUE(rounds_operands_to_f16(kernel) && dtype == DType::BF16) << backend.name() << " declines " << dtype_name(dtype);
        continue;
      }
      for (AttentionCase c : option_cases()) {
        c.dtype = dtype;
        const CaseCheck check = check_case(backend, c, make_case_data(c));
        ASSERT_FALSE(check.declined) << backend.name() << " declined " << c.describe() << ": " << *check.declined;
        EXPECT_TRUE(check.passed()) << backend.name() << " on " << c.describe() << ": " << check.report();
      }
    }
  }
}

// The defects are defects: each fails the same check on at least one of these cases.
TEST(EmulatedAgreement, EveryPlantedDefectFailsConformanceSomewhere) {
  for (Defect defect : {Defect::Scale, Defect::DroppedKey, Defect::CausalOffByOne, Defect::AccumulatorStall}) {
    Backend backend = open(Kernel::Fp32, defect);
    bool caught = false;
    for (AttentionCase c : option_cases()) caught = caught || !check_case(backend, c, make_case_data(c)).passed();
    EXPECT_TRUE(caught) << backend.name() << " passed every case in f32";
  }
}

TEST(EmulatedNames, ParseAndPrintAgree) {
  for (Kernel kernel : kKernels) EXPECT_EQ(emulated::parse_kernel(emulated::kernel_name(kernel)), kernel);
  for (Defect defect : {Defect::None, Defect::Scale, Defect::DroppedKey, Defect::CausalOffByOne, Defect::AccumulatorStall})
    EXPECT_EQ(emulated::parse_defect(emulated::defect_name(defect)), defect);
  EXPECT_FALSE(emulated::parse_kernel("emu-fp8"));
  Backend stalled = open(Kernel::Fp16Acc, Defect::AccumulatorStall);
  EXPECT_EQ(stalled.name(), "emu-fp16-acc+accumulator-stall");
  // A dtype the kernel does not take is declined with the kernel's reason, not computed.
  const auto reason = open(Kernel::Ggml).unsupported_reason(Problem::of_shape(1, 1, 1, 1, 1, 1, 1), DType::BF16);
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("emu-ggml takes float32, float16 inputs, not bfloat16"), std::string::npos) << *reason;
}

// FlashAttention 3's fp8 forward as emulated: e4m3 inputs with descales, P in e4m3 for P·V. The
// healthy kernel passes fp8-reference-agreement under the quick profile (τ with u_P = 2^-4 and
// the e4m3 tail, numerics/README.md §2.14), and each planted defect is caught by it: the bound
// is not so loose that P's 4 bits hide a wrong scale or a dropped key.
TEST(EmulatedFp8, E4m3InputsWithE4m3ProbabilityPassAndPlantedDefectsFail) {
  const PropertyDef* property = nullptr;
  for (const PropertyDef& p : all_properties())
    if (p.name == "fp8-reference-agreement") property = &p;
  ASSERT_NE(property, nullptr);
  const SuiteProfile quick = *find_suite_profile("quick");
  RunSettings settings;
  settings.cases = quick.cases;
  settings.max_size = quick.max_size;
  settings.seed = 20261204;
  for (const Defect defect : {Defect::None, Defect::Scale, Defect::DroppedKey}) {
    Backend backend = open(Kernel::E4m3P, defect);
    const PropertyOutcome outcome = run_property(*property, backend, DType::E4M3, settings);
    EXPECT_EQ(outcome.status, defect == Defect::None ? OutcomeStatus::Passed : OutcomeStatus::Failed)
        << backend.name() << ": " << outcome.message;
    if (defect == Defect::None) {
      EXPECT_GE(outcome.cases_passed, settings.cases) << "every drawn case judged";
    }
  }
}

}  // namespace
}  // namespace attncheck
