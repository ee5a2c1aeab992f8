// The backward family under the engine: the nine properties, where they run, that the built-in
// fp32 backward (cpu-naive) passes them in the quick profile, that a backend without a backward
// pass skips them with the reason, that a wrong gradient fails as a gradient finding with its
// case and reproduce command, and the pair comparison of two backward runs.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "attncheck/backend_impl.h"
#include "attncheck/engine.h"
#include "common.h"  // properties/families: compare_gradient_pair

namespace attncheck {
namespace {

// The nine properties of families/backward.cpp, in their registration order.
const std::vector<std::string> kBackwardProperties = {
    "backward-agreement",      "key-gradients-sum-to-zero",          "key-shift-leaves-dq",
    "gradients-linear-in-dout", "unreachable-keys-get-zero-gradient", "gqa-backward-is-summed-mha",
    "query-rows-independent-in-backward", "backward-determinism",  "backward-robustness"};

const PropertyDef& property(const std::string& name) {
  for (const PropertyDef& p : all_properties())
    if (p.name == name) return p;
  throw std::logic_error(name);
}

RunSettings quick() {
  const SuiteProfile quick = *find_suite_profile("quick");
  RunSettings s;
  s.cases = quick.cases;
  s.max_size = quick.max_size;
  s.sizes = quick.sizes;
  s.seed = 24301;  // the command line's default seed
  return s;
}

TEST(BackwardFamily, NinePropertiesThatNeedABackwardPassRunRightAfterDeterminism) {
  const std::vector<PropertyDef>& all = all_properties();
  std::vector<std::string> names;
  for (const PropertyDef& p : all)
    if (p.family == "backward") {
      names.push_back(p.name);
      EXPECT_TRUE(p.needs_backward) << p.name;
      EXPECT_FALSE(p.needs_layer) << p.name;
    }
  EXPECT_EQ(names, kBackwardProperties);
  // Outside the family, only the inference family's backward check of ALiBi and sinks.
  for (const PropertyDef& p : all)
    if (p.family != "backward") {
      EXPECT_EQ(p.needs_backward, p.name == "inference-options-backward") << p.name;
    }
  // registry.cpp's run order: conformance, determinism, then the backward family.
  const auto determinism =
      std::find_if(all.begin(), all.end(), [](const PropertyDef& p) { return p.name == "determinism"; });
  ASSERT_NE(determinism, all.end());
  ASSERT_LT(std::distance(all.begin(), determinism) + 1, static_cast<std::ptrdiff_t>(all.size()));
  EXPECT_EQ((determinism + 1)->name, kBackwardProperties.front());
}

// cpu-naive's fp32 backward (one fp32 running sum per gradient element, backends/cpu-naive) is
// the readable one every other backward is compared with: it must pass all nine, judging every
// case RapidCheck asks for (cpu-naive takes every fp32 problem the generators draw).
TEST(BackwardFamily, CpuNaivePassesEveryBackwardPropertyInTheQuickProfile) {
  const RunSettings settings = quick();
  Backend backend = open_backend("cpu-naive");
  ASSERT_TRUE(backend.has_backward());
  for (const std::string& name : kBackwardProperties) {
    const PropertyOutcome outcome = run_property(property(name), backend, DType::F32, settings);
    EXPECT_EQ(outcome.status, OutcomeStatus::Passed) << name << ": " << outcome.message << "\n  case: " << outcome.shrunk_case;
    EXPECT_EQ(outcome.cases_passed, settings.cases) << name << ": " << outcome.message;
    EXPECT_LE(outcome.worst_ratio, 1.0) << name << " at " << outcome.worst_case;
    std::cout << fmt::format("  {}: {} cases, worst bound ratio {:.3g}\n", name, outcome.cases_passed, outcome.worst_ratio);
  }
}

// A kernel with a forward only: profile and supports for fp32, never called beyond them.
class ForwardOnly final : public impl::BackendImpl {
 public:
  attncheck_numerics_profile profile(DLDataType) const override { return to_abi(NumericsProfile{}); }
  void check_supported(const attncheck_problem&, DLDataType, DLDeviceType) const override {}
  void forward(const attncheck_problem&, const attncheck_attention_tensors&) override {
    impl::unsupported("never called: the backward properties skip before any case");
  }
};

TEST(BackwardFamily, ABackendWithoutABackwardPassSkipsAllNineWithTheReason) {
  Backend backend(impl::make_backend_table<ForwardOnly>("forward-only", "no backward pass"), "test");
  ASSERT_FALSE(backend.has_backward());
  for (const std::string& name : kBackwardProperties) {
    const PropertyOutcome outcome = run_property(property(name), backend, DType::F32, quick());
    EXPECT_EQ(outcome.status, OutcomeStatus::Skipped) << name;
    EXPECT_EQ(outcome.message, "the backend has no backward pass") << name;
    EXPECT_EQ(outcome.cases_passed, 0) << name;
  }
}

// cpu-naive behind a wrapper whose backward adds 1/64 to dK of key 0 in every column: the classic
// stale-accumulator bug. Its forward is cpu-naive's own.
class StaleKeyGradient final : public impl::BackendImpl {
 public:
  StaleKeyGradient() : inner_(open_backend("cpu-naive")) {}
  attncheck_numerics_profile profile(DLDataType input) const override {
    attncheck_numerics_profile p{};
    p.struct_size = sizeof p;
    if (inner_.table()->get_profile(inner_.table(), input, &p) != kAttncheckOk) impl::unsupported("float32 only");
    return p;
  }
  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    char reason[256] = {};
    if (inner_.table()->supports(inner_.table(), &problem, input, device, reason, sizeof reason) != kAttncheckOk)
      impl::unsupported(reason);
  }
  void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) override {
    if (inner_.table()->forward(inner_.table(), &problem, &tensors) != kAttncheckOk)
      throw std::runtime_error(inner_.table()->last_error(inner_.table()));
  }
  bool has_backward() const override { return true; }
  attncheck_backward_profile backward_profile(const attncheck_problem& problem, DLDataType input) const override {
    attncheck_backward_profile p{};
    p.struct_size = sizeof p;
    if (inner_.table()->get_backward_profile(inner_.table(), &problem, input, &p) != kAttncheckOk)
      impl::unsupported("float32 only");
    return p;
  }
  void backward(const attncheck_problem& problem, const attncheck_backward_tensors& tensors) override {
    if (inner_.table()->backward(inner_.table(), &problem, &tensors) != kAttncheckOk)
      throw std::runtime_error(inner_.table()->last_error(inner_.table()));
    const DLTensor& dk = *tensors.dk;  // [B, Hkv, Lk, Dk] float32, any strides
    const std::array<std::int64_t, 4> compact{dk.shape[1] * dk.shape[2] * dk.shape[3], dk.shape[2] * dk.shape[3], dk.shape[3], 1};
    auto* base = reinterpret_cast<float*>(static_cast<char*>(dk.data) + dk.byte_offset);
    for (std::int64_t b = 0; b < dk.shape[0]; ++b)
      for (std::int64_t g = 0; g < dk.shape[1]; ++g)
        for (std::int64_t d = 0; d < dk.shape[3]; ++d) {
          std::int64_t at = 0;
          const std::int64_t index[4] = {b, g, 0, d};
          for (int axis = 0; axis < 4; ++axis) at += index[axis] * (dk.strides ? dk.strides[axis] : compact[axis]);
          base[at] += 1.0f / 64;
        }
  }

 private:
  Backend inner_;
};

TEST(BackwardFamily, AWrongKeyGradientFailsAsAGradientFindingWithItsCaseAndReproduceCommand) {
  Backend backend(impl::make_backend_table<StaleKeyGradient>("stale-key-gradient", "dK of key 0 off by 1/64"), "test");
  // Caught by the reference and by the identity Σ_j dK_j = 0 alike: 1/64 is far outside any τ of
  // an fp32 backward (every other gradient is cpu-naive's and within τ).
  for (const std::string& name : std::vector<std::string>{"backward-agreement", "key-gradients-sum-to-zero"}) {
    const PropertyOutcome outcome = run_property(property(name), backend, DType::F32, quick());
    ASSERT_EQ(outcome.status, OutcomeStatus::Failed) << name << " passed a dK off by 1/64";
    ASSERT_FALSE(outcome.failures.empty());
    const FailureFinding& finding = outcome.failures.front();
    EXPECT_EQ(finding.kind, FailureKind::Gradient) << finding.message;
    EXPECT_NE(finding.message.find("dK"), std::string::npos) << finding.message;
    // The 1-minimal case: one key, one column is enough (exact dK = 0 there: P = 1, dS = dO·V − dO·O = 0).
    EXPECT_NE(finding.minimal_case.find("Lk=1 "), std::string::npos) << finding.minimal_case;
    const std::string command = finding_reproduce_command(outcome, finding, "stale-key-gradient");
    EXPECT_NE(command.find(fmt::format("--property '^{}$'", name)), std::string::npos) << command;
    EXPECT_NE(command.find("--case"), std::string::npos) << command;
    std::cout << fmt::format("  {}: {}\n    case: {}\n    reproduce: {}\n", name, finding.message, finding.minimal_case,
                             command);
  }
}

HostTensor one(double x) { return HostTensor({1, 1, 1, 1}, x); }

AttentionGradients gradients(double q, double k, double v) { return {one(q), one(k), one(v), std::nullopt}; }
GradientBounds bounds(double q, double k, double v) { return {one(q), one(k), one(v), std::nullopt}; }

// Hand-computed: |1 − 1.25| = 0.25 against τ + τ′ = 0.1 + 0.1 is a ratio of 1.25; dK and dV agree
// exactly (ratio 0); NaN on both sides is the same convention on both sides.
TEST(BackwardFamily, ThePairComparisonBoundsEachElementByTheSumOfBothTaus) {
  const GradientVerdict agree =
      props::compare_gradient_pair(gradients(1.0, 2.0, NAN), bounds(0.1, 0.1, 0.1), gradients(1.15, 2.0, NAN), bounds(0.1, 0.1, 0.1));
  EXPECT_TRUE(agree.passed) << agree.failure;
  EXPECT_NEAR(agree.max_ratio, 0.75, 1e-12);  // 0.15 / 0.2
  EXPECT_EQ(agree.worst, "dQ[0, 0, 0, 0]");

  const GradientVerdict apart =
      props::compare_gradient_pair(gradients(1.0, 2.0, 3.0), bounds(0.1, 0.1, 0.1), gradients(1.25, 2.0, 3.0), bounds(0.1, 0.1, 0.1));
  EXPECT_FALSE(apart.passed);
  EXPECT_NEAR(apart.max_ratio, 1.25, 1e-12);
  EXPECT_NEAR(apart.ratio_q, 1.25, 1e-12);
  EXPECT_EQ(apart.ratio_k, 0.0);
  EXPECT_NE(apart.failure.find("dQ[0, 0, 0, 0]"), std::string::npos) << apart.failure;

  const GradientVerdict one_nan =
      props::compare_gradient_pair(gradients(1.0, 2.0, 3.0), bounds(0.1, 0.1, 0.1), gradients(1.0, 2.0, NAN), bounds(0.1, 0.1, 0.1));
  EXPECT_FALSE(one_nan.passed);
  EXPECT_EQ(one_nan.worst, "dV[0, 0, 0, 0]");

  const GradientVerdict infinite =
      props::compare_gradient_pair(gradients(1.0, 2.0, 3.0), bounds(0.1, INFINITY, 0.1), gradients(1.0, 2.0, 3.0), bounds(0.1, 0.1, 0.1));
  EXPECT_FALSE(infinite.passed);
  EXPECT_NE(infinite.failure.find("refused"), std::string::npos) << infinite.failure;
}

}  // namespace
}  // namespace attncheck
