// Per-problem profiles (ABI 2.1 get_problem_profile): every case is run and judged under the
// profile of the path the backend takes for that problem, a path without a supported profile is
// a decline, and a profile that breaks the contract fails with a message that says so.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "attncheck/backend_impl.h"
#include "attncheck/dtype.h"
#include "attncheck/engine.h"

namespace attncheck {
namespace {

constexpr std::int64_t kLongPath = 24;  // keys above which the test kernel takes its fp16-V path

enum class Declares {
  Honestly,          // value_rounding = f16 on the long path
  Fp32Everywhere,    // the long path's rounding left out
  DeclinesLongPath,  // no profile for the long path (kAttncheckNotSupported)
  WrongInputDtype,   // the long path's profile says input = f16 for f32 inputs
  NondeterministicLongPath,  // honest, and the long path is declared (and is) not deterministic
};

// cpu-naive, except that above kLongPath keys it rounds V to fp16 inside the kernel first (the
// values it reads; the caller's buffer is untouched): a kernel with two code paths.
class TwoPath final : public impl::BackendImpl {
 public:
  explicit TwoPath(Declares declares) : inner_(open_backend("cpu-naive")), declares_(declares) {}

  attncheck_numerics_profile profile(DLDataType input) const override {
    attncheck_numerics_profile p{};
    p.struct_size = sizeof p;
    if (inner_.table()->get_profile(inner_.table(), input, &p) != kAttncheckOk) impl::unsupported("float32 only");
    return p;
  }
  bool has_problem_profiles() const override { return true; }
  attncheck_numerics_profile problem_profile(const attncheck_problem& problem, DLDataType input) const override {
    attncheck_numerics_profile p = profile(input);
    if (problem.k_len <= kLongPath) return p;
    switch (declares_) {
      case Declares::Honestly: p.value_rounding = to_dlpack(DType::F16); break;
      case Declares::Fp32Everywhere: break;
      case Declares::DeclinesLongPath: impl::unsupported("the long path has no declared profile");
      case Declares::WrongInputDtype: p.input_dtype = to_dlpack(DType::F16); break;
      case Declares::NondeterministicLongPath:
        p.value_rounding = to_dlpack(DType::F16);
        p.deterministic = 0;
        break;
    }
    return p;
  }
  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    char reason[256] = {};
    if (inner_.table()->supports(inner_.table(), &problem, input, device, reason, sizeof reason) != kAttncheckOk)
      impl::unsupported(reason);
  }
  void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) override {
    attncheck_attention_tensors call = tensors;
    DLTensor v = *tensors.v;
    std::vector<float> rounded;
    if (problem.k_len > kLongPath) {
      // Every float the view can reach, from its first element to its last, rounded to fp16.
      std::int64_t span = 1;
      for (int d = 0; d < v.ndim; ++d) {
        std::int64_t stride = 1;
        if (v.strides != nullptr) {
          stride = v.strides[d];
        } else {
          for (int e = d + 1; e < v.ndim; ++e) stride *= v.shape[e];
        }
        span += (v.shape[d] - 1) * stride;
      }
      rounded.resize(static_cast<size_t>(span));
      std::memcpy(rounded.data(), static_cast<const char*>(v.data) + v.byte_offset, rounded.size() * sizeof(float));
      for (float& x : rounded) x = static_cast<float>(round_to(DType::F16, x));
      v.data = rounded.data();
      v.byte_offset = 0;
      call.v = &v;
    }
    if (inner_.table()->forward(inner_.table(), &problem, &call) != kAttncheckOk)
      throw std::runtime_error(inner_.table()->last_error(inner_.table()));
    // Every other call on the long path moves the first output one ulp up: run-to-run different,
    // as an atomically accumulated split-KV path is, and far inside τ.
    if (declares_ == Declares::NondeterministicLongPath && problem.k_len > kLongPath && ++long_calls_ % 2 == 0) {
      float* out = reinterpret_cast<float*>(static_cast<char*>(tensors.out->data) + tensors.out->byte_offset);
      *out = std::nextafter(*out, INFINITY);
    }
  }

 private:
  Backend inner_;
  Declares declares_;
  int long_calls_ = 0;
};

Backend two_path(Declares declares) {
  return Backend(impl::make_backend_table<TwoPath>("two-path", nullptr, declares), "test");
}

const PropertyDef& property(const std::string& name) {
  for (const PropertyDef& p : all_properties())
    if (p.name == name) return p;
  throw std::logic_error(name);
}

RunSettings settings() {
  RunSettings s;
  s.cases = 40;
  s.max_size = 80;
  s.seed = 5150;
  s.shrink = false;
  s.problem_filter = [](const std::string& description) {
    return description.find("mask=additive") == std::string::npos;  // keep both paths' cases plain
  };
  return s;
}

TEST(ProblemProfiles, TheLongPathPassesUnderItsOwnDeclaredProfile) {
  Backend b = two_path(Declares::Honestly);
  ASSERT_TRUE(b.has_problem_profiles());
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Passed) << o.message;
  EXPECT_GT(o.cases_passed, 0);
}

TEST(ProblemProfiles, TheLongPathFailsWhenItsRoundingIsNotDeclared) {
  // The dtype profile is the same in both backends: only the per-problem one tells them apart.
  Backend b = two_path(Declares::Fp32Everywhere);
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Failed) << o.message;
}

TEST(ProblemProfiles, APathWithoutASupportedProfileIsADecline) {
  Backend b = two_path(Declares::DeclinesLongPath);
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Passed) << o.message;
  EXPECT_GT(o.cases_skipped, 0);
  bool named = false;
  for (const auto& [reason, count] : o.decline_reasons) named |= reason.find("get_problem_profile") != std::string::npos;
  EXPECT_TRUE(named) << "the decline does not say which entry point declined";
}

TEST(ProblemProfiles, AProfileForAnotherInputDtypeFailsWithAClearMessage) {
  Backend b = two_path(Declares::WrongInputDtype);
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Failed);
  EXPECT_NE(o.message.find("asked for f32 inputs, it declared input = f16"), std::string::npos) << o.message;
}

// The determinism promise is made per path: a backend deterministic for its dtype whose long path
// is declared not deterministic is judged on its short path, and its long-path cases decline.
TEST(ProblemProfiles, DeterminismIsCheckedOnlyOnPathsThatPromiseIt) {
  Backend b = two_path(Declares::NondeterministicLongPath);
  ASSERT_TRUE(b.profile(DType::F32)->deterministic);
  const PropertyOutcome o = run_property(property("determinism"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Passed) << o.message;
  EXPECT_GT(o.cases_passed, 0);
  EXPECT_EQ(o.decline_reasons.count("this problem's path is not declared deterministic"), 1u);
}

}  // namespace
}  // namespace attncheck
