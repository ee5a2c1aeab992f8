// The layer entry point (forward_layer) of every CPU backend that has one, against
// reference_layer, judged by compare_layer (numerics/layer_tolerance.h: the core τ carried
// through the backend's own projections and W_O). Inputs are harness layer cases
// (make_layer_case_data: X ~ N(0, 1), weights ~ N(0, 1/fan-in)) in fp32, run through
// run_backend_layer, so every call is also probed for out-of-bounds writes and modified inputs.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>

#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/case.h"
#include "attncheck/execute.h"
#include "attncheck/layer.h"
#include "attncheck/layer_tolerance.h"

namespace attncheck {
namespace {

struct NamedLayerCase {
  const char* name;
  LayerCase c;
};

std::vector<NamedLayerCase> layer_cases() {
  std::vector<NamedLayerCase> cases;
  auto add = [&](const char* name, Problem p, std::int64_t model_dim) -> LayerCase& {
    LayerCase c;
    p.scale = round_to(DType::F32, p.effective_scale());  // the fp32 scale both backends apply
    c.problem.attention = p;
    c.problem.model_dim = model_dim;
    c.seed = 7 + cases.size();
    cases.push_back({name, c});
    return cases.back().c;
  };
  {
    Problem p = Problem::of_shape(2, 4, 4, 13, 13, 8, 8);
    p.causal = true;
    LayerCase& c = add("SelfAttentionCausalWithBiases", p, 16);
    c.problem.has_qkv_bias = true, c.problem.has_out_bias = true;
  }
  {
    Problem p = Problem::of_shape(2, 6, 2, 7, 40, 16, 8);
    p.has_key_lengths = true;
    LayerCase& c = add("CrossAttentionGqaKeyLengths", p, 16);
    c.problem.self_attention = false;
    c.key_lengths = {40, 0};  // a full batch next to one without any key (the empty-row convention)
  }
  {
    Problem p = Problem::of_shape(1, 3, 1, 70, 70, 16, 24);
    p.window_left = 9, p.window_right = 2;
    add("SelfAttentionMqaWindow", p, 16).problem.has_out_bias = true;
  }
  return cases;
}

TEST(Layer, MatchesReferenceLayer) {
  for (const std::string name : {"cpu-naive", "cpu-flash"}) {  // this folder's CPU backends
    Backend backend = open_backend(name);
    if (!backend.has_layer()) continue;
    const auto profile = backend.profile(DType::F32);
    ASSERT_TRUE(profile.has_value());
    for (const NamedLayerCase& named : layer_cases()) {
      const LayerCase& c = named.c;
      SCOPED_TRACE(name + " " + named.name + " [" + c.describe() + "]");
      const LayerCaseData data = make_layer_case_data(c);
      const LayerInputs inputs = data.inputs(c.problem);
      ReferenceOptions options;
      options.row_statistics = true;
      options.probabilities = true;  // compare_layer needs P for the projection terms
      const LayerResult reference = reference_layer(c.problem, inputs, options);

      // Every layer tensor compact, handed with strides = NULL (the ABI's compact reading).
      RunOptions run_options;
      run_options.null_strides = true;
      const BackendRun run = run_backend_layer(backend, c.problem, *profile, inputs, run_options);
      EXPECT_TRUE(run.memory_findings.empty()) << fmt::format("memory probe: {}", fmt::join(run.memory_findings, "; "));
      const Verdict v = compare_layer(c.problem, *profile, DataCharacter::GenericRandom, inputs, reference, run.out);
      EXPECT_TRUE(v.passed) << v.failure << " | " << v.summary();
    }
  }
}

// A layer fixture whose expected output is NaN once passed verify ("max r=0, NMSE=0"): NaN
// compares false with every bound. Expected values from the double reference, then poisoned.
TEST(Layer, NonFiniteExpectedOrActualValuesFailTheComparison) {
  Backend backend = open_backend("cpu-naive");
  const auto profile = backend.profile(DType::F32);
  ASSERT_TRUE(profile.has_value());
  const LayerCase c = layer_cases().front().c;
  const LayerCaseData data = make_layer_case_data(c);
  const LayerInputs inputs = data.inputs(c.problem);
  ReferenceOptions options;
  options.row_statistics = true;
  options.probabilities = true;
  const LayerResult reference = reference_layer(c.problem, inputs, options);
  const BackendRun run = run_backend_layer(backend, c.problem, *profile, inputs);
  ASSERT_TRUE(compare_layer(c.problem, *profile, DataCharacter::GenericRandom, inputs, reference, run.out).passed);

  for (const double poison : {std::nan(""), std::numeric_limits<double>::infinity()}) {
    LayerResult corrupt = reference;
    for (double& x : corrupt.out.values) x = poison;
    const Verdict expected_side = compare_layer(c.problem, *profile, DataCharacter::GenericRandom, inputs, corrupt, run.out);
    EXPECT_FALSE(expected_side.passed) << expected_side.summary();
    EXPECT_NE(expected_side.failure.find("expected values are corrupt"), std::string::npos) << expected_side.failure;

    HostTensor bad = run.out;
    bad.values[bad.values.size() / 2] = poison;
    const Verdict actual_side = compare_layer(c.problem, *profile, DataCharacter::GenericRandom, inputs, reference, bad);
    EXPECT_FALSE(actual_side.passed) << actual_side.summary();
    EXPECT_EQ(actual_side.nonfinite_violations, 1);
  }
}

// With an fp16 accumulator, d_model = 2048 gives (d_model + 1)·2^-11 ≥ 1: γ has no finite value and
// τ bounds nothing. The verdict must be a refusal; the formula's negative γ used to pass an output
// off by 1 everywhere. The expected values are the double reference's; the corruption is +1.
TEST(Layer, AnAccumulatorTooShortForTheModelDimIsRefusedNotPassed) {
  LayerCase c;
  c.problem.attention = Problem::of_shape(1, 1, 1, 2, 2, 4, 4);
  c.problem.model_dim = 2048;
  c.seed = 3;
  const LayerCaseData data = make_layer_case_data(c);
  const LayerInputs inputs = data.inputs(c.problem);
  ReferenceOptions options;
  options.row_statistics = true;
  options.probabilities = true;
  const LayerResult reference = reference_layer(c.problem, inputs, options);
  NumericsProfile profile;
  profile.accumulator = DType::F16;
  HostTensor wrong = reference.out;
  for (double& x : wrong.values) x += 1.0;
  const Verdict v = compare_layer(c.problem, profile, DataCharacter::GenericRandom, inputs, reference, wrong);
  EXPECT_FALSE(v.passed) << v.summary();
  EXPECT_NE(v.failure.find("τ is unbounded"), std::string::npos) << v.failure;
}

}  // namespace
}  // namespace attncheck
