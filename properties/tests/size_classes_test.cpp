// Which sizes the properties draw: under the standard profile every size-agnostic property reaches
// the lengths where real kernels switch code paths (Lk ≥ 512: split-KV decode; Lq ≥ 128: the
// tiled paths), and a size-specific one stays small. A backend that declines every problem and
// records it sees exactly the drawn problems, with no kernel or reference run.
#include <gtest/gtest.h>

#include <memory>

#include "attncheck/backend_handle.h"
#include "attncheck/backend_impl.h"
#include "attncheck/engine.h"
#include "attncheck/generators.h"

namespace attncheck {
namespace {

class Recorder final : public impl::BackendImpl {
 public:
  explicit Recorder(std::shared_ptr<std::vector<Problem>> seen) : seen_(std::move(seen)) {}
  attncheck_numerics_profile profile(DLDataType) const override {
    NumericsProfile p;
    p.deterministic = true;  // so that properties gated on determinism draw too
    return to_abi(p);
  }
  void check_supported(const attncheck_problem& problem, DLDataType, DLDeviceType) const override {
    seen_->push_back(from_abi(problem));
    impl::unsupported("recording only");
  }
  void forward(const attncheck_problem&, const attncheck_attention_tensors&) override { impl::unsupported("recording only"); }
  // Every option, so that the table hands ALiBi, sink, paged and packed problems to check_supported too.
  std::uint32_t options() const override {
    return impl::kOptionAlibi | impl::kOptionSinks | impl::kOptionPagedKv | impl::kOptionVarlen;
  }
  // A backward pass, so that the backward properties draw too: PropertyContext::backward_profile
  // asks check_supported first, which records the problem and declines it.
  bool has_backward() const override { return true; }

 private:
  std::shared_ptr<std::vector<Problem>> seen_;
};

std::vector<Problem> drawn(const PropertyDef& property, const SuiteProfile& profile) {
  auto seen = std::make_shared<std::vector<Problem>>();
  Backend backend(impl::make_backend_table<Recorder>("recorder", "declines and records every problem", seen), "test");
  RunSettings settings;
  settings.cases = profile.cases;
  settings.max_size = profile.max_size;
  settings.sizes = profile.sizes;
  settings.seed = 20261123;
  run_property(property, backend, DType::F32, settings);
  return *seen;
}

TEST(SizeClasses, StandardProfileReachesLongPathsInEverySizeAgnosticProperty) {
  const SuiteProfile standard = *find_suite_profile("standard");
  int checked = 0;
  for (const PropertyDef& property : all_properties()) {
    // The fp8 family draws from the same space, on e4m3 inputs, which the recorder does not take.
    if (property.needs_layer || property.fp8_inputs) continue;
    const std::vector<Problem> problems = drawn(property, standard);
    ASSERT_FALSE(problems.empty()) << property.name << " drew nothing";
    std::int64_t longest_keys = 0, longest_queries = 0;
    for (const Problem& p : problems) {
      longest_keys = std::max(longest_keys, p.k_len);
      longest_queries = std::max(longest_queries, p.q_len);
    }
    if (property.size_agnostic) {
      ++checked;
      EXPECT_GE(longest_keys, 512) << property.name << " never drew Lk ≥ 512 in " << problems.size() << " problems";
      EXPECT_GE(longest_queries, 128) << property.name << " never drew Lq ≥ 128 in " << problems.size() << " problems";
    } else {
      EXPECT_LE(std::max(longest_keys, longest_queries), 96) << property.name << " is size-specific but drew long rows";
    }
  }
  EXPECT_GE(checked, 14 + 9);  // every size-agnostic core property registered today, and the nine backward ones
}

TEST(SizeClasses, ClassOfAProblemFollowsItsLongestLength) {
  Problem p;
  p.q_len = 1;
  p.k_len = 96;
  EXPECT_EQ(size_class_of(p), SizeClass::Small);
  p.k_len = 513;
  EXPECT_EQ(size_class_of(p), SizeClass::Medium);
  p.k_len = 8192;
  EXPECT_EQ(size_class_of(p), SizeClass::Long);
  EXPECT_EQ(size_mix_for_class("small"), (SizeMix{0, 0}));
  EXPECT_EQ(size_mix_for_class("long"), (SizeMix{0, 60}));
  EXPECT_FALSE(size_mix_for_class("huge"));
}

}  // namespace
}  // namespace attncheck
