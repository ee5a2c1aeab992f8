#include "plain_attention.h"

#include <cmath>
#include <limits>

namespace attncheck::testing {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

std::int64_t key_length_of(const Problem& p, const AttentionInputs& in, std::int64_t b) {
  return p.has_key_lengths ? in.key_lengths[static_cast<std::size_t>(b)] : p.k_len;
}

double mask_at(const Problem& p, const AttentionInputs& in, std::int64_t b, std::int64_t h, std::int64_t i,
               std::int64_t j) {
  return in.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, j);
}
}  // namespace

bool plain_key_allowed(const Problem& p, const AttentionInputs& in, std::int64_t b, std::int64_t h,
                       std::int64_t i, std::int64_t j) {
  const std::int64_t length = key_length_of(p, in, b);
  if (j >= length) return false;  // key lengths (padding)
  std::int64_t offset = 0;
  if (p.alignment == Alignment::BottomRight) offset = p.k_len - p.q_len;
  if (p.alignment == Alignment::Offset) offset = p.diagonal_offset;
  if (p.alignment == Alignment::KeyLengths) offset = length - p.q_len;
  const std::int64_t diagonal = i + offset;
  if (p.causal && j > diagonal) return false;
  if (p.window_left >= 0 && j < diagonal - p.window_left) return false;
  if (p.window_right >= 0 && j > diagonal + p.window_right) return false;
  if (p.mask != MaskKind::None) {
    if (j >= p.mask_k_len) return false;  // a short mask is padded with "masked" (ONNX opset 24)
    const double m = mask_at(p, in, b, h, i, j);
    if (p.mask == MaskKind::Boolean && m == 0.0) return false;
    if (p.mask == MaskKind::Additive && m == -kInf) return false;
  }
  return true;
}

PlainResult plain_attention(const Problem& p, const AttentionInputs& in) {
  const Shape4 rows{1, p.batch, p.q_heads, p.q_len}, elements{p.batch, p.q_heads, p.q_len, p.v_dim};
  PlainResult r;
  r.out = HostTensor(elements);
  r.lse = HostTensor(rows);
  r.probabilities = HostTensor({p.batch, p.q_heads, p.q_len, p.k_len});
  r.allowed = HostTensor(r.probabilities.shape);
  for (HostTensor* t : {&r.allowed_keys, &r.max_abs_score, &r.max_score, &r.max_dot_abs}) *t = HostTensor(rows);
  for (HostTensor* t : {&r.row_scale, &r.spread, &r.centered, &r.centered_dot, &r.centered_score, &r.fp16_tail, &r.e4m3_tail})
    *t = HostTensor(elements);
  const double scale = p.scale ? *p.scale : 1.0 / std::sqrt(static_cast<double>(p.qk_dim));
  const std::int64_t group = p.q_heads / p.kv_heads;

  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const std::int64_t g = h / group;
        std::vector<double> s(static_cast<std::size_t>(p.k_len)), a(s.size());
        std::vector<bool> allowed(s.size());
        double m = -kInf;
        double n = 0;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          allowed[j] = plain_key_allowed(p, in, b, h, i, j);
          r.allowed(b, h, i, j) = allowed[j] ? 1.0 : 0.0;
          if (!allowed[j]) continue;
          double dot = 0, dot_abs = 0;
          for (std::int64_t l = 0; l < p.qk_dim; ++l) {
            dot += in.q(b, h, i, l) * in.k(b, g, j, l);
            dot_abs += std::fabs(in.q(b, h, i, l) * in.k(b, g, j, l));
          }
          double score = scale * dot;
          if (p.softcap > 0) score = p.softcap * std::tanh(score / p.softcap);
          if (p.mask == MaskKind::Additive) score += mask_at(p, in, b, h, i, j);
          s[j] = score;
          a[j] = std::fabs(scale) * dot_abs;
          m = std::max(m, score);
          n += 1;
        }
        r.allowed_keys(0, b, h, i) = n;
        r.max_score(0, b, h, i) = m;
        if (n == 0) {  // no allowed key: O = 0, LSE = −inf
          r.lse(0, b, h, i) = -kInf;
          continue;
        }
        double z = 0, big_m = 0, max_a = 0;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          if (!allowed[j]) continue;
          z += std::exp(s[j] - m);
          if (s[j] - m > -104.0) big_m = std::max(big_m, std::fabs(s[j]));
          max_a = std::max(max_a, a[j]);
        }
        r.lse(0, b, h, i) = m + std::log(z);
        r.max_abs_score(0, b, h, i) = big_m;
        r.max_dot_abs(0, b, h, i) = max_a;
        for (std::int64_t j = 0; j < p.k_len; ++j)
          r.probabilities(b, h, i, j) = allowed[j] ? std::exp(s[j] - m) / z : 0.0;
        for (std::int64_t c = 0; c < p.v_dim; ++c) {
          double o = 0;
          for (std::int64_t j = 0; j < p.k_len; ++j)
            if (allowed[j]) o += r.probabilities(b, h, i, j) * in.v(b, g, j, c);
          r.out(b, h, i, c) = o;
          double row_scale = 0, spread = 0, centered = 0, centered_dot = 0, centered_score = 0, tail = 0, tail8 = 0;
          for (std::int64_t j = 0; j < p.k_len; ++j) {
            if (!allowed[j]) continue;
            const double pk = r.probabilities(b, h, i, j), vj = in.v(b, g, j, c);
            row_scale += pk * std::fabs(vj);
            spread += pk * pk * (std::fabs(vj) + std::fabs(o)) * (std::fabs(vj) + std::fabs(o));
            centered += pk * std::fabs(vj - o);
            centered_dot += pk * a[j] * std::fabs(vj - o);
            centered_score += pk * std::fabs(s[j]) * std::fabs(vj - o);
            if (std::exp(s[j] - m) < std::ldexp(1.0, -14)) tail += std::fabs(vj) / z;
            if (std::exp(s[j] - m) < std::ldexp(1.0, -6)) tail8 += std::fabs(vj) / z;
          }
          r.row_scale(b, h, i, c) = row_scale;
          r.spread(b, h, i, c) = std::sqrt(spread);
          r.centered(b, h, i, c) = centered;
          r.centered_dot(b, h, i, c) = centered_dot;
          r.centered_score(b, h, i, c) = centered_score;
          r.fp16_tail(b, h, i, c) = tail;
          r.e4m3_tail(b, h, i, c) = tail8;
        }
      }
  return r;
}

HostTensor random_tensor(const Shape4& shape, std::mt19937_64& rng, double scale) {
  HostTensor t(shape);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (double& x : t.values) x = scale * normal(rng);
  return t;
}

StridedCopy strided_copy(const View4<const double>& logical, const std::array<int, 4>& memory_order,
                         std::int64_t spacing, double filler) {
  const Shape4& s = logical.shape;
  Shape4 strides{};
  std::int64_t stride = spacing;
  for (int k = 3; k >= 0; --k) {
    strides[memory_order[k]] = stride;
    stride *= s[memory_order[k]];
  }
  StridedCopy copy;
  copy.storage.assign(static_cast<std::size_t>(element_count(s) * spacing), filler);
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d)
          copy.storage[a * strides[0] + b * strides[1] + c * strides[2] + d * strides[3]] = logical(a, b, c, d);
  copy.view = {copy.storage.data(), s, strides};
  return copy;
}

}  // namespace attncheck::testing
