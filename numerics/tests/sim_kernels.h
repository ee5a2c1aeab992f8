/// \file sim_kernels.h
/// \brief Emulated attention kernels for testing the tolerance model itself
/// (numerics/README.md §5.2).
///
/// Each kernel computes one head row by row the way a GPU kernel does: an fp32 (or narrower) Q·Kᵀ
/// accumulator, fp32 softmax arithmetic with expf, optional online softmax with a running max and
/// rescales, P optionally re-rounded to fp16/bf16 before P·V, an fp32 P·V and row-sum accumulator
/// rounding to nearest or toward zero, and the output rounded to its dtype. Narrow formats are
/// emulated with round_to(); round-toward-zero fp32 addition is the exact sum (TwoSum in double)
/// truncated to fp32. Defects are the ones numerics/README.md §5.1–§5.2 lists.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attncheck/compare.h"
#include "attncheck/dtype.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"
#include "attncheck/tensor.h"

namespace attncheck::sim {

enum class Defect : std::uint8_t {
  None,
  PvAccumulatedNarrow,  ///< P·V accumulator re-rounded to `narrow` after every addition
  QkAccumulatedNarrow,  ///< Q·Kᵀ accumulator re-rounded to `narrow` after every addition
  DroppedKey,           ///< the last key of every row is skipped (an off-by-one mask)
  LogitsStoredNarrow,   ///< scaled scores stored in `narrow` while the profile says fp32
  ScaleOff,             ///< softmax scale multiplied by (1 + 2^-10)
};

inline const char* defect_name(Defect d) {
  switch (d) {
    case Defect::None: return "healthy";
    case Defect::PvAccumulatedNarrow: return "PV-acc-narrow";
    case Defect::QkAccumulatedNarrow: return "QK-acc-narrow";
    case Defect::DroppedKey: return "dropped-key";
    case Defect::LogitsStoredNarrow: return "logits-narrow";
    case Defect::ScaleOff: return "scale-2^-10";
  }
  return "?";
}

/// How an emulated kernel computes. `declared()` is the profile an honest kernel of this kind
/// declares; a defect is a kernel that computes differently from its declaration.
struct KernelSpec {
  DType input = DType::F32;
  DType probability = DType::F32;  ///< P as used in P·V (F32: kept as the exp produced it)
  DType output = DType::F32;
  DType score = DType::F32;        ///< scaled scores stored in this after the fp32 accumulator
  Rounding rounding = Rounding::Nearest;
  int block = 0;                   ///< online-softmax block; 0 = three-pass
  Defect defect = Defect::None;
  DType narrow = DType::F16;        ///< the format a defect rounds to

  NumericsProfile declared() const {
    NumericsProfile p;
    p.input = input;
    p.score = score;
    if (score != DType::F32) p.score_accumulator = DType::F32;
    p.probability = probability;
    p.accumulator = DType::F32;
    p.output = output;
    p.accumulation_rounding = rounding;
    p.softmax_block = block;
    p.deterministic = true;
    p.writes_lse = true;
    return p;
  }
};

/// One generated problem: B = 1, one head, Lq = rows, Lk = n, Dk = Dv = d.
struct Case {
  Problem problem;
  HostTensor q, k, v;
  AttentionInputs inputs() const { return {q.view(), k.view(), v.view(), {}, {}}; }
};

/// N(0, 1) by Box–Muller from mt19937_64, whose output sequence the standard fixes, so a seed
/// gives the same data with every standard library.
class Normal {
 public:
  explicit Normal(std::uint64_t seed) : rng_(seed) {}
  double operator()() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(rng_() >> 11) + 0.5) * 0x1p-53;
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)), t = 2.0 * 3.14159265358979323846 * u2;
    spare_ = r * std::sin(t);
    have_spare_ = true;
    return r * std::cos(t);
  }

 private:
  std::mt19937_64 rng_;
  double spare_ = 0;
  bool have_spare_ = false;
};

/// Q, K, V ~ N(0, 1) rounded to `input` (numerics/README.md §1: the reference sees the same
/// values); Q is multiplied by logit_std first, which sets the logits' standard deviation.
inline Case make_case(DType input, std::int64_t n, std::int64_t d, std::int64_t rows, std::uint64_t seed,
                      double logit_std) {
  Case c;
  c.problem.q_len = rows;
  c.problem.k_len = n;
  c.problem.qk_dim = d;
  c.problem.v_dim = d;
  Normal normal(seed);
  c.q = HostTensor({1, 1, rows, d});
  c.k = HostTensor({1, 1, n, d});
  c.v = HostTensor({1, 1, n, d});
  for (double& x : c.k.values) x = round_to(input, normal());
  for (double& x : c.v.values) x = round_to(input, normal());
  for (double& x : c.q.values) x = round_to(input, normal() * logit_std);
  return c;
}

inline AttentionResult reference_of(const Case& c) {
  ReferenceOptions options;
  options.row_statistics = true;
  options.threads = 2;
  return reference_attention(c.problem, c.inputs(), options);
}

/// fp32 addition rounding to nearest or toward zero. Toward zero: a + b = s + e exactly (TwoSum
/// in double, whose sum of two floats never overflows), then the fp32 nearest to s is stepped
/// toward zero when it lies beyond the exact sum in magnitude.
inline float add(float a, float b, Rounding rounding) {
  if (rounding == Rounding::Nearest) return a + b;
  const double x = a, y = b;
  const double s = x + y;
  const double bb = s - x;
  const double e = (x - (s - bb)) + (y - bb);
  float r = static_cast<float>(s);
  const double over = (static_cast<double>(r) - s) - e;  // r − (s + e); r − s is exact (Sterbenz)
  if ((s + e > 0 && over > 0) || (s + e < 0 && over < 0)) r = std::nextafter(r, 0.0f);
  return r;
}

/// Runs the kernel on every row; returns O [1, 1, rows, d] (values of the output dtype) and
/// writes the LSE [1, 1, 1, rows] (fp32).
inline HostTensor run_kernel(const KernelSpec& spec, const Case& c, HostTensor* lse_out = nullptr) {
  const std::int64_t rows = c.problem.q_len, n = c.problem.k_len, d = c.problem.qk_dim;
  const double sigma = c.problem.effective_scale() * (spec.defect == Defect::ScaleOff ? 1.0 + 0x1p-10 : 1.0);
  const auto sigma_f = static_cast<float>(sigma);
  const std::int64_t block = spec.block > 0 ? spec.block : n;
  const std::int64_t keys = spec.defect == Defect::DroppedKey ? n - 1 : n;
  HostTensor out({1, 1, rows, d});
  if (lse_out) *lse_out = HostTensor({1, 1, 1, rows});
  std::vector<float> k(static_cast<size_t>(n * d)), v(static_cast<size_t>(n * d)), q(static_cast<size_t>(d));
  for (size_t x = 0; x < k.size(); ++x) k[x] = static_cast<float>(c.k.values[x]);
  for (size_t x = 0; x < v.size(); ++x) v[x] = static_cast<float>(c.v.values[x]);
  std::vector<float> s(static_cast<size_t>(n)), acc(static_cast<size_t>(d));
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t l = 0; l < d; ++l) q[static_cast<size_t>(l)] = static_cast<float>(c.q(0, 0, i, l));
    // Scores: fp32 products (exact for fp16/bf16 inputs), fp32 accumulation, one fp32 scaling.
    for (std::int64_t key = 0; key < keys; ++key) {
      float dot = 0.0f;
      const float* kr = &k[static_cast<size_t>(key * d)];
      for (std::int64_t l = 0; l < d; ++l) {
        dot = add(dot, q[static_cast<size_t>(l)] * kr[l], spec.rounding);
        if (spec.defect == Defect::QkAccumulatedNarrow) dot = static_cast<float>(round_to(spec.narrow, dot));
      }
      float score = dot * sigma_f;
      if (spec.score != DType::F32) score = static_cast<float>(round_to(spec.score, score));
      if (spec.defect == Defect::LogitsStoredNarrow) score = static_cast<float>(round_to(spec.narrow, score));
      s[static_cast<size_t>(key)] = score;
    }
    // Softmax and P·V, one block of keys at a time (one block for three-pass).
    float m = -std::numeric_limits<float>::infinity(), row_sum = 0.0f;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::int64_t k0 = 0; k0 < keys; k0 += block) {
      const std::int64_t k1 = std::min(keys, k0 + block);
      float m_new = m;
      for (std::int64_t key = k0; key < k1; ++key) m_new = std::max(m_new, s[static_cast<size_t>(key)]);
      if (k0 > 0) {  // rescale what the earlier blocks accumulated: e^{m_old − m_new}
        const float alpha = std::exp(m - m_new);
        row_sum *= alpha;
        for (float& a : acc) a *= alpha;
      }
      m = m_new;
      float block_sum = 0.0f;
      for (std::int64_t key = k0; key < k1; ++key) {
        const float w = std::exp(s[static_cast<size_t>(key)] - m);
        block_sum = add(block_sum, w, spec.rounding);
        const auto p = static_cast<float>(round_to(spec.probability, w));
        const float* vr = &v[static_cast<size_t>(key * d)];
        for (std::int64_t j = 0; j < d; ++j) {
          float& a = acc[static_cast<size_t>(j)];
          a = add(a, p * vr[j], spec.rounding);
          if (spec.defect == Defect::PvAccumulatedNarrow) a = static_cast<float>(round_to(spec.narrow, a));
        }
      }
      row_sum = add(row_sum, block_sum, spec.rounding);
    }
    for (std::int64_t j = 0; j < d; ++j) out(0, 0, i, j) = round_to(spec.output, acc[static_cast<size_t>(j)] / row_sum);
    if (lse_out) (*lse_out)(0, 0, 0, i) = static_cast<double>(m + std::log(row_sum));
  }
  return out;
}

/// Runs a kernel and judges it against its declared profile.
inline Verdict judge(const KernelSpec& spec, const Case& c, const AttentionResult& ref,
                     DataCharacter data = DataCharacter::GenericRandom) {
  HostTensor lse;
  const HostTensor out = run_kernel(spec, c, &lse);
  CompareOptions options;
  options.data = data;
  return compare_attention(c.problem, spec.declared(), c.inputs(), ref, out, &lse, options);
}

}  // namespace attncheck::sim
