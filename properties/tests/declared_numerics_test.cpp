// Kernels that do exactly what they declare must pass the properties whose exact clauses depend on
// the declaration: a fast exp with exp(0) ≠ 1, P re-rounded for P·V while the row sum keeps fp32
// P, an accumulator narrower than the output, and empty rows whose zero changes sign with data
// the row never sees. Each kernel here is the double reference's weights put through the
// arithmetic its profile declares, so its only errors are the declared ones.
#include <gtest/gtest.h>

#include <cmath>
#include <fmt/format.h>

#include "attncheck/backend_handle.h"
#include "attncheck/backend_impl.h"
#include "attncheck/engine.h"
#include "attncheck/reference.h"

namespace attncheck {
namespace {

// A fast exp of the kind PyTorch's f16/bf16 CPU path uses: exp(0) = 0.99994659 in fp32, a
// relative error of 5.3e-5 < 2^-14 everywhere.
constexpr float kFastExpAtZero = 0.99994659f;

struct HonestSpec {
  DType input = DType::F32;
  DType probability = DType::F32;  ///< P as used in P·V
  DType accumulator = DType::F32;  ///< P·V accumulator
  DType row_sum = DType::F32;      ///< the row sum, over the fp32 exp results
  bool fast_exp = false;
  /// Empty rows are written as −0 when the sum of every K element is negative, else +0: the sign
  /// follows data that the row does not see, as a kernel's zero-initialised accumulator may.
  bool zero_sign_follows_k = false;
  bool declares_exact_exp = false;  ///< a false declaration: the fast exp declared exact

  NumericsProfile declared() const {
    NumericsProfile p;
    p.input = p.output = input;
    p.score = DType::F32;
    p.probability = probability;
    p.accumulator = accumulator;
    if (row_sum != accumulator) p.row_sum_accumulator = row_sum;
    p.deterministic = true;
    p.empty_row = EmptyRowConvention::Zeros;
    p.exp_relative_error = fast_exp && !declares_exact_exp ? 0x1p-14 : 0.0;
    return p;
  }
};

class HonestKernel final : public impl::BackendImpl {
 public:
  explicit HonestKernel(HonestSpec spec) : spec_(spec) {}

  attncheck_numerics_profile profile(DLDataType input) const override {
    if (from_dlpack(input) != spec_.input) impl::unsupported(fmt::format("{} inputs only", dtype_name(spec_.input)));
    return to_abi(spec_.declared());
  }

  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    impl::check_problem(problem);
    if (from_dlpack(input) != spec_.input) impl::unsupported(fmt::format("{} inputs only", dtype_name(spec_.input)));
    if (problem.mask_kind != kAttncheckMaskNone) impl::unsupported("no masks");
    if (device != kDLCPU) impl::unsupported("host memory only");
  }

  void forward(const attncheck_problem& abi_problem, const attncheck_attention_tensors& t) override {
    const Problem p = from_abi(abi_problem);
    const DLDataType dt = to_dlpack(spec_.input);
    const impl::TensorArg q = check(t.q, "q", {p.batch, p.q_heads, p.q_len, p.qk_dim}, {"batch", "heads", "length", "dim"}, {dt});
    const impl::TensorArg k = check(t.k, "k", {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {"batch", "heads", "length", "dim"}, {dt});
    const impl::TensorArg v = check(t.v, "v", {p.batch, p.kv_heads, p.k_len, p.v_dim}, {"batch", "heads", "length", "dim"}, {dt});
    const impl::TensorArg o = check(t.out, "out", {p.batch, p.q_heads, p.q_len, p.v_dim}, {"batch", "heads", "length", "dim"}, {dt});
    impl::TensorArg lengths;
    if (p.has_key_lengths) lengths = check(t.key_lengths, "key_lengths", {p.batch}, {"batch"}, {impl::kI64});
    const HostTensor qh = read(q), kh = read(k), vh = read(v);
    std::vector<std::int64_t> key_lengths;
    for (std::int64_t b = 0; p.has_key_lengths && b < p.batch; ++b) key_lengths.push_back(*lengths.at<std::int64_t>(b));
    ReferenceOptions options;
    options.probabilities = true;
    AttentionInputs inputs{qh.view(), kh.view(), vh.view(), {}, key_lengths.empty() ? std::span<const std::int64_t>{} : std::span<const std::int64_t>(key_lengths)};
    const AttentionResult ref = reference_attention(p, inputs, options);
    double k_sum = 0;
    for (double x : kh.values) k_sum += x;
    const double empty_zero = spec_.zero_sign_follows_k && k_sum < 0 ? -0.0 : 0.0;

    std::vector<double> weight(static_cast<size_t>(p.k_len));
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t h = 0; h < p.q_heads; ++h)
        for (std::int64_t i = 0; i < p.q_len; ++i) {
          // e^{s_k − m} = p_k / max p: the max key's weight is exactly 1, as exp(0) gives.
          double p_max = 0;
          for (std::int64_t key = 0; key < p.k_len; ++key) p_max = std::max(p_max, (*ref.probabilities)(b, h, i, key));
          if (p_max == 0) {
            for (std::int64_t j = 0; j < p.v_dim; ++j) write(o, b, h, i, j, empty_zero);
            continue;
          }
          double row_sum = 0;
          for (std::int64_t key = 0; key < p.k_len; ++key) {
            const auto e = static_cast<float>((*ref.probabilities)(b, h, i, key) / p_max);
            const float w = spec_.fast_exp ? e * kFastExpAtZero : e;
            weight[static_cast<size_t>(key)] = w;
            row_sum = round_to(spec_.row_sum, row_sum + w);
          }
          for (std::int64_t j = 0; j < p.v_dim; ++j) {
            double acc = 0;
            for (std::int64_t key = 0; key < p.k_len; ++key) {
              const double pk = round_to(spec_.probability, weight[static_cast<size_t>(key)]);
              const double product = round_to(DType::F32, pk * vh(b, p.kv_head_of(h), key, j));
              acc = round_to(spec_.accumulator, acc + product);
            }
            write(o, b, h, i, j, round_to(spec_.input, round_to(DType::F32, acc / row_sum)));
          }
        }
  }

 private:
  HonestSpec spec_;

  static impl::TensorArg check(const DLTensor* tensor, std::string_view name, std::initializer_list<std::int64_t> shape,
                               std::initializer_list<std::string_view> dims, std::initializer_list<DLDataType> dtypes) {
    return impl::check_tensor(tensor, name, shape, dims, dtypes, kDLCPU);
  }
  const std::byte* element(const impl::TensorArg& t, std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) const {
    if (spec_.input == DType::F32) return reinterpret_cast<const std::byte*>(t.at<float>(a, b, c, d));
    return reinterpret_cast<const std::byte*>(t.at<std::uint16_t>(a, b, c, d));
  }
  HostTensor read(const impl::TensorArg& t) const {
    HostTensor h({t.shape[0], t.shape[1], t.shape[2], t.shape[3]});
    for (std::int64_t a = 0; a < t.shape[0]; ++a)
      for (std::int64_t b = 0; b < t.shape[1]; ++b)
        for (std::int64_t c = 0; c < t.shape[2]; ++c)
          for (std::int64_t d = 0; d < t.shape[3]; ++d) h(a, b, c, d) = decode_value(spec_.input, element(t, a, b, c, d));
    return h;
  }
  void write(const impl::TensorArg& t, std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d, double x) const {
    encode_value(spec_.input, x, const_cast<std::byte*>(element(t, a, b, c, d)));
  }
};

Backend honest(const HonestSpec& spec) {
  return Backend(impl::make_backend_table<HonestKernel>("honest", "a kernel doing exactly what it declares", spec), "test");
}

const PropertyDef& property(const std::string& name) {
  for (const PropertyDef& p : all_properties())
    if (p.name == name) return p;
  throw std::logic_error(name);
}

PropertyOutcome run_quick(const std::string& name, const HonestSpec& spec) {
  const SuiteProfile quick = *find_suite_profile("quick");
  RunSettings settings;
  settings.cases = quick.cases;
  settings.max_size = quick.max_size;
  settings.seed = 20261123;
  Backend backend = honest(spec);
  return run_property(property(name), backend, spec.input, settings);
}

std::string explain(const PropertyOutcome& outcome) {
  return fmt::format("{}: {}\n  shrunk case: {}", outcome.property, outcome.message, outcome.shrunk_case);
}

// Fast exp: P rounds to 1 in f16/bf16 for P·V, the fp32 row sum is n·0.99994659, and the mean
// comes out 1 ulp off for some V. The declaration (u_E = 2^-14) says so; only a bound may apply.
TEST(DeclaredNumerics, UniformWeightsExactFollowsTheDeclaredExp) {
  for (DType dtype : {DType::F16, DType::BF16}) {
    HonestSpec spec;
    spec.input = spec.probability = dtype;
    spec.fast_exp = true;
    const PropertyOutcome outcome = run_quick("uniform-weights-exact", spec);
    EXPECT_EQ(outcome.status, OutcomeStatus::Passed) << dtype_name(dtype) << " " << explain(outcome);
    EXPECT_GT(outcome.cases_passed, 0);
  }
}

// The exact clause still holds, bitwise, for a kernel declaring an exact exp: the same fast-exp
// kernel declaring u_E = 0 is caught (the property can still fail).
TEST(DeclaredNumerics, UniformWeightsExactCatchesAFastExpDeclaredExact) {
  HonestSpec spec;
  spec.input = spec.probability = DType::F16;
  spec.fast_exp = true;
  spec.declares_exact_exp = true;
  const PropertyOutcome outcome = run_quick("uniform-weights-exact", spec);
  EXPECT_EQ(outcome.status, OutcomeStatus::Failed) << explain(outcome);
}

// P·V in fp16 into an f32 output: products p_k·V_kj below fp16's normal range 2^-14 lose bits, so
// f(2V) = 2f(V) fails there although every output is far above f32's normal range.
TEST(DeclaredNumerics, LinearityExemptionFollowsTheAccumulator) {
  HonestSpec spec;
  spec.input = DType::F32;
  spec.probability = spec.accumulator = spec.row_sum = DType::F16;
  const PropertyOutcome outcome = run_quick("linearity-in-v", spec);
  EXPECT_EQ(outcome.status, OutcomeStatus::Passed) << explain(outcome);
  EXPECT_GT(outcome.cases_passed, 0);
}

TEST(DeclaredNumerics, IdentityValuesFollowsTheDeclaredExp) {
  for (DType dtype : {DType::F16, DType::BF16}) {
    HonestSpec spec;
    spec.input = spec.probability = dtype;
    spec.fast_exp = true;
    const PropertyOutcome outcome = run_quick("identity-values", spec);
    EXPECT_EQ(outcome.status, OutcomeStatus::Passed) << dtype_name(dtype) << " " << explain(outcome);
    EXPECT_GT(outcome.cases_passed, 0);
  }
}

// An empty row is +0 in one problem and −0 in the other: the same zero, not a change.
TEST(DeclaredNumerics, CausalPrefixIgnoresTheSignOfAnEmptyRowsZero) {
  HonestSpec spec;
  spec.zero_sign_follows_k = true;
  const PropertyOutcome outcome = run_quick("causal-prefix", spec);
  EXPECT_EQ(outcome.status, OutcomeStatus::Passed) << explain(outcome);
  EXPECT_GT(outcome.cases_passed, 0);
}

}  // namespace
}  // namespace attncheck
