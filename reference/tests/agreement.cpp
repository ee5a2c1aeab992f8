#include "agreement.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace attncheck::testing {

void expect_agreement(const Problem& p, const AttentionResult& ref, const PlainResult& plain,
                      const std::string& context, AgreementReport& report) {
  const double inf = std::numeric_limits<double>::infinity();
  // Weights below the smallest normal double are not resolved by either exp (Eigen's vectorized
  // exp stops at e^-709.78, std::exp goes subnormal), so P is compared to that absolute floor.
  const double tiny = std::numeric_limits<double>::min();
  int failures = 0;  // stop after a few messages per problem
  auto fail = [&](bool ok) {
    if (!ok) ++failures;
    return ok || failures > 3;
  };
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const std::string where = context + fmt::format(" at (b={}, h={}, i={})", b, h, i);
        const double lse = plain.lse(0, b, h, i);
        if (lse == -inf) {
          ++report.empty_rows;
          EXPECT_TRUE(fail(ref.lse(0, b, h, i) == -inf)) << where << ": LSE " << ref.lse(0, b, h, i);
          for (std::int64_t j = 0; j < p.v_dim; ++j)
            EXPECT_TRUE(fail(ref.out(b, h, i, j) == 0.0 && !std::signbit(ref.out(b, h, i, j))))
                << where << ": empty row must give +0, got " << ref.out(b, h, i, j);
          if (ref.stats) {
            EXPECT_TRUE(fail(ref.stats->allowed_keys(0, b, h, i) == 0.0)) << where << ": n of an empty row";
            EXPECT_TRUE(fail(ref.stats->max_score(0, b, h, i) == -inf)) << where << ": m of an empty row";
          }
          continue;
        }
        ++report.live_rows;
        const double a_max = plain.max_dot_abs(0, b, h, i);
        const double logit_scale = 1.0 + a_max;
        EXPECT_TRUE(fail(std::fabs(ref.lse(0, b, h, i) - lse) <= kAgreement * (logit_scale + std::fabs(lse))))
            << where << ": LSE " << ref.lse(0, b, h, i) << " vs plain " << lse;
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          const double a = plain.row_scale(b, h, i, j), diff = std::fabs(ref.out(b, h, i, j) - plain.out(b, h, i, j));
          if (a > 0) report.worst_output_ratio = std::max(report.worst_output_ratio, diff / (kAgreement * a));
          EXPECT_TRUE(fail(diff <= kAgreement * a))
              << where << " j=" << j << ": O " << ref.out(b, h, i, j) << " vs plain " << plain.out(b, h, i, j)
              << ", row scale A = " << a;
        }
        if (ref.probabilities)
          for (std::int64_t k = 0; k < p.k_len; ++k) {
            const double pk = plain.probabilities(b, h, i, k), rk = (*ref.probabilities)(b, h, i, k);
            // A masked key weighs exactly 0.
            const bool ok = plain.allowed(b, h, i, k) == 0.0 ? rk == 0.0
                                                               : std::fabs(rk - pk) <= kAgreement * logit_scale * pk + tiny;
            EXPECT_TRUE(fail(ok)) << where << " key " << k << ": P " << rk << " vs plain " << pk;
          }
        if (!ref.stats) continue;
        const RowStatistics& st = *ref.stats;
        const double tol = kAgreement * logit_scale;
        EXPECT_TRUE(fail(st.allowed_keys(0, b, h, i) == plain.allowed_keys(0, b, h, i))) << where << ": n";
        EXPECT_TRUE(fail(std::fabs(st.max_score(0, b, h, i) - plain.max_score(0, b, h, i)) <=
                         kAgreement * (logit_scale + std::fabs(plain.max_score(0, b, h, i)))))
            << where << ": m " << st.max_score(0, b, h, i) << " vs " << plain.max_score(0, b, h, i);
        const double big_m = plain.max_abs_score(0, b, h, i);
        EXPECT_TRUE(fail(std::fabs(st.max_abs_score(0, b, h, i) - big_m) <= kAgreement * (logit_scale + big_m)))
            << where << ": M " << st.max_abs_score(0, b, h, i) << " vs " << big_m;
        EXPECT_TRUE(fail(std::fabs(st.max_dot_abs(0, b, h, i) - a_max) <= kAgreement * a_max))
            << where << ": max a_k " << st.max_dot_abs(0, b, h, i) << " vs " << a_max;
        for (std::int64_t j = 0; j < p.v_dim; ++j) {
          const double a = plain.row_scale(b, h, i, j);
          // Sums of nonnegative terms inherit the relative error of p (≤ tol); the centred ones
          // also see |V − O| move by |ΔO| ≤ kAgreement·A, times their multiplier (1, a_k, |s_k|).
          auto check = [&](const char* name, const HostTensor& got, const HostTensor& want, double extra) {
            const double g = got(b, h, i, j), w = want(b, h, i, j);
            EXPECT_TRUE(fail(std::fabs(g - w) <= tol * (w + extra))) << where << " j=" << j << ": " << name << " "
                                                                      << g << " vs plain " << w;
          };
          check("A", st.row_scale, plain.row_scale, 0);
          check("W", st.spread, plain.spread, a);
          check("C", st.centered, plain.centered, a);
          check("Ca", st.centered_dot, plain.centered_dot, a_max * a);
          check("Cs", st.centered_score, plain.centered_score, (1 + big_m) * a);
          check("T", st.fp16_tail, plain.fp16_tail, 0);
          check("T8", st.e4m3_tail, plain.e4m3_tail, 0);
        }
      }
}

}  // namespace attncheck::testing
