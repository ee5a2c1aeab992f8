/// \file naive_attention.cuh
/// \brief cuda-naive's kernel: one thread per query row, a single pass over the row's keys with
/// an online softmax (Milakov & Gimelshein) updated after every key.
///
/// For each allowed key with score s, in key order:
///   m_new = max(m, s);  α = e^{m − m_new};  p = e^{s − m_new};
///   l = l·α + p;        acc = acc·α + p·v_j
/// and at the end O = acc / l, LSE = m + log l. Masked keys are skipped before any arithmetic, so
/// m stays −inf only while nothing has been added, and −inf − (−inf) never forms.
#pragma once

#include "attention_common.cuh"

ATTNCHECK_KERNEL_NAMESPACE_BEGIN

/// Largest Dk and Dv the naive kernel handles: q and the accumulator live in per-thread arrays.
inline constexpr int kNaiveMaxHeadDim = 256;

/// grid (⌈Lq / blockDim.x⌉, Hq, B); no shared memory, no barriers.
template <class T>
__global__ void naive_attention_kernel(AttentionParams p) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  if (i >= p.q_len) return;
  const std::int64_t kv = h / p.group;
  const std::int64_t key_length = key_length_of(p, b);
  const KeyRange range = row_key_range(p, i, key_length);

  float q[kNaiveMaxHeadDim];
  float acc[kNaiveMaxHeadDim];
  for (std::int64_t d = 0; d < p.qk_dim; ++d) q[d] = to_float(element<T>(p.q, b, h, i, d));
  for (std::int64_t d = 0; d < p.v_dim; ++d) acc[d] = 0.0f;

  float m = negative_infinity(), l = 0.0f;
  for (std::int64_t j = range.first; j < range.last; ++j) {
    float dot = 0.0f;
    for (std::int64_t d = 0; d < p.qk_dim; ++d) dot += q[d] * to_float(element<T>(p.k, b, kv, j, d));
    const float s = final_score<T>(p, dot, b, h, i, j);
    if (s == negative_infinity()) continue;  // masked: contributes exactly nothing
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new);  // m = −inf (first key): e^{−inf} = 0, acc and l are 0 anyway
    const float weight = expf(s - m_new);
    l = l * alpha + weight;
    for (std::int64_t d = 0; d < p.v_dim; ++d) {
      // A weight that underflowed to 0 must not multiply a non-finite V into the row (0·Inf).
      const float contribution = weight != 0.0f ? weight * to_float(element<T>(p.v, b, kv, j, d)) : 0.0f;
      acc[d] = acc[d] * alpha + contribution;
    }
    m = m_new;
  }

  // A row with no allowed key: O = 0, LSE = −inf (the zeros convention).
  for (std::int64_t d = 0; d < p.v_dim; ++d)
    mutable_element<T>(p.out, b, h, i, d) = from_float<T>(l == 0.0f ? 0.0f : acc[d] / l);
  write_lse(p, b, h, i, m, l);
}

ATTNCHECK_KERNEL_NAMESPACE_END
