// Tests of the tolerance model itself (numerics/README.md §2–§5): emulated healthy kernels must
// stay below ratio 1, and the defects of §5.2 must be caught where that section says they are.
//
// False-alarm budget. τ's probabilistic terms (λ = 10) fail with probability ≤ 2N·e^{-λ²/2}
// per sum [HM, IZ]: ≤ 2·8320·e^{-50} ≈ 3.2e-18 at the largest N here (n = 8192, B_c = 32:
// N = 8192 + 256 = 8448 gives 3.3e-18). Each element has at most three such sums (P rounding,
// P·V, row sum). The healthy tests below check 9 specs × 3 sizes × 3 seeds × 8 rows × 128
// columns = 82,944 elements, plus the healthy runs beside each defect (< 2e5 in all), so the
// expected number of per-element false alarms is < 2e5 · 3 · 3.3e-18 ≈ 2e-12. The aggregate
// check's budget is 2^-30 ≈ 9.3e-10 per verdict (CompareOptions); with < 100 healthy verdicts
// its expected false alarms are < 1e-7. Data come from fixed seeds, so a run is also exactly
// repeatable: these numbers say how unlikely it was that a seed should be a false alarm.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <utility>

#include "attncheck/tolerance.h"
#include "sim_kernels.h"

namespace attncheck {
namespace {

using sim::Defect;
using sim::KernelSpec;

// ---------------------------------------------------------------------------------------------
// The formulas at a point where every term can be computed by hand.

// One key (n = 1): p = 1, O = V, A_j = |V_j|, W_j = 2|V_j|, every centred statistic is 0, so
// E_L = 0 and τ = E_P + E_A + E_ref + output with, for an fp32 three-pass RN profile,
// E_P = tail 2^-125·1·max|V_j| (u_P = 0: P is not re-rounded), N = 1,
// E_A = G·A + (G + 2u)|O| with G = min(γ_1(u), 10·√1·u) = γ_1(u) = u/(1−u), u = 2^-24,
// E_ref = γ_{d+1+8}(2^-53)(A + |O|), output = u(|O| + E) + 2^-150.
TEST(ToleranceModel, OneKeyMatchesTheHandDerivation) {
  Problem p;
  p.k_len = 1;
  p.qk_dim = 4;
  p.v_dim = 2;
  HostTensor q({1, 1, 1, 4}, 0.5), k({1, 1, 1, 4}, 0.25), v({1, 1, 1, 2});
  v.values = {3.0, -0.75};
  ReferenceOptions ro;
  ro.row_statistics = true;
  const AttentionInputs in{std::as_const(q).view(), std::as_const(k).view(), std::as_const(v).view(), {}, {}};
  const AttentionResult ref = reference_attention(p, in, ro);
  const ToleranceModel model(p, NumericsProfile{}, DataCharacter::GenericRandom, in);
  for (int j = 0; j < 2; ++j) {
    const double vj = std::fabs(v.values[static_cast<size_t>(j)]);
    const double u = 0x1p-24, g = u / (1 - u);
    const double e_p = 0x1p-125 * vj;
    const double e_a = g * vj + (g + 2 * u) * vj;
    const double nu_ref = (4 + 1 + 8) * 0x1p-53;
    const double e_ref = nu_ref / (1 - nu_ref) * (2 * vj);
    const double output = u * (vj + e_p + e_a + e_ref) + 0x1p-150;
    const ToleranceTerms t = model.at(ref, 0, 0, 0, j);
    EXPECT_EQ(t.logit, 0.0) << "one key: every centred statistic is 0";
    EXPECT_DOUBLE_EQ(t.probability, e_p);
    EXPECT_DOUBLE_EQ(t.accumulation, e_a);
    EXPECT_DOUBLE_EQ(t.reference, e_ref);
    EXPECT_DOUBLE_EQ(t.output, output);
    EXPECT_STREQ(t.dominant(), "accumulation");
  }
}

// P in e4m3 (§2.14): E_P = u_P(A + |O|) + η_P·T8 + 2^-125·n·max|V|, u_P = 2^-4, η_P = 2^-10
// (2^-6 under FTZ), under structured data (the deterministic form). Two keys, scores (0, −5):
// e^{−5} ≈ 6.7e-3 lies below e4m3's normal range 2^-6 but above fp16's 2^-14, so T8 = |V_2|/Z
// while the fp16 tail T is 0; P in e5m2 therefore gets no η term, P in e4m3 does.
TEST(ToleranceModel, E4m3ProbabilityChargesItsOwnSubnormalTail) {
  Problem p;
  p.k_len = 2;
  p.scale = 1.0;
  HostTensor q({1, 1, 1, 1}, 1.0), k({1, 1, 2, 1}), v({1, 1, 2, 1});
  k.values = {0.0, -5.0};
  v.values = {1.0, 8.0};
  ReferenceOptions ro;
  ro.row_statistics = true;
  const AttentionInputs in{std::as_const(q).view(), std::as_const(k).view(), std::as_const(v).view(), {}, {}};
  const AttentionResult ref = reference_attention(p, in, ro);
  const double z = 1 + std::exp(-5.0), o = (1 + 8 * std::exp(-5.0)) / z, a = o;  // V ≥ 0: A = O
  const double t8 = 8 / z, common = 0x1p-125 * 2 * 8;
  for (const auto& [dtype, u_p, eta] : {std::tuple{DType::E4M3, 0x1p-4, 0x1p-10}, std::tuple{DType::E5M2, 0x1p-3, 0.0}}) {
    for (const bool ftz : {false, true}) {
      NumericsProfile profile;
      profile.probability = dtype;
      profile.flushes_subnormals = ftz;
      const ToleranceModel model(p, profile, DataCharacter::Structured, in);
      const double tail = dtype == DType::E4M3 ? (ftz ? 0x1p-6 : eta) * t8 : 0.0;
      EXPECT_NEAR(model.at(ref, 0, 0, 0, 0).probability, u_p * (a + o) + tail + common, 1e-12 * (a + o))
          << dtype_name(dtype) << (ftz ? " with FTZ" : "");
    }
  }
}

// numerics/README.md §3's table: at N = 8192, u = 2^-24, γ_N = 4.9e-4 and 10√N·u = 5.4e-5. A
// profile with RN accumulation and random data takes the smaller; RZ or structured data the larger
// (with 2u under RZ), in E_A = G·A_j + (G + 2u)|O_j| (§2.6; three-pass: N = n).
TEST(ToleranceModel, ProbabilisticOnlyForNearestAndRandomData) {
  const sim::Case c = sim::make_case(DType::F16, 8192, 64, 2, 7, 1.0);
  const AttentionResult ref = sim::reference_of(c);
  NumericsProfile rn;
  rn.input = DType::F16;
  NumericsProfile rz = rn;
  rz.accumulation_rounding = Rounding::TowardZero;
  const ToleranceModel m_rn(c.problem, rn, DataCharacter::GenericRandom, c.inputs());
  const ToleranceModel m_structured(c.problem, rn, DataCharacter::Structured, c.inputs());
  const ToleranceModel m_rz(c.problem, rz, DataCharacter::GenericRandom, c.inputs());
  EXPECT_TRUE(m_rn.probabilistic());
  EXPECT_FALSE(m_structured.probabilistic());
  EXPECT_FALSE(m_rz.probabilistic());
  const double a = ref.stats->row_scale(0, 0, 0, 0), o = std::fabs(ref.out(0, 0, 0, 0));
  const double u = 0x1p-24, big_n = 8192;
  // [HM]'s γ̃_N(λ) = exp(λ√N·u + N·u²/(1−u)) − 1, ≈ 10√N·u = 5.4e-5 as §3's table says.
  const double g_prob = std::expm1(10 * std::sqrt(big_n) * u + big_n * u * u / (1 - u)), g_det = big_n * u / (1 - big_n * u);
  const double g_rz = big_n * 2 * u / (1 - big_n * 2 * u);
  EXPECT_DOUBLE_EQ(m_rn.at(ref, 0, 0, 0, 0).accumulation, g_prob * a + (g_prob + 2 * u) * o);
  EXPECT_DOUBLE_EQ(m_structured.at(ref, 0, 0, 0, 0).accumulation, g_det * a + (g_det + 2 * u) * o);
  EXPECT_DOUBLE_EQ(m_rz.at(ref, 0, 0, 0, 0).accumulation, g_rz * a + (g_rz + 4 * u) * o);
}

// ---------------------------------------------------------------------------------------------
// Healthy emulated kernels: max r ≤ 1 and aggregate ≤ 1 over every seed.

struct HealthyCase {
  std::string name;
  KernelSpec spec;
  double logit_std = 1.0;
};

KernelSpec flash(DType in, int block, Rounding rounding = Rounding::Nearest) {
  KernelSpec k;
  k.input = in;
  k.probability = in;
  k.output = in;
  k.block = block;
  k.rounding = rounding;
  return k;
}

std::vector<HealthyCase> healthy_cases() {
  std::vector<HealthyCase> cases;
  KernelSpec f32;
  cases.push_back({"F32ThreePass", f32});
  f32.block = 64;
  cases.push_back({"F32Online64", f32});
  cases.push_back({"F16Flash128", flash(DType::F16, 128)});
  cases.push_back({"F16Flash128LogitStd4", flash(DType::F16, 128), 4.0});
  cases.push_back({"BF16Flash64", flash(DType::BF16, 64)});
  cases.push_back({"F16Flash32TowardZero", flash(DType::F16, 32, Rounding::TowardZero)});
  cases.push_back({"BF16Flash128TowardZero", flash(DType::BF16, 128, Rounding::TowardZero)});
  // Classic three-pass with fp16 data: P stays fp32 (u_P = 0), output fp16.
  KernelSpec classic;
  classic.input = DType::F16;
  classic.output = DType::F16;
  cases.push_back({"F16ThreePassF32P", classic});
  // Eager code: fp32 GEMM, logits stored in fp16 and declared so (score = f16, Sacc = f32).
  KernelSpec eager;
  eager.input = DType::F16;
  eager.score = DType::F16;
  eager.probability = DType::F16;
  eager.output = DType::F16;
  cases.push_back({"F16EagerF16LogitsLogitStd4", eager, 4.0});
  return cases;
}

class HealthyKernel : public testing::TestWithParam<std::tuple<HealthyCase, std::int64_t>> {};

TEST_P(HealthyKernel, StaysBelowOne) {
  const auto& [hc, n] = GetParam();
  const std::int64_t d = 128;
  double worst = 0, worst_agg = 0;
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    const sim::Case c = sim::make_case(hc.spec.input, n, d, 8, seed * 7919 + static_cast<std::uint64_t>(n), hc.logit_std);
    const AttentionResult ref = sim::reference_of(c);
    const Verdict v = sim::judge(hc.spec, c, ref);
    EXPECT_TRUE(v.passed) << hc.spec.declared().describe() << " seed " << seed << ": " << v.summary();
    EXPECT_LE(v.lse_max_ratio, 1.0) << v.summary();
    EXPECT_GT(v.max_ratio, 0.0) << "the kernel made no error at all: the emulation is not exercising τ";
    worst = std::max(worst, v.max_ratio);
    worst_agg = std::max(worst_agg, v.aggregate_ratio);
  }
  RecordProperty("max_ratio", std::to_string(worst));
  std::printf("  %s n=%lld: max r = %.3g, aggregate = %.3g\n", hc.name.c_str(), static_cast<long long>(n), worst,
              worst_agg);
}

INSTANTIATE_TEST_SUITE_P(Profiles, HealthyKernel,
                         testing::Combine(testing::ValuesIn(healthy_cases()), testing::Values(512, 4096, 8192)),
                         [](const auto& test) {
                           return fmt::format("{}N{}", std::get<0>(test.param).name, std::get<1>(test.param));
                         });

// ---------------------------------------------------------------------------------------------
// Defects of numerics/README.md §5.2: each must fail its healthy profile's declaration.

struct DefectCase {
  std::string name;
  KernelSpec spec;  // the healthy kernel; spec.defect is set per case
  Defect defect;
  std::int64_t n;
  double logit_std;
  std::int64_t rows;
};

std::vector<DefectCase> defect_cases() {
  std::vector<DefectCase> cases;
  KernelSpec f32;  // fp32 three-pass; its defects round to fp16 (spec.narrow)
  const KernelSpec f16 = flash(DType::F16, 128);
  KernelSpec bf16 = flash(DType::BF16, 128);
  bf16.narrow = DType::BF16;
  for (std::int64_t n : {512, 4096, 8192}) {
    const std::string size = fmt::format("N{}", n);
    for (const auto& [name, spec] : {std::pair{std::string("F32"), f32}, std::pair{std::string("F16"), f16},
                                     std::pair{std::string("BF16"), bf16}}) {
      cases.push_back({fmt::format("{}PvAccumulatedNarrow{}", name, size), spec, Defect::PvAccumulatedNarrow, n, 1.0, 16});
      cases.push_back({fmt::format("{}QkAccumulatedNarrow{}", name, size), spec, Defect::QkAccumulatedNarrow, n, 1.0, 16});
      cases.push_back({fmt::format("{}LogitsStoredNarrowLogitStd4{}", name, size), spec, Defect::LogitsStoredNarrow, n, 4.0, 16});
    }
    // A dropped key moves O by p_k|V_kj − O_j| ~ |V|/n against τ ∝ u_P·W_j ~ u_P|V|/√n, so
    // in bf16 at large n it is caught only where the dropped key's weight is large: these seeds
    // catch it (tolerance_table: r ≥ 3.5); §7.2's identity test is the check that cannot miss.
    for (const auto& [name, spec] : {std::pair{std::string("F32"), f32}, std::pair{std::string("F16"), f16},
                                     std::pair{std::string("BF16"), bf16}})
      cases.push_back({fmt::format("{}DroppedKey{}", name, size), spec, Defect::DroppedKey, n, 1.0, 16});
    // A softmax scale off by 2^-10: τ alone catches it in fp32. With fp16 P it moves each
    // element by ~2^-10·|s|·W_j, below τ's λ·u_P·W_j; the aggregate check catches it where the
    // P-rounding noise is the larger part of the healthy error and enough elements average it
    // (64 rows; §5.1 used 128): n = 512 and 4096. At n = 8192 the coherent allowance for R = 64
    // rescales' exp errors dominates the threshold (tolerance_table: aggregate 0.92), and in
    // bf16 the defect is below the P-rounding noise itself — neither is asserted here.
    cases.push_back({fmt::format("F32ScaleOff{}", size), f32, Defect::ScaleOff, n, 1.0, 16});
    if (n <= 4096) cases.push_back({fmt::format("F16ScaleOff{}", size), f16, Defect::ScaleOff, n, 1.0, 64});
  }
  return cases;
}

class DefectiveKernel : public testing::TestWithParam<DefectCase> {};

TEST_P(DefectiveKernel, IsCaught) {
  const DefectCase& dc = GetParam();
  // The data of tolerance_table's first seed (1000 + n), so the table documents these cases.
  const sim::Case c = sim::make_case(dc.spec.input, dc.n, 128, dc.rows, 1000 + static_cast<std::uint64_t>(dc.n), dc.logit_std);
  const AttentionResult ref = sim::reference_of(c);
  KernelSpec spec = dc.spec;
  const Verdict healthy = sim::judge(spec, c, ref);
  ASSERT_TRUE(healthy.passed) << "the same data with the healthy kernel must pass: " << healthy.summary();
  spec.defect = dc.defect;
  const Verdict v = sim::judge(spec, c, ref);
  EXPECT_FALSE(v.passed) << sim::defect_name(dc.defect) << " was not caught: " << v.summary();
  EXPECT_EQ(v.failure.find("refused"), std::string::npos) << "caught for the wrong reason: " << v.failure;
  std::printf("  %s: max r = %.3g, aggregate = %.3g\n", dc.name.c_str(), v.max_ratio, v.aggregate_ratio);
}

INSTANTIATE_TEST_SUITE_P(Section5, DefectiveKernel, testing::ValuesIn(defect_cases()),
                         [](const auto& test) { return test.param.name; });

}  // namespace
}  // namespace attncheck
