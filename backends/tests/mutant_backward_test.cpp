// The backward mutants (backends/mutants, mutant_kernel.h: the Bwd* mutations) each on a case built
// to show its one bug: the forward agrees with the reference (compare_attention passes), while the
// backward's gradients differ from reference_attention_backward's in the way the bug predicts. A
// mutant that is accidentally correct fails here, before the mutation test wonders why no property
// catches it.
//
// Every case has one allowed key per query row (or equal scores), so P = exp(s − lse) is exactly 1
// (or one value p for every key), and every other value is a small integer, a half or a power of
// two: both the mutant's fp32 arithmetic and the reference's double arithmetic are exact, and each
// gradient is checked with == against its hand derivation, with no tolerance. The one exception,
// the softcap's derivative, is bounded by a closed form. The kernel is handed its own forward's O
// and lse, so that s − lse is exactly 0 whatever its tanh and log round to.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/backward.h"
#include "attncheck/case.h"
#include "attncheck/compare.h"
#include "attncheck/execute.h"
#include "attncheck/reference.h"
#include "mutant_kernel.h"

namespace attncheck {
namespace {

/// One hand-built case: the forward's inputs and the loss's gradients dO (and dLSE).
struct ExactCase {
  Problem problem;
  CaseData data;
  HostTensor d_out;                 ///< [B, Hq, Lq, Dv]
  std::optional<HostTensor> d_lse;  ///< [1, B, Hq, Lq]
};

/// A boolean mask [1, 1, 1, Lk] over the one query row of `c`, nonzero at `allowed` keys.
void allow_only(ExactCase& c, const std::vector<std::int64_t>& allowed) {
  c.problem.mask = MaskKind::Boolean;
  c.problem.mask_k_len = c.problem.k_len;
  c.data.mask = HostTensor({1, 1, 1, c.problem.k_len});
  for (std::int64_t j : allowed) c.data.mask.values[static_cast<size_t>(j)] = 1;
}

/// Q, K, V, dO (all zero) and dLSE (when `with_d_lse`) shaped for `p`.
ExactCase zero_case(const Problem& p, bool with_d_lse) {
  ExactCase c;
  c.problem = p;
  c.data.q = HostTensor({p.batch, p.q_heads, p.q_len, p.qk_dim});
  c.data.k = HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim});
  c.data.v = HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim});
  c.d_out = HostTensor({p.batch, p.q_heads, p.q_len, p.v_dim});
  if (with_d_lse) c.d_lse = HostTensor({1, p.batch, p.q_heads, p.q_len});
  return c;
}

struct Observed {
  AttentionGradients mutant;     ///< the mutant's backward on its own forward's O and lse
  AttentionGradients reference;  ///< reference_attention_backward on the reference's O and LSE
};

/// Runs `mutant`'s forward on `c` and checks it agrees with the reference (the forward comparator,
/// numerics/), then its backward on that forward's O and lse (run_backend_backward), and the
/// reference's backward.
Observed observe(const std::string& mutant, const ExactCase& c) {
  Backend backend = open_backend(mutant);
  EXPECT_TRUE(backend.has_backward()) << mutant;
  const Problem& p = c.problem;
  const NumericsProfile profile = *backend.profile(p, DType::F32);
  const AttentionInputs inputs = c.data.inputs(p);
  ReferenceOptions options;
  options.row_statistics = true;
  const AttentionResult reference = reference_attention(p, inputs, options);

  const BackendRun forward = run_backend(backend, p, profile, inputs);
  EXPECT_TRUE(forward.memory_findings.empty()) << mutant << ": " << forward.memory_findings.front();
  EXPECT_TRUE(forward.lse.has_value()) << mutant << " has a backward pass, so its forward writes the lse";
  const Verdict verdict = compare_attention(p, profile, inputs, reference, forward.out, forward.lse ? &*forward.lse : nullptr);
  EXPECT_TRUE(verdict.passed) << mutant << "'s forward must be correct: " << verdict.summary();

  // Through the harness, as the properties call it: guards, the NaN pre-fill of dq, dk, dv (every
  // element must be written) and fingerprints of every input.
  BackwardData handed;
  handed.out = forward.out;
  handed.lse = *forward.lse;
  handed.d_out = c.d_out;
  handed.d_lse = c.d_lse;
  const BackwardRun run = run_backend_backward(backend, p, profile, *backend.backward_profile(p, DType::F32), inputs,
                                               handed, /*want_d_bias=*/false);
  EXPECT_TRUE(run.memory_findings.empty()) << mutant << ": " << run.memory_findings.front();

  Observed o;
  o.mutant = run.gradients;
  const View4<const double> no_d_lse{};
  o.reference = reference_attention_backward(p, inputs, backward_inputs(reference, c.d_out.view(), c.d_lse ? c.d_lse->view() : no_d_lse));
  return o;
}

using Values = std::vector<double>;

/// Dq, dK and dV as a derivation in this file gives them, each compared with == (exact: see the
/// file comment).
struct ExpectedGradients {
  Values d_q, d_k, d_v;
};

void expect_gradients(const AttentionGradients& got, const ExpectedGradients& want, const std::string& whose) {
  EXPECT_EQ(got.d_q.values, want.d_q) << whose << "'s dQ";
  EXPECT_EQ(got.d_k.values, want.d_k) << whose << "'s dK";
  EXPECT_EQ(got.d_v.values, want.d_v) << whose << "'s dV";
}

// One query, one key, Dk = Dv = 1, σ = 1/2: q = 2, k = 3, v = 4, dO = 2, and dLSE = 1/2 when
// asked. s = σ q k = 3 = lse, P = 1, O = v = 4, dP = dO v = 8 = dO O = D: dS = P (dP − D + dLSE) =
// dLSE exactly, and dV = P dO = 2.
ExactCase one_key(bool with_d_lse) {
  Problem p;
  p.scale = 0.5;
  ExactCase c = zero_case(p, with_d_lse);
  c.data.q.values = {2};
  c.data.k.values = {3};
  c.data.v.values = {4};
  c.d_out.values = {2};
  if (with_d_lse) c.d_lse->values = {0.5};
  return c;
}

// one_key without dLSE: correct dS = 0, so dQ = dK = 0 and dV = 2. Without D the mutant takes
// dS = P dP = 8: dQ = σ dS k = 12, dK = σ dS q = 8, dV unchanged.
TEST(MutantBackward, NoDTermLeavesTheSoftmaxJacobiansShiftOut) {
  const Observed o = observe("mutant-bwd-no-d-term", one_key(false));
  expect_gradients(o.reference, {{0}, {0}, {2}}, "reference");
  expect_gradients(o.mutant, {{12}, {8}, {2}}, "mutant");
}

// One query, two keys, the mask allowing key 1 only, σ = 1/2: q = 2, k = (5, 3), v = (7, 4),
// dO = 2. s_1 = 3 = lse, P = (0, 1): dV = Pᵀ dO = (0, 2); dS_1 = P (dO v_1 − dO O) = 0, so
// dQ = 0 and dK = (0, 0). The mutant weighs dV_k by P[min(k, Lq − 1)][min(i, Lk − 1)] = P[0][0]
// = 0 for the only (i, k) = (0, 1) it visits: dV = (0, 0).
TEST(MutantBackward, DvUntransposedReadsTheWrongEntryOfP) {
  Problem p;
  p.k_len = 2;
  p.scale = 0.5;
  ExactCase c = zero_case(p, false);
  allow_only(c, {1});
  c.data.q.values = {2};
  c.data.k.values = {5, 3};
  c.data.v.values = {7, 4};
  c.d_out.values = {2};
  const Observed o = observe("mutant-bwd-dv-untransposed", c);
  expect_gradients(o.reference, {{0}, {0, 0}, {0, 2}}, "reference");
  expect_gradients(o.mutant, {{0}, {0, 0}, {0, 0}}, "mutant");
}

// Two query heads reading one kv head, one key, σ = 1: q = (1, 2), k = 3, v = 5, dO = (1, 1),
// dLSE = (1, 2). s_h = 3, 6 = lse_h, P = 1, O_h = 5 = v, so dS_h = dLSE_h = 1, 2:
// dQ_h = dS_h k = (3, 6); dK = Σ_h dS_h q_h = 1 + 4 = 5; dV = Σ_h P dO_h = 2. The mutant takes
// dK, dV from head 0 only: dK = 1·1 = 1, dV = 1.
TEST(MutantBackward, GqaOneHeadDropsTheOtherHeadsOfTheGroup) {
  Problem p;
  p.q_heads = 2;
  p.scale = 1.0;
  ExactCase c = zero_case(p, true);
  c.data.q.values = {1, 2};
  c.data.k.values = {3};
  c.data.v.values = {5};
  c.d_out.values = {1, 1};
  c.d_lse->values = {1, 2};
  const Observed o = observe("mutant-bwd-gqa-one-head", c);
  expect_gradients(o.reference, {{3, 6}, {5}, {2}}, "reference");
  expect_gradients(o.mutant, {{3, 6}, {1}, {1}}, "mutant");
}

// one_key with dLSE and softcap c = 3: the raw score r = σ q k = 3 is capped to 3 tanh(1) = lse,
// P = 1, dS = dLSE = 1/2. Through the cap dR = dS (1 − tanh²(r/c)) = (1 − tanh²(1))/2, so
// dQ = σ dR k and dK = σ dR q are (1 − tanh²(1)) = 0.41997… times what the mutant, which drops
// the derivative, computes exactly: dQ = σ dS k = 3/4, dK = σ dS q = 1/2. The reference's thus lie
// in (0.41, 0.43) times the mutant's (tanh(1) = 0.76159…).
TEST(MutantBackward, NoSoftcapDerivativeIgnoresTheCapsSlope) {
  ExactCase c = one_key(true);
  c.problem.softcap = 3;
  const Observed o = observe("mutant-bwd-no-softcap-derivative", c);
  expect_gradients(o.mutant, {{0.75}, {0.5}, {2}}, "mutant");
  EXPECT_EQ(o.reference.d_v.values, (Values{2}));
  EXPECT_GT(o.reference.d_q.values[0], 0.41 * 0.75);
  EXPECT_LT(o.reference.d_q.values[0], 0.43 * 0.75);
  EXPECT_GT(o.reference.d_k.values[0], 0.41 * 0.5);
  EXPECT_LT(o.reference.d_k.values[0], 0.43 * 0.5);
}

// one_key with dLSE: dS = 1/2, dQ = σ dS k = 3/4, dK = σ dS q = 1/2. Without σ in dK: dS q = 1.
TEST(MutantBackward, DkWithoutScaleIsOffByTheScale) {
  const Observed o = observe("mutant-bwd-dk-without-scale", one_key(true));
  expect_gradients(o.reference, {{0.75}, {0.5}, {2}}, "reference");
  expect_gradients(o.mutant, {{0.75}, {1}, {2}}, "mutant");
}

// One key, σ = 1, q = k = 10: s = 100 = lse, P = e^0 = 1; v = 4, dO = 2, dLSE = 1/2: dS = 1/2,
// dQ = dS k = 5, dK = dS q = 5, dV = P dO = 2. The mutant's e^100 overflows fp32 (whose largest
// value is about e^88.7): P = ∞/∞ = NaN, and NaN reaches every gradient. The forward, which
// subtracts the row max, is fine.
TEST(MutantBackward, UnshiftedExpOverflowsOnLargeLogits) {
  Problem p;
  p.scale = 1.0;
  ExactCase c = zero_case(p, true);
  c.data.q.values = {10};
  c.data.k.values = {10};
  c.data.v.values = {4};
  c.d_out.values = {2};
  c.d_lse->values = {0.5};
  const Observed o = observe("mutant-bwd-unshifted-exp", c);
  expect_gradients(o.reference, {{5}, {5}, {2}}, "reference");
  EXPECT_TRUE(std::isnan(o.mutant.d_q.values[0])) << o.mutant.d_q.values[0];
  EXPECT_TRUE(std::isnan(o.mutant.d_k.values[0])) << o.mutant.d_k.values[0];
  EXPECT_TRUE(std::isnan(o.mutant.d_v.values[0])) << o.mutant.d_v.values[0];
}

// Three allowed keys, one in each key tile (keys 0, T, 2T of Lk = 3T, with T = kBackwardKeyTile,
// mutant_kernel.h), q = 0 so every
// score is 0 and P = p = e^(−lse) for all three, lse = ln 3 as the forward wrote it. σ = 1, Dv = 2:
// v = (2, 1), (−1, 1), (−1, 1), so O = (0, 1); dO = (1, 0), so D = dO·O = 0 and
// dS = p (dO·v_j) = (2p, −p, −p). With k = (1, 2, 2^-28) the tiles' dQ sums are 2p, −2p and
// −p·2^-28, each exact. Added in tile order dQ = −p·2^-28; in the four orders that add the small
// one before 2p and −2p cancel it is absorbed (it is below half an ulp of 2p ≈ 0.67, 2^-25) and
// dQ = 0. So each call gives −p·2^-28 with probability 1/3 and 0 otherwise, while determinism is
// declared: 64 calls all alike has probability (1/3)^64 + (2/3)^64 < 10^-11. The reference's dQ
// is −2^-28/3, never 0.
TEST(MutantBackward, DqRandomOrderChangesItsBitsFromCallToCall) {
  const std::int64_t tile = mutants::kBackwardKeyTile;
  Problem p;
  p.k_len = 3 * tile;
  p.v_dim = 2;
  p.scale = 1.0;
  ExactCase c = zero_case(p, false);
  allow_only(c, {0, tile, 2 * tile});
  const std::vector<double> k = {1, 2, 0x1p-28};
  const std::vector<std::pair<double, double>> v = {{2, 1}, {-1, 1}, {-1, 1}};
  for (size_t n = 0; n < 3; ++n) {
    const auto key = static_cast<size_t>(tile) * n;
    c.data.k.values[key] = k[n];
    c.data.v.values[2 * key] = v[n].first;
    c.data.v.values[2 * key + 1] = v[n].second;
  }
  c.d_out.values = {1, 0};
  Backend backend = open_backend("mutant-bwd-dq-random-order");
  const BackwardProfile declared = *backend.backward_profile(c.problem, DType::F32);
  EXPECT_TRUE(declared.deterministic);
  EXPECT_FALSE(declared.dq_atomic);

  std::set<double> seen;
  Observed o;
  for (int call = 0; call < 64; ++call) {
    o = observe("mutant-bwd-dq-random-order", c);
    seen.insert(o.mutant.d_q.values[0]);
  }
  const BackendRun forward = run_backend(backend, c.problem, *backend.profile(c.problem, DType::F32), c.data.inputs(c.problem));
  const float weight = std::exp(0.0f - static_cast<float>(forward.lse->values[0]));  // p, as the kernel computes it
  EXPECT_EQ(seen, (std::set<double>{0.0, -static_cast<double>(weight * 0x1p-28f)}));
  EXPECT_LT(o.reference.d_q.values[0], 0);
}

// One query, two keys, the mask allowing key 0 only, σ = 1: q = 1, k = (2, 7), v = (1, 3),
// dO = 1. s_0 = 2 = lse, P = (1, 0), O = 1 = D, dS_0 = P (dO v_0 − D) = 0: dQ = 0, dK = (0, 0),
// dV = (1, 0). Key 1 is seen by no query. The mutant weighs it by 10^-3 in dK's dS:
// dS_1 = 10^-3 (dO v_1 − D) = 2·10^-3 (in fp32: twice the float nearest 10^-3, exactly), so
// dK_1 = σ dS_1 q = 2·fl(10^-3) ≠ 0, while dQ and dV are right.
TEST(MutantBackward, MaskedKeysGetDkAtAKeyNoQuerySees) {
  Problem p;
  p.k_len = 2;
  p.scale = 1.0;
  ExactCase c = zero_case(p, false);
  allow_only(c, {0});
  c.data.q.values = {1};
  c.data.k.values = {2, 7};
  c.data.v.values = {1, 3};
  c.d_out.values = {1};
  const Observed o = observe("mutant-bwd-masked-keys-get-dk", c);
  expect_gradients(o.reference, {{0}, {0, 0}, {1, 0}}, "reference");
  expect_gradients(o.mutant, {{0}, {0, 2.0 * static_cast<double>(1e-3f)}, {1, 0}}, "mutant");
}

// One query, Lk = T + 1 (two key tiles, T = kBackwardKeyTile), the mask allowing key T only,
// σ = 1/2: q = 2, k_T = 3, v_T = 4, dO = 2, dLSE = 1/2. As one_key: dS = 1/2, dQ = σ dS k_T = 3/4,
// dK_T = σ dS q = 1/2, dV_T = 2. The mutant loses the last tile's dQ sum: dQ = 0.
TEST(MutantBackward, DqLostUpdateLosesTheLastKeyTile) {
  const std::int64_t tile = mutants::kBackwardKeyTile;
  Problem p;
  p.k_len = tile + 1;
  p.scale = 0.5;
  ExactCase c = zero_case(p, true);
  allow_only(c, {tile});
  c.data.q.values = {2};
  c.data.k.values[static_cast<size_t>(tile)] = 3;
  c.data.v.values[static_cast<size_t>(tile)] = 4;
  c.d_out.values = {2};
  c.d_lse->values = {0.5};
  const Observed o = observe("mutant-bwd-dq-lost-update", c);
  Values dk(static_cast<size_t>(tile + 1), 0.0), dv(static_cast<size_t>(tile + 1), 0.0);
  dk[static_cast<size_t>(tile)] = 0.5;
  dv[static_cast<size_t>(tile)] = 2;
  expect_gradients(o.reference, {{0.75}, dk, dv}, "reference");
  expect_gradients(o.mutant, {{0}, dk, dv}, "mutant");
}

// The forward mutants keep the table they were caught with: no backward pass.
TEST(MutantBackward, OnlyTheBackwardMutantsHaveABackwardPass) {
  int with_backward = 0;
  for (const std::string& name : builtin_backend_names()) {
    if (name.rfind("mutant-", 0) != 0) continue;
    const bool backward_mutant = name.rfind("mutant-bwd-", 0) == 0;
    EXPECT_EQ(open_backend(name).has_backward(), backward_mutant) << name;
    with_backward += backward_mutant ? 1 : 0;
  }
  EXPECT_EQ(with_backward, 9);
}

}  // namespace
}  // namespace attncheck
