// Every term of τ ranges over the keys a row can reach (numerics/README.md §2.5). Unreachable
// keys — beyond a key length or masked out — may hold anything, and the padding and poisoning
// properties fill them with ±the largest finite value; they must not widen the bound.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attncheck/compare.h"
#include "attncheck/tolerance.h"
#include "sim_kernels.h"

namespace attncheck {
namespace {

// 64 keys of which the first 40 are reachable (a key length), the rest holding ±max-finite f32
// V and K. The reference is exact for this purpose; an output off by 4e-3 at one reachable
// element (|O| ≈ 0.1, so far beyond any fp32 kernel's error: τ there is ≈ 1e-6) must fail.
// Before τ's tail took max |V| over reachable keys only, 2^-125·n·max|V| with max|V| = 3.4e38
// made τ ≈ 70 and this passed with r ≈ 6e-5.
TEST(ReachableKeys, HugeUnreachableValuesDoNotWidenTau) {
  for (const bool by_mask : {false, true}) {
    sim::Case c = sim::make_case(DType::F32, 64, 16, 4, 21, 1.0);
    Problem& p = c.problem;
    std::vector<std::int64_t> lengths{40};
    HostTensor mask;
    if (by_mask) {
      p.mask = MaskKind::Boolean;
      p.mask_batch = p.mask_heads = 1;
      p.mask_q_len = p.q_len;
      p.mask_k_len = p.k_len;
      mask = HostTensor({1, 1, p.q_len, p.k_len}, 1.0);
      for (std::int64_t i = 0; i < p.q_len; ++i)
        for (std::int64_t k = 40; k < p.k_len; ++k) mask(0, 0, i, k) = 0.0;
    } else {
      p.has_key_lengths = true;
    }
    const double big = largest_finite(DType::F32);
    for (std::int64_t k = 40; k < p.k_len; ++k)
      for (std::int64_t l = 0; l < p.v_dim; ++l) {
        c.v(0, 0, k, l) = (k + l) % 2 ? big : -big;
        c.k(0, 0, k, l) = (k + l) % 2 ? -big : big;
      }
    AttentionInputs in = c.inputs();
    if (by_mask) in.mask = std::as_const(mask).view();
    else in.key_lengths = lengths;
    ReferenceOptions ro;
    ro.row_statistics = true;
    const AttentionResult ref = reference_attention(p, in, ro);
    NumericsProfile profile;
    profile.writes_lse = false;

    HostTensor out = ref.out;
    for (double& x : out.values) x = round_to(DType::F32, x);
    const Verdict exact = compare_attention(p, profile, in, ref, out, nullptr);
    EXPECT_TRUE(exact.passed) << exact.summary();

    const ToleranceModel model(p, profile, DataCharacter::GenericRandom, in);
    const double tau = model.at(ref, 0, 0, 1, 3).total();
    // Hand bound: every term of τ is a few fp32 roundings of quantities ≤ max reachable |V| ≈ 3
    // over ≤ 40 keys: far below 1e-4.
    EXPECT_LT(tau, 1e-4) << fmt::format("by_mask={}: τ = {}", by_mask, tau);

    out(0, 0, 1, 3) += 4e-3;
    const Verdict off = compare_attention(p, profile, in, ref, out, nullptr);
    EXPECT_FALSE(off.passed) << fmt::format("by_mask={}: {}", by_mask, off.summary());
    EXPECT_GT(off.max_ratio, 1.0);
  }
}

}  // namespace
}  // namespace attncheck
