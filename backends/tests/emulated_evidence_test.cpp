// The statements the emulated kernels exist to prove, each on the case that states it: a
// ggml-like kernel that declares its real stages conforms at decode length while the accuracy
// verdict flags its fp16 accumulation, an fp32-accumulating kernel on the same fp16 inputs is not
// flagged, and a planted 2^-10 scale error is caught by the accuracy verdict at Lk = 4096. The
// accuracy verdict is the suite's (accuracy.h) with factor 4.
#include <gtest/gtest.h>

#include "evidence.h"

namespace attncheck::evidence {
namespace {

using emulated::Defect;
using emulated::Kernel;

constexpr double kAccuracyFactor = 4.0;

// Lq = 2, Lk = 8192 with diffuse weights (the case where ggml's F16 path returns ≈ 0.75 for
// ≈ 0.98): emu-ggml takes its one-key-at-a-time path and accumulates V in fp16 over 8192 keys.
TEST(EmulatedEvidence, AccuracyFlagsGgmlFp16AccumulationAtLk8192ButNotFp32Accumulation) {
  EvidenceCell cell(evidence_case(2, 8192, ValueClass::Diffuse, DType::F16, 11), ValueClass::Diffuse);
  const Judgement ggml = cell.judge(Kernel::Ggml, Defect::None);
  ASSERT_FALSE(ggml.declined) << *ggml.declined;
  EXPECT_TRUE(ggml.conforms) << "emu-ggml declares its stages and must conform: " << ggml.failure;
  EXPECT_TRUE(ggml.accuracy_flagged(kAccuracyFactor))
      << "accuracy ratios max " << ggml.accuracy_max << ", aggregate " << ggml.accuracy_aggregate;
  const Judgement fp32 = cell.judge(Kernel::Fp32, Defect::None);
  ASSERT_FALSE(fp32.declined) << *fp32.declined;
  EXPECT_TRUE(fp32.conforms) << fp32.failure;
  EXPECT_FALSE(fp32.accuracy_flagged(kAccuracyFactor))
      << "accuracy ratios max " << fp32.accuracy_max << ", aggregate " << fp32.accuracy_aggregate;
}

// Constant V = 10 over 8192 tied keys: the fp16 running sum stalls at 32768, O = 4.0 instead of
// 10 (EmulatedStages.AccumulatorStallsAt32768InF16 derives it). Declared, the stall is within τ;
// the accuracy verdict flags it; declared as fp32 accumulation (the stall defect), conformance
// fails too.
TEST(EmulatedEvidence, ConstantVStallIsDeclaredByGgmlAndADefectWhenFp32IsDeclared) {
  EvidenceCell cell(evidence_case(2, 8192, ValueClass::ConstantV, DType::F16, 12), ValueClass::ConstantV);
  const Judgement ggml = cell.judge(Kernel::Ggml, Defect::None);
  EXPECT_TRUE(ggml.conforms) << ggml.failure;
  EXPECT_TRUE(ggml.accuracy_flagged(kAccuracyFactor));
  const Judgement stalled = cell.judge(Kernel::Fp32, Defect::AccumulatorStall);
  EXPECT_FALSE(stalled.conforms) << "an fp16 running sum declared as fp32 must fail conformance";
}

// scale × (1 + 2^-10) at Lk = 4096 on fp16 inputs, on emu-ggml's tiled path (Lq = 64: fp32
// accumulation, fp32 output): the healthy path is as accurate as the baseline, the planted error
// moves O by ≈ 2^-10 · (Σ p_k²)^½ ≈ 2e-5 against a baseline error of a few 2^-24. With an fp16
// output the half-ulp floor of the accuracy measure (≈ 3e-5 at |O| ≈ 0.1) is of the planted
// error's size (numerics/README.md §4.5), so the statement is about a kernel that writes fp32.
TEST(EmulatedEvidence, AccuracyCatchesAPlantedScaleErrorAtLk4096InF16) {
  EvidenceCell cell(evidence_case(64, 4096, ValueClass::Gaussian, DType::F16, 13), ValueClass::Gaussian);
  const Judgement healthy = cell.judge(Kernel::Ggml, Defect::None);
  EXPECT_TRUE(healthy.conforms) << healthy.failure;
  EXPECT_FALSE(healthy.accuracy_flagged(kAccuracyFactor)) << healthy.accuracy_max << " " << healthy.accuracy_aggregate;
  const Judgement scaled = cell.judge(Kernel::Ggml, Defect::Scale);
  EXPECT_TRUE(scaled.accuracy_flagged(kAccuracyFactor))
      << "accuracy ratios max " << scaled.accuracy_max << ", aggregate " << scaled.accuracy_aggregate;
}

}  // namespace
}  // namespace attncheck::evidence
