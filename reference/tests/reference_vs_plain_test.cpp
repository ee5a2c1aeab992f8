// The reference against the plain loops (plain_attention.h) on 300 seeded random problems that
// together cover every Problem option: MHA/GQA/MQA ratios, the four causal alignments, windows,
// softcap, boolean and additive masks with broadcast dims and short key dims, key lengths
// including 0, strided layouts ([B, L, H, D] and non-contiguous), Dk != Dv, fully masked rows,
// row blocks smaller than Lq and 1–3 threads. The bound is agreement.h's 1e-13 relative to the
// row scale A_j = Σ_k p_k|V_kj|.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "agreement.h"
#include "random_case.h"

namespace attncheck::testing {
namespace {

TEST(ReferenceVsPlain, AgreesOnRandomProblemsOverEveryOption) {
  std::mt19937_64 rng(20240611);
  AgreementReport report;
  std::map<std::string, int> seen;  // coverage: the test must not pass vacuously
  for (int n = 0; n < 300; ++n) {
    const RandomCase c = make_random_case(rng);
    const Problem& p = c.problem;
    const std::string context =
        fmt::format("case {}: {} [{} row_block={} threads={}]", n, p.describe(), c.layout, c.options.row_block,
                    c.options.threads);
    const AttentionResult ref = reference_attention(p, c.inputs(), c.options);
    const PlainResult plain = plain_attention(p, c.inputs());
    expect_agreement(p, ref, plain, context, report);

    seen[fmt::format("causal {}", alignment_name(p.alignment))] += p.causal;
    seen[fmt::format("window {}", alignment_name(p.alignment))] += p.has_window();
    seen[fmt::format("mask {}", mask_kind_name(p.mask))] += 1;
    seen["short mask"] += p.mask != MaskKind::None && p.mask_k_len < p.k_len;
    seen["broadcast mask"] += p.mask != MaskKind::None && (p.mask_batch < p.batch || p.mask_heads < p.q_heads ||
                                                           p.mask_q_len < p.q_len);
    seen["softcap"] += p.softcap > 0;
    seen["GQA"] += p.kv_heads > 1 && p.group_size() > 1;
    seen["MQA"] += p.kv_heads == 1 && p.q_heads > 1;
    seen["Dk != Dv"] += p.qk_dim != p.v_dim;
    seen["key length 0"] += std::count(c.key_lengths.begin(), c.key_lengths.end(), 0) > 0;
    seen["row_block < Lq"] += c.options.row_block < p.q_len;
    seen["sequence-major"] += c.layout.find("BLHD") != std::string::npos;
    seen["gap layout"] += c.layout.find("gap") != std::string::npos;
    seen["row statistics"] += c.options.row_statistics;
  }
  for (const auto& [what, count] : seen) EXPECT_GT(count, 0) << "no random problem covered: " << what;
  EXPECT_GT(report.empty_rows, 100) << "fully masked rows must be well represented";
  EXPECT_GT(report.live_rows, 10000);
  std::printf("largest |O_ref - O_plain| / (1e-13 A_j): %.3g over %lld live rows (%lld empty)\n",
              report.worst_output_ratio, static_cast<long long>(report.live_rows),
              static_cast<long long>(report.empty_rows));
}

}  // namespace
}  // namespace attncheck::testing
