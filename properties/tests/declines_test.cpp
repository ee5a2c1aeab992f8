// What a run says about the cases it did not judge: a backend's own decline reasons, tallied per
// unit; kAttncheckNotSupported from forward as a decline (backend.h), never a failure; a problem
// filter that admits nothing, said as such; and coverage that counts judged cases only.
#include <gtest/gtest.h>

#include <functional>

#include "attncheck/backend_impl.h"
#include "attncheck/engine.h"

namespace attncheck {
namespace {

// cpu-naive behind a wrapper that can decline in supports() or refuse in forward(), so that every
// judged case is computed by a correct kernel and only the declining differs.
class Declining final : public impl::BackendImpl {
 public:
  using Rule = std::function<std::string(const attncheck_problem&)>;  // "" = accept
  Declining(Rule in_supports, Rule in_forward)
      : inner_(open_backend("cpu-naive")), in_supports_(std::move(in_supports)), in_forward_(std::move(in_forward)) {}

  attncheck_numerics_profile profile(DLDataType input) const override {
    attncheck_numerics_profile p{};
    p.struct_size = sizeof p;
    const attncheck_status status = inner_.table()->get_profile(inner_.table(), input, &p);
    if (status != kAttncheckOk) impl::unsupported("float32 only");
    return p;
  }
  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const override {
    if (std::string why = in_supports_(problem); !why.empty()) impl::unsupported(why);
    char reason[256] = {};
    if (inner_.table()->supports(inner_.table(), &problem, input, device, reason, sizeof reason) != kAttncheckOk)
      impl::unsupported(reason);
  }
  void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) override {
    if (std::string why = in_forward_(problem); !why.empty()) impl::unsupported(why);
    if (inner_.table()->forward(inner_.table(), &problem, &tensors) != kAttncheckOk)
      throw std::runtime_error(inner_.table()->last_error(inner_.table()));
  }

 private:
  Backend inner_;
  Rule in_supports_, in_forward_;
};

Backend declining(Declining::Rule in_supports, Declining::Rule in_forward) {
  return Backend(impl::make_backend_table<Declining>("declining", nullptr, std::move(in_supports), std::move(in_forward)),
                 "test");
}

const PropertyDef& property(const std::string& name) {
  for (const PropertyDef& p : all_properties())
    if (p.name == name) return p;
  throw std::logic_error(name);
}

RunSettings quick() {
  RunSettings s;
  s.cases = 30;
  s.max_size = 60;
  s.seed = 24301;
  return s;
}

auto accept = [](const attncheck_problem&) { return std::string(); };

TEST(Declines, EveryCaseDeclinedIsASkipWithTheBackendsOwnReasonAndNoCoverage) {
  Backend b = declining([](const attncheck_problem&) { return std::string("no CUDA device: nothing here"); }, accept);
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, quick());
  EXPECT_EQ(o.status, OutcomeStatus::Skipped) << o.message;
  EXPECT_EQ(o.cases_passed, 0);
  EXPECT_GT(o.cases_skipped, 0);
  ASSERT_EQ(o.decline_reasons.size(), 1u);
  EXPECT_EQ(o.decline_reasons.begin()->first, "no CUDA device: nothing here");
  EXPECT_EQ(o.decline_reasons.begin()->second, o.cases_skipped);
  EXPECT_NE(o.message.find("no CUDA device: nothing here"), std::string::npos) << o.message;
  EXPECT_EQ(o.message.find(".cpp"), std::string::npos) << "a source location leaked: " << o.message;
  EXPECT_TRUE(o.coverage.empty()) << "coverage counted cases that were never judged";
}

TEST(Declines, NotSupportedFromForwardIsADeclineNotAFailure) {
  Backend b = declining(accept, [](const attncheck_problem& p) {
    return p.k_len > 8 ? std::string("this kernel's tile holds 8 keys") : std::string();
  });
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, quick());
  EXPECT_EQ(o.status, OutcomeStatus::Passed) << o.message;
  EXPECT_GT(o.cases_passed, 0);
  ASSERT_EQ(o.decline_reasons.size(), 1u);
  EXPECT_NE(o.decline_reasons.begin()->first.find("this kernel's tile holds 8 keys"), std::string::npos);
}

TEST(Declines, CoverageCountsOnlyJudgedCases) {
  // Every MQA problem declined: no "mqa" cell may be counted, however many were drawn.
  Backend b = declining([](const attncheck_problem& p) {
    return p.kv_heads == 1 && p.q_heads > 1 ? std::string("no MQA") : std::string();
  }, accept);
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, quick());
  ASSERT_EQ(o.status, OutcomeStatus::Passed) << o.message;
  ASSERT_GT(o.decline_reasons.count("no MQA") ? o.decline_reasons.at("no MQA") : 0, 0) << "the generators drew no MQA case, so this test checks nothing";
  int judged = 0;
  for (const auto& [cell, count] : o.coverage) {
    EXPECT_NE(cell.rfind("mqa ", 0), 0u) << cell;
    judged += count;
  }
  EXPECT_GE(judged, o.cases_passed);
}

TEST(Declines, AFilterThatMatchesNothingSaysSoInsteadOfBlamingTheBackend) {
  Backend b = open_backend("cpu-naive");
  RunSettings s = quick();
  s.problem_filter = [](const std::string& description) { return description.find("Hq=12345") != std::string::npos; };
  const PropertyOutcome o = run_property(property("reference-agreement"), b, DType::F32, s);
  EXPECT_EQ(o.status, OutcomeStatus::Skipped);
  EXPECT_EQ(o.cases_skipped, 0);
  EXPECT_GT(o.cases_filtered, 0);
  EXPECT_NE(o.message.find("--problem filter"), std::string::npos) << o.message;
  EXPECT_NE(o.message.find("matched none"), std::string::npos) << o.message;
  EXPECT_EQ(o.message.find("declined"), std::string::npos) << o.message;
}

}  // namespace
}  // namespace attncheck
