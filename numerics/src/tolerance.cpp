// τ_ij, the a-priori bound of numerics/README.md §2–§3, and the LSE bound (§2.10).
//
// Notation follows numerics/README.md §2.1–§2.3. For one row (b, h, i) with n allowed keys:
//   s_k final scores, m = max s_k, Z = Σ e^{s_k−m}, p_k = e^{s_k−m}/Z, O_j = Σ p_k V_kj,
//   a_k = |σ|Σ_l|q_l k_kl|, M = max|s_k| over keys of non-negligible weight.
// The reference's RowStatistics give, per element, A_j, W_j, C_j, Ca_j, Cs_j and the fp16 tail.
//
// Units of the profile:
//   u_D  Q·Kᵀ accumulator   (score_accumulator, else score; doubled under round-toward-zero)
//   u_S  stored scores and the softmax arithmetic on them (score)
//   u_E  exp, u_T tanh      (declared, default 2^-22)
//   u_P  P as stored for P·V: 0 unless P is re-rounded below the fp32 the exp produces
//   u_A  P·V accumulator (doubled under round-toward-zero, §3.2)
//   u_R  row-sum accumulator (row_sum_accumulator, else accumulator; §2.12)
//   u_Q, u_K, u_V  Q, K and V rounded inside the kernel below `input` (0 when not, §2.12)
//   u_O  output
#include "attncheck/tolerance.h"

#include "units.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <stdexcept>

namespace attncheck {
namespace {

using detail::gamma;
using detail::Units;
using detail::units_of;

constexpr double kLambda = 10.0;  // numerics/README.md §3.3: ≈3e-18 per sum at N = 8192

// The probabilistic G_N of §3 (§2.6) in Higham & Mary's rigorous form [HM, Thm. 3.1]:
// γ̃_N(λ) = exp(λ√N·u + N·u²/(1 − u)) − 1, which is λ√N·u to first order (§3's form) and
// stays a bound where N·u ≥ 1 leaves γ_N without a value. It holds with probability
// ≥ 1 − 2N·e^{−λ²(1−u)²/2}, ≈ 3e-18 at N = 8192, λ = 10.
double gamma_probabilistic(double n, double u) {
  return std::expm1(kLambda * std::sqrt(n) * u + n * u * u / (1 - u));
}

// Spacing of `dtype` at x ≥ 0: 2u·2^⌊log2 x⌋, or the subnormal spacing below the normal range.
double ulp_of(DType dtype, double x) {
  if (!(x >= smallest_normal(dtype))) return smallest_subnormal(dtype);
  return std::ldexp(2 * unit_roundoff(dtype), std::ilogb(x));
}

// Split-KV (§2.12): S > 1 parts, each a softmax with its own max, merged with S factors
// e^{m_s − m}. 0 for one part.
double split_merges(const NumericsProfile& p) { return p.kv_splits > 1 ? static_cast<double>(p.kv_splits) : 0.0; }

// Number of online-softmax rescales (numerics/README.md §2.9). The first derivation took
// R = ⌈n/B_c⌉ (§9), which holds when the n allowed keys are contiguous. A kernel whose key tiles
// sit at fixed positions rescales once per tile holding an allowed key, and a mask can scatter n
// keys over every tile: up to min(n, ⌈Lk/B_c⌉ + 1) tiles (+1: tiles need not start at key 0, e.g.
// at a window's edge).
// Split-KV cuts the keys into S parts, each of which may start a tile of its own: S − 1 more
// tile edges than one part has (§2.12).
// A sink (problem.h) joins an online softmax as one last block of its own: one more rescale.
double rescales(const NumericsProfile& p, const Problem& problem, double n) {
  if (p.softmax_block <= 0) return 0.0;
  const double key_len = static_cast<double>(problem.k_len);
  const double edges = p.kv_splits > 1 ? static_cast<double>(p.kv_splits) : 1.0;
  return std::min(n, std::ceil(key_len / p.softmax_block) + edges) + (problem.sinks ? 1.0 : 0.0);
}

// The accumulation count N = ⌈n/k0⌉ + R (§2.6): the most roundings any one term passes through.
// Blocked summation (keys_per_partial_sum b, §2.12): a term passes through ≤ ⌈min(b, n)/k0⌉
// roundings inside its partial sum and then one per partial sum added into the total, of which
// there are at most min(n, ⌈Lk/b⌉ + 1) (fixed-position blocks, scattered keys, as for R). The
// sequential count ⌈n/k0⌉ bounds every order, so the smaller of the two holds. Split-KV adds, per
// term, the merge's sum over the S partials (S roundings, each partial's product with its factor
// included) and the normalisation of the part and its re-weighting (2).
double accumulations(const NumericsProfile& p, const Problem& problem, double n) {
  const double key_len = static_cast<double>(problem.k_len);
  const double k0 = std::max(1, p.products_per_rounding);
  double sums = std::ceil(n / k0);
  if (p.keys_per_partial_sum > 0) {
    const double b = p.keys_per_partial_sum;
    sums = std::min(sums, std::ceil(std::min(b, n) / k0) + std::min(n, std::ceil(key_len / b) + 1));
  }
  const double merge = split_merges(p) > 0 ? split_merges(p) + 2 : 0.0;
  return sums + rescales(p, problem, n) + merge;
}

// Δ_k = α·a_k + β·|s_k| + γ0: the logit perturbation of §2.4, affine in a_k and |s_k|, so that
// Σ_k p_k Δ_k |V_kj − O_j| = α·Ca_j + β·Cs_j + γ0·C_j exactly.
struct LogitBound {
  double alpha = 0, beta = 0, gamma0 = 0;
  double alibi = 0;  // the part of α·a_k + γ0 that ALiBi adds (term 10), for the random split
  double max = 0;  // Δmax over keys of non-negligible weight: α·max a_k + β·M + γ0
};

// Derivation of the terms (numerics/README.md §2.4, terms 1–7):
//  1. Dot product: |fl(Σ q_l k_l) − Σ q_l k_l| ≤ γ_d(u_D)·Σ|q_l k_l| in any order, product
//     roundings included [Higham]; scaled by |σ| this is γ_d(u_D)·a_k.
//  2. Scale, shift and base-2 conversion (3 roundings of size ≤ |s_k| + M, since |m| ≤ M):
//     3u_S(|s_k| + M). An error common to all keys — the computed max itself — cancels exactly
//     (softmax is shift invariant), so only the rounding of s_k − m̃ counts.
//  3. exp: u_E.
//  4. R online rescales e^{m_old − m_new}, each an exp (u_E) of an argument carrying ≤ 6u_S·M.
//  5. Scores re-rounded to a narrow score dtype after a wider accumulator (eager code storing
//     fp16 logits): s̃_k = s_k(1 + δ), |δ| ≤ u_S, one more rounding of size u_S|s_k|. The stored
//     max is one of the stored scores, so its error is common to every key and cancels (as in 2).
//     When the dot is accumulated in `score` itself the last accumulation is that rounding and
//     no term is added.
//  6. Additive bias: s_k = σq·k + b_k costs one rounding of the sum, u_S|s_k|.
//  7. Softcap c·tanh(t/c) (§6.5): its slope is ≤ 1, so 1–2 pass through unchanged; t/c, the tanh
//     and the product with c add (u_T + 2u_S)|s′_k|, |s′_k| the capped score, because
//     x·sech²x ≤ tanh x makes the argument's rounding count at most |s′_k|. Without a bias
//     s′_k = s_k (β term); with one |s′_k| ≤ |σq·k| ≤ a_k (α term).
//  8. Q and K rounded inside the kernel (§2.12): q̃_l k̃_l = q_l k_l(1 + δ_q)(1 + δ_k), a relative
//     change ≤ (1 + u_Q)(1 + u_K) − 1 of every product, and term 1's γ_d then applies to the
//     rounded products: α = (1 + γ_d)(1 + u_Q)(1 + u_K) − 1. Holds while Q and K stay in the
//     rounding dtype's normal range (§2.12).
//  9. Split-KV merge factors e^{m_s − m} (§2.12): S more rescales of the kind of 4.
// 10. ALiBi (§6.6): the product slope·|j − p| (the distance is an exact integer) rounds once,
//     u_S·A with A the row's largest |ALiBi bias|, and its addition once more, u_S|s_k|. With an
//     additive mask as well, the first of the two additions (in either order) rounds a partial
//     sum |c_k + b_k| ≤ |s_k| + A or |c_k + alibi_k| ≤ a_k + A: u_S(a_k + |s_k| + A) covers both.
//     Softcap then sees a bias (term 7's α form).
LogitBound logit_bound(const Problem& problem, const NumericsProfile& profile, const Units& u, double n,
                       double big_m, double max_a, double max_alibi) {
  LogitBound l;
  const double r = rescales(profile, problem, n) + split_merges(profile);
  const bool mask_bias = problem.mask == MaskKind::Additive;
  const bool bias = mask_bias || problem.has_alibi();
  l.alpha = gamma(static_cast<double>(problem.qk_dim), u.u_dot);
  if (u.u_q > 0 || u.u_k > 0) l.alpha = (1 + l.alpha) * (1 + u.u_q) * (1 + u.u_k) - 1;
  l.beta = 3 * u.u_s;
  if (u.narrow_score_store) l.beta += u.u_s;
  if (mask_bias) l.beta += u.u_s;
  if (problem.softcap > 0) (bias ? l.alpha : l.beta) += u.u_t + 2 * u.u_s;
  l.gamma0 = 3 * u.u_s * big_m + u.u_e + r * (u.u_e + 6 * u.u_s * big_m);
  if (problem.has_alibi()) {
    l.beta += u.u_s;
    l.gamma0 += u.u_s * max_alibi;
    l.alibi = u.u_s * max_alibi;
    if (mask_bias) {
      l.alpha += u.u_s;
      l.beta += u.u_s;
      l.gamma0 += u.u_s * max_alibi;
      l.alibi += u.u_s * (max_a + max_alibi);
    }
  }
  if (problem.has_descales()) {
    // §2.14: a kernel dequantizes Q and K element-wise in the score type, q·dq and k·dk, each one
    // rounding (the dot then runs over (1 + δ)²-perturbed products: the α term), or folds the
    // factors into the scale, σ·dq·dk, two roundings common to a row's keys but relative to each
    // score (β). The bound allows either.
    l.alpha = (1 + l.alpha) * (1 + u.u_s) * (1 + u.u_s) - 1;
    l.beta += 2 * u.u_s;
  }
  l.max = l.alpha * max_a + l.beta * big_m + l.gamma0;
  return l;
}

}  // namespace

const char* ToleranceTerms::dominant() const {
  const std::pair<double, const char*> terms[] = {{logit, "logit"},
                                                  {probability, "probability"},
                                                  {accumulation, "accumulation"},
                                                  {reference, "reference"},
                                                  {output, "output"}};
  const auto* best = std::max_element(std::begin(terms), std::end(terms),
                                      [](const auto& a, const auto& b) { return a.first < b.first; });
  return best->second;
}

ToleranceModel::ToleranceModel(const Problem& problem, const NumericsProfile& profile, DataCharacter data)
    : problem_(problem), profile_(profile), data_(data) {
  problem_.validate();
  if (profile_.products_per_rounding < 1)
    throw std::invalid_argument(fmt::format("numerics profile: products_per_rounding (k0) is {}, but must be ≥ 1",
                                            profile_.products_per_rounding));
  if (profile_.softmax_block < 0)
    throw std::invalid_argument(
        fmt::format("numerics profile: softmax_block is {}, but must be ≥ 0 (0 = three-pass)", profile_.softmax_block));
  // fp8 is a storage format of the inputs (dtype.h), and of P: e5m2's subnormal range is fp16's
  // (the fp16 tail statistic covers it), e4m3's starts at 2^-6 (the e4m3 tail statistic, §2.14).
  for (const auto& [dtype, stage] : {std::pair{profile_.score, "score"}, std::pair{profile_.accumulator, "accumulator"},
                                     std::pair{profile_.output, "output"}})
    if (is_fp8(dtype))
      throw std::invalid_argument(fmt::format("numerics profile: the {} stage is {}, but fp8 is a storage format of q, k "
                                              "and v only (no kernel accumulates or writes in it)", stage, dtype_name(dtype)));
}

ToleranceModel::ToleranceModel(const Problem& problem, const NumericsProfile& profile, DataCharacter data,
                               const AttentionInputs& inputs)
    : ToleranceModel(problem, profile, data) {
  const auto& v = inputs.v;
  if (v.data == nullptr || v.shape != Shape4{problem.batch, problem.kv_heads, problem.k_len, problem.v_dim})
    throw std::invalid_argument(fmt::format("ToleranceModel: V has shape {}, but the problem expects {}",
                                            shape_string(v.shape),
                                            shape_string({problem.batch, problem.kv_heads, problem.k_len, problem.v_dim})));
}

bool ToleranceModel::probabilistic() const {
  return profile_.accumulation_rounding == Rounding::Nearest && data_ == DataCharacter::GenericRandom;
}

ToleranceTerms ToleranceModel::at(const AttentionResult& reference, std::int64_t b, std::int64_t h, std::int64_t i,
                                  std::int64_t j) const {
  if (!reference.stats) throw std::invalid_argument("ToleranceModel::at: the reference carries no row statistics");
  const RowStatistics& st = *reference.stats;
  const Units u = units_of(profile_);
  const double n = st.allowed_keys(0, b, h, i);
  const double big_m = st.max_abs_score(0, b, h, i);
  const double max_a = st.max_dot_abs(0, b, h, i);
  const double o = std::fabs(reference.out(b, h, i, j));
  const double a = st.row_scale(b, h, i, j), w = st.spread(b, h, i, j);
  const double c = st.centered(b, h, i, j), ca = st.centered_dot(b, h, i, j), cs = st.centered_score(b, h, i, j);
  const double r = rescales(profile_, problem_, n) + split_merges(profile_);
  const double big_n = accumulations(profile_, problem_, n);
  const bool prob = probabilistic();

  ToleranceTerms t;
  // E_L = e^{2Δmax} Σ_k p_k Δ_k |V_kj − O_j| (§2.4, exact first-order identity for δO_j, with
  // |e^ε − 1| ≤ |ε|e^{|ε|} and E^{-1} ≤ e^{Δmax}). Keys below the M cut-off (weight < 2^-149)
  // are covered by the tail term below, whose per-key allowance exceeds their whole weight.
  const LogitBound l = logit_bound(problem_, profile_, u, n, big_m, max_a, st.max_abs_alibi(0, b, h, i));
  const double growth = std::exp(2 * l.max);
  t.logit = growth * (l.alpha * ca + l.beta * cs + l.gamma0 * c);

  // E_P (§2.5): deterministic u_P(A_j + |O_j|) — the numerator's rounding plus, when
  // the row sum is taken over the rounded P, the denominator's — or λ·u_P·W_j (§3.2), never more
  // than the deterministic one.
  if (u.u_p > 0) {
    const double det = u.u_p * (a + o);
    t.probability = prob ? std::min(det, kLambda * u.u_p * w) : det;
  }
  // Sub-normal weights (§2.5, η_P). P in fp16: weights e^{s−m} < ν_P = 2^-14 lose their relative
  // accuracy and err by ≤ η_P = 2^-25 (half the fp16 subnormal spacing), or ≤ ν_P under FTZ.
  // Any P format: a weight below fp32's normal range (2^-126) — the exp's fp32 result, or bf16,
  // which shares fp32's exponent — is off by less than 2^-125 in every rounding mode (its true
  // and computed values are both below 2ν), and Σ over such keys of |V_kj| ≤ n·max_k|V_kj|, Z ≥ 1.
  // The max ranges over the row's allowed keys only: a key the row cannot reach has no weight at
  // all, whatever its V holds (§2.5; a max over every key let ±max-finite padding make τ vacuous).
  double tails = 0;
  if (profile_.probability == DType::F16)
    tails += (profile_.flushes_subnormals ? 0x1p-14 : 0x1p-25) * st.fp16_tail(b, h, i, j);
  // e5m2 shares fp16's normal range (ν_P = 2^-14); its subnormal spacing is 2^-16 (§2.14).
  if (profile_.probability == DType::E5M2)
    tails += (profile_.flushes_subnormals ? 0x1p-14 : 0x1p-17) * st.fp16_tail(b, h, i, j);
  // e4m3's normal range starts at ν_P = 2^-6 and its subnormal spacing is 2^-9: a weight below
  // 2^-6 errs by ≤ 2^-10, or ≤ 2^-6 under FTZ, over the keys T8 sums (§2.14).
  if (profile_.probability == DType::E4M3)
    tails += (profile_.flushes_subnormals ? 0x1p-6 : 0x1p-10) * st.e4m3_tail(b, h, i, j);
  tails += 0x1p-125 * n * st.reachable_max_abs_value(b, h, i, j);
  t.probability += tails;

  // E_A (§2.6): N = ⌈n/k0⌉ + R roundings, then one division (2u: reciprocal and
  // product, or a division and the final conversion to the accumulator).
  // §3.2's model needs mean-zero rounding errors. A sum whose N addends are each about 1/N of the
  // total stagnates once N·u ≥ 1: an addend below half an ulp of the running sum is lost whole,
  // always in the same direction (fp16 over 2048 keys of diffuse, non-negative weights). Such a
  // sum keeps only its deterministic bound, and its error counts as coherent in the aggregate
  // check below (§4.4).
  const bool pv_stagnates = big_n * u.u_a >= 1, sum_stagnates = big_n * u.u_r >= 1;
  const bool prob_pv = prob && !pv_stagnates;
  const bool prob_sum = prob && !sum_stagnates;
  const double g_det = gamma(big_n, u.u_a_rounding);
  const double g = prob_pv ? std::min(g_det, gamma_probabilistic(big_n, u.u_a)) : g_det;
  // Plus, per rounding, the underflow allowance η_A: N products and sums and the final division,
  // each of which may land among the subnormals (§6.4).
  if (!u.separate_row_sum) {
    t.accumulation = g * a + (g + 2 * u.u_a_rounding) * o + (big_n + 2) * u.eta_a;
  } else {
    // §2.12: O_j = (Σ p̃_k V_kj)/Z̃ with each sum in its own accumulator. The P·V sum errs by
    // G_A·A_j, the row sum by G_R relative (Z's terms are positive), which reaches O_j as
    // G_R·|O_j|; Z ≥ 1 (it holds e^0), so the row sum's N subnormal roundings η_R are relative
    // errors ≤ N·η_R too. The division rounds in the coarser of the two.
    const double gr_det = gamma(big_n, u.u_r_rounding);
    const double gr = prob_sum ? std::min(gr_det, gamma_probabilistic(big_n, u.u_r)) : gr_det;
    const double u_div = std::max(u.u_a_rounding, u.u_r_rounding);
    t.accumulation = g * a + (gr + big_n * u.eta_r + 2 * u_div) * o + (big_n + 2) * u.eta_a;
  }
  // V rounded inside the kernel (§2.12): Σ_k p_k V_kj δ_kj with |δ_kj| ≤ u_V, so u_V·A_j, plus
  // η_V where Ṽ lands among the subnormals (Σ p_k = 1); the P·V sum then runs over |Ṽ| ≤
  // (1 + u_V)|V|. Under §3.2's model the δ_kj are independent (each a rounding of its own
  // data-random value), so λ·u_V·W_j bounds the sum as it does P's rounding in E_P.
  if (u.u_v > 0) {
    const double det = u.u_v * a;
    t.accumulation += g * u.u_v * a + (prob ? std::min(det, kLambda * u.u_v * w) : det) + u.eta_v;
  }

  // §2.14: v·dv rounded element-wise (u·A_j, as a V rounding) or O·dv at the end (u·|O_j|), in
  // the wider of the score and accumulator types; the bound allows either.
  if (problem_.has_descales()) t.accumulation += std::max(u.u_s, u.u_a_rounding) * (a + o);

  // E_ref: the double reference's own dot product (d), row sum and P·V (n), shift and exp: a
  // γ_{d+n+8}(2^-53) relative error on every quantity above; negligible by design (§1, §2.7).
  const double u64 = unit_roundoff(DType::F64);
  t.reference = gamma(static_cast<double>(problem_.qk_dim) + n + 8, u64) * (a + o + ca + cs + (big_m + 1) * c);

  // Output rounding (§2.8): no safety factor (§3.4).
  const double e = t.logit + t.probability + t.accumulation + t.reference;
  t.output = u.u_o * (o + e) + u.eta_o;

  // The aggregate check's split (compare.cpp; §4.4): which parts of the healthy error average out.
  // Random part: sums of independent rounding errors, each c·θ with θ uniform on [−1, 1] — the
  // classical statistical model of rounding to nearest on data-random values, the model behind
  // §3's λ√N bounds made specific. A uniform θ is strictly sub-Gaussian (E e^{tθ} = sinh t / t ≤
  // e^{t²/6}), so a sum Σ c_t θ_t has variance proxy Σ c_t²/3:
  //  - P rounding: Σ_k (u_P p_k(|V_kj| + |O_j|))² = (u_P W_j)²;
  //  - P·V partial sums (≤ A_j each) and the row sum (relative, times |O_j|): N u_A²(A_j² + O_j²),
  //    and the division's 2 roundings 2u_A²O_j²;
  //  - per-key logit roundings (dot: d products and sums with partial sums ≤ a_k, so (d+1)u_D²a_k²;
  //    the shift's ≤ 3 roundings of size ≤ 2M; a stored score, bias or softcap rounding ≤ u_S·M
  //    each), which reach O_j as Σ_k p_k ε_k (V_kj − O_j): Σ_k p_k² c_k² (V_kj − O_j)² ≤ c_max² W_j²;
  //  - the R rescales' argument roundings, each moving a block of keys: R(6u_S M C_j)²;
  //  - the output rounding, half the output's spacing at |O_j| + E (≤ u_O(|O_j| + E) + η_O).
  // Coherent part (bounded, not assumed to average): the exp's error as a function of its
  // argument — in every weight and every rescale — the rounded constants σ·log2e and m·c (a
  // relative change of every logit and a common shift), the tanh's error, E_ref and the tails —
  // and every result below the normal range (§6.4): there the relative model, and with it the
  // uniform θ, does not hold. A subnormal result errs by up to η_A (accumulator) or η_O (output)
  // whatever its size, and a declared flush to zero always errs toward zero, by up to the whole
  // smallest normal: an FTZ kernel whose outputs sit just below ν_O is off by ≈ ν_O everywhere,
  // in one direction. So the same (N + 2)η_A + η_O that E_A and the output term allow per element
  // is bounded here as coherent, not assumed to average out.
  //  - K rounded inside the kernel: d independent roundings per key, Σ_l (u_K|σ q_l k_kl|)² ≤
  //    (u_K a_k)²: a per-key error like the dot's. V rounded: Σ_k (u_V p_k |V_kj|)² ≤ (u_V W_j)².
  //    Q's rounding is shared by every key of the row and is counted as coherent below.
  //  - with a separate row-sum accumulator, its N roundings are N u_R² O_j² (P·V keeps N u_A² A_j²).
  const double logit_random_per_key =
      std::sqrt(static_cast<double>(problem_.qk_dim) + 1) * u.u_dot * max_a + 6 * u.u_s * big_m +
      (l.beta - 3 * u.u_s) * big_m + u.u_k * max_a + l.alibi;
  const double out_half_spacing = profile_.flushes_subnormals && o + e < smallest_normal(profile_.output)
                                      ? smallest_normal(profile_.output)
                                      : ulp_of(profile_.output, o + e) / 2;
  // (Summed in the order of the 2.0 model, so that a 2.0 profile's variance keeps its bits.)
  double variance =
      std::pow(growth * logit_random_per_key * w, 2) + r * std::pow(growth * 6 * u.u_s * big_m * c, 2) +
      std::pow(u.u_p * w, 2);
  // A stagnating sum (N·u ≥ 1, above) leaves the random part: its deterministic bound is coherent.
  double stagnating = 0;
  if (u.separate_row_sum) {
    variance = variance +
               big_n * ((pv_stagnates ? 0.0 : u.u_a * u.u_a * a * a) + (sum_stagnates ? 0.0 : u.u_r * u.u_r * o * o)) +
               2 * std::pow(std::max(u.u_a, u.u_r) * o, 2);
    if (pv_stagnates) stagnating += g_det * a;
    if (sum_stagnates) stagnating += gamma(big_n, u.u_r_rounding) * o;
  } else if (!pv_stagnates) {
    variance = variance + big_n * u.u_a * u.u_a * (a * a + o * o) + 2 * u.u_a * u.u_a * o * o;
  } else {
    variance = variance + 2 * u.u_a * u.u_a * o * o;
    stagnating += g_det * (a + o);
  }
  t.noise_variance = (variance + out_half_spacing * out_half_spacing + std::pow(u.u_v * w, 2)) / 3;
  t.coherent = growth * ((1 + r) * u.u_e * c + u.u_s * (cs + big_m * c) +
                         (problem_.softcap > 0
                              ? u.u_t * (problem_.mask == MaskKind::Additive || problem_.has_alibi() ? ca : cs)
                              : 0.0) +
                         u.u_q * ca) +
               t.reference + tails + (big_n + 2) * u.eta_a + u.eta_o + u.eta_v;
  if (stagnating > 0) t.coherent += stagnating;
  return t;
}

// LSE = m + log Z. The kernel returns m̃ + log Z̃ with Z̃ = fl(Σ_k e^{s_k − m̃ + ε_k}), |ε_k| ≤ Δ_k.
//  1. Logit perturbation: Σ e^{s_k−m̃+ε_k} = e^{m − m̃}·Z·E, E = Σ_k p_k e^{ε_k}; the e^{m−m̃}
//     cancels against the m̃ added back. Jensen gives log E ≥ Σ p_k ε_k ≥ −Σ p_k Δ_k, and
//     log E ≤ log Σ p_k e^{Δ_k} ≤ Σ p_k (e^{Δ_k} − 1) ≤ e^{Δmax} Σ p_k Δ_k. The row data hold no
//     p-weighted mean of Δ_k, so Σ p_k Δ_k ≤ Δmax: |log E| ≤ Δmax e^{Δmax}.
//  2. The sum of positive terms carries a relative error ≤ G_N (the same G as E_A): −log(1 − G).
//  3. The log's relative error u_E and a base conversion rounding u_X on |log Z̃| ≤ log n + (1) + (2).
//  4. Adding m̃ back: rounding of m·c (|m| ≤ M) and of the final sum (≈ |LSE|), u_X each, where
//     u_X is the coarser of the score and row-sum formats (the softmax arithmetic).
//  With a separate row-sum accumulator (§2.12) G and u_X use u_R, and G gains N·η_R (Z ≥ 1).
//  5. The reference's own error, γ_{d+n+8}(2^-53) on every magnitude involved.
double ToleranceModel::lse_bound(const AttentionResult& reference, std::int64_t b, std::int64_t h,
                                 std::int64_t i) const {
  if (!reference.stats) throw std::invalid_argument("ToleranceModel::lse_bound: the reference carries no row statistics");
  const RowStatistics& st = *reference.stats;
  const Units u = units_of(profile_);
  const double n = st.allowed_keys(0, b, h, i);
  if (n == 0) return 0;
  const double big_m = st.max_abs_score(0, b, h, i);
  const double max_a = st.max_dot_abs(0, b, h, i);
  const double lse = std::fabs(reference.lse(0, b, h, i));
  const LogitBound l = logit_bound(problem_, profile_, u, n, big_m, max_a, st.max_abs_alibi(0, b, h, i));
  const double big_n = accumulations(profile_, problem_, n);
  const double g_det = gamma(big_n, u.u_r_rounding);
  // A stagnating row sum (N·u_R ≥ 1, see at()) keeps only its deterministic bound.
  const bool prob_sum = probabilistic() && big_n * u.u_r < 1;
  const double g = (prob_sum ? std::min(g_det, gamma_probabilistic(big_n, u.u_r)) : g_det) +
                   (u.separate_row_sum ? big_n * u.eta_r : 0.0);
  const double u_x = std::max(u.u_s, u.u_r_rounding);
  const double perturbation = l.max * std::exp(l.max);
  // The row sum's terms are positive, so its computed value is Z·∏(1 + δ_i) over at most N
  // factors per term: |log(Z̃/Z)| ≤ −log(1 − G) while G < 1, and always ≤ −N·log(1 − u_R)
  // (each factor ≥ 1 − u_R), plus the N relative η_R of a separate row sum.
  const double sum = g < 1 ? -std::log1p(-g)
                           : -big_n * std::log1p(-u.u_r_rounding) + (u.separate_row_sum ? big_n * u.eta_r : 0.0);
  const double log_error = (u.u_e + u_x) * (std::log(n) + perturbation + sum);
  const double add_back = u_x * (big_m + lse + perturbation + sum + log_error);
  const double ref = gamma(static_cast<double>(problem_.qk_dim) + n + 8, unit_roundoff(DType::F64)) *
                     (max_a + big_m + std::log(n) + lse);
  return perturbation + sum + log_error + add_back + ref;
}

HostTensor ToleranceModel::tau_tensor(const AttentionResult& reference) const {
  HostTensor tau(reference.out.shape);
  const Shape4& s = tau.shape;
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t h = 0; h < s[1]; ++h)
      for (std::int64_t i = 0; i < s[2]; ++i)
        for (std::int64_t j = 0; j < s[3]; ++j) tau(b, h, i, j) = at(reference, b, h, i, j).total();
  return tau;
}

}  // namespace attncheck
