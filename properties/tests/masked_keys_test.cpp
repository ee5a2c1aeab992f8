// The declarable masked-key convention (ABI 2.1 masked_keys_weighted_by_zero): a kernel that
// weights masked keys by zero instead of skipping them lets NaN or Inf in masked K/V through
// (0·NaN = NaN). Strict by default: such a kernel fails the poisoning properties. Declared, the
// suite poisons with finite values only — and finite garbage that reaches the output still fails.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "attncheck/backend_impl.h"
#include "attncheck/dtype.h"
#include "attncheck/engine.h"

namespace attncheck {
namespace {

enum class Leak {
  NaNTimesZero,   // any non-finite V makes every output NaN, as a zero weight times NaN does
  FiniteGarbage,  // ±huge finite V in a masked key shifts every output by 1
};

// Calls f(value&) for every element of a 4-d float32 tensor, through its strides.
void for_each_f32(const DLTensor& t, const std::function<void(float&)>& f) {
  std::int64_t strides[4];
  for (int d = 3, s = 1; d >= 0; --d) {
    strides[d] = t.strides != nullptr ? t.strides[d] : s;
    s *= static_cast<int>(t.shape[d]);
  }
  auto* base = reinterpret_cast<float*>(static_cast<char*>(t.data) + t.byte_offset);
  for (std::int64_t a = 0; a < t.shape[0]; ++a)
    for (std::int64_t b = 0; b < t.shape[1]; ++b)
      for (std::int64_t c = 0; c < t.shape[2]; ++c)
        for (std::int64_t d = 0; d < t.shape[3]; ++d)
          f(base[a * strides[0] + b * strides[1] + c * strides[2] + d * strides[3]]);
}

// cpu-naive whose output is then spoiled the way a kernel that weights masked keys by zero
// spoils it; the live keys' V in these properties is Gaussian, so huge or non-finite V is the
// poison of unreachable keys.
class ZeroWeighted final : public impl::BackendImpl {
 public:
  ZeroWeighted(Leak leak, bool declares) : inner_(open_backend("cpu-naive")), leak_(leak), declares_(declares) {}
  attncheck_numerics_profile profile(DLDataType input) const override {
    attncheck_numerics_profile p{};
    p.struct_size = sizeof p;
    if (inner_.table()->get_profile(inner_.table(), input, &p) != kAttncheckOk) impl::unsupported("float32 only");
    p.masked_keys_weighted_by_zero = declares_ ? 1 : 0;
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
    bool nonfinite = false, huge = false;
    for_each_f32(*tensors.v, [&](float& x) {
      nonfinite |= !std::isfinite(x);
      huge |= std::isfinite(x) && std::fabs(x) > 1e30f;
    });
    if (leak_ == Leak::NaNTimesZero && nonfinite) for_each_f32(*tensors.out, [](float& x) { x = NAN; });
    if (leak_ == Leak::FiniteGarbage && huge) for_each_f32(*tensors.out, [](float& x) { x += 1.0f; });
  }

 private:
  Backend inner_;
  Leak leak_;
  bool declares_;
};

Backend zero_weighted(Leak leak, bool declares) {
  return Backend(impl::make_backend_table<ZeroWeighted>("zero-weighted", nullptr, leak, declares), "test");
}

const PropertyDef& property(const std::string& name) {
  for (const PropertyDef& p : all_properties())
    if (p.name == name) return p;
  throw std::logic_error(name);
}

RunSettings settings() {
  RunSettings s;
  s.cases = 30;
  s.max_size = 50;
  s.seed = 8086;
  s.shrink = false;
  return s;
}

TEST(MaskedKeys, ZeroWeightingFailsStrictConformance) {
  Backend b = zero_weighted(Leak::NaNTimesZero, false);
  const PropertyOutcome o = run_property(property("padding-invariance"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Failed) << o.message;
}

TEST(MaskedKeys, ZeroWeightingPassesWhenDeclared) {
  Backend b = zero_weighted(Leak::NaNTimesZero, true);
  ASSERT_TRUE(b.profile(DType::F32)->masked_keys_weighted_by_zero);
  const PropertyOutcome o = run_property(property("padding-invariance"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Passed) << o.message;
  EXPECT_GT(o.cases_passed, 0);
}

TEST(MaskedKeys, DeclaredFiniteGarbageThatReachesTheOutputStillFails) {
  Backend b = zero_weighted(Leak::FiniteGarbage, true);
  const PropertyOutcome o = run_property(property("padding-invariance"), b, DType::F32, settings());
  EXPECT_EQ(o.status, OutcomeStatus::Failed) << o.message;
}

}  // namespace
}  // namespace attncheck
