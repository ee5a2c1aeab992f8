#include "plain_backward.h"

#include <cmath>
#include <limits>
#include <vector>

namespace attncheck::testing {

PlainGradients plain_attention_backward(const Problem& p, const AttentionInputs& in, const BackwardInputs& bw) {
  const double inf = std::numeric_limits<double>::infinity();
  const double scale = p.scale ? *p.scale : 1.0 / std::sqrt(static_cast<double>(p.qk_dim));
  const std::int64_t group = p.q_heads / p.kv_heads;
  PlainGradients g;
  g.d_q = g.d_q_scale = HostTensor({p.batch, p.q_heads, p.q_len, p.qk_dim});
  g.d_k = g.d_k_scale = HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim});
  g.d_v = g.d_v_scale = HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim});
  const bool additive = p.mask == MaskKind::Additive;
  if (additive) g.d_bias = g.d_bias_scale = HostTensor({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len});

  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      for (std::int64_t i = 0; i < p.q_len; ++i) {
        const double lse = bw.lse(0, b, h, i);
        if (lse == -inf) continue;  // a row with no allowed key contributes nothing
        const std::int64_t kv = h / group;
        const std::size_t n = static_cast<std::size_t>(p.k_len);
        std::vector<bool> allowed(n);
        std::vector<double> z(n), slope(n, 1.0), weight(n, 0.0);
        double dot_abs_max = 0, z_abs_max = 0;
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          allowed[j] = plain_key_allowed(p, in, b, h, i, j);
          if (!allowed[j]) continue;
          double dot = 0, dot_abs = 0;
          for (std::int64_t l = 0; l < p.qk_dim; ++l) {
            dot += in.q(b, h, i, l) * in.k(b, kv, j, l);
            dot_abs += std::fabs(in.q(b, h, i, l) * in.k(b, kv, j, l));
          }
          const double raw = scale * dot;  // (1)
          double capped = raw;
          if (p.softcap > 0) {  // (2), and its derivative for (12)
            const double t = std::tanh(raw / p.softcap);
            capped = p.softcap * t;
            slope[j] = 1.0 - t * t;
          }
          z[j] = capped;  // (3)
          if (additive)
            z[j] += in.mask(p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, j);
          weight[j] = std::exp(z[j] - lse);  // (4) from the given LSE
          dot_abs_max = std::max(dot_abs_max, std::fabs(scale) * dot_abs);
          z_abs_max = std::max(z_abs_max, std::fabs(z[j]));
        }
        // The row's logit scale: a rounding of a score, of e^{z − LSE} and of the bias sum is
        // relative to one of these (backward_test.cpp, "The agreement bound").
        const double row_factor = 1.0 + dot_abs_max + z_abs_max + std::fabs(lse);
        double d_row = 0, d_row_abs = 0;  // (9) D_i = dO_i·O_i, and Σ|dO||O|
        for (std::int64_t c = 0; c < p.v_dim; ++c) {
          d_row += bw.d_out(b, h, i, c) * bw.out(b, h, i, c);
          d_row_abs += std::fabs(bw.d_out(b, h, i, c) * bw.out(b, h, i, c));
        }
        const double d_lse = bw.d_lse.empty() ? 0.0 : bw.d_lse(0, b, h, i);
        for (std::int64_t j = 0; j < p.k_len; ++j) {
          if (!allowed[j]) continue;
          double d_p = 0, d_p_abs = 0;  // (7)
          for (std::int64_t c = 0; c < p.v_dim; ++c) {
            d_p += bw.d_out(b, h, i, c) * in.v(b, kv, j, c);
            d_p_abs += std::fabs(bw.d_out(b, h, i, c) * in.v(b, kv, j, c));
          }
          const double dz = weight[j] * (d_p - d_row + d_lse);  // (10)
          const double dz_scale = row_factor * weight[j] * (d_p_abs + d_row_abs + std::fabs(d_lse));
          const double ds = dz * slope[j];  // (12)
          // 0.01: the slope's own rounding (a few u absolute, even where the slope is tiny) must
          // fit under the bound; see backward_test.cpp.
          const double ds_scale = dz_scale * (slope[j] + 0.01);
          if (additive && j < p.mask_k_len) {  // (11)
            const Shape4 at{p.mask_batch == 1 ? 0 : b, p.mask_heads == 1 ? 0 : h, p.mask_q_len == 1 ? 0 : i, j};
            g.d_bias(at[0], at[1], at[2], at[3]) += dz;
            g.d_bias_scale(at[0], at[1], at[2], at[3]) += dz_scale;
          }
          for (std::int64_t l = 0; l < p.qk_dim; ++l) {  // (13)
            g.d_q(b, h, i, l) += scale * ds * in.k(b, kv, j, l);
            g.d_q_scale(b, h, i, l) += std::fabs(scale) * ds_scale * std::fabs(in.k(b, kv, j, l));
            g.d_k(b, kv, j, l) += scale * ds * in.q(b, h, i, l);
            g.d_k_scale(b, kv, j, l) += std::fabs(scale) * ds_scale * std::fabs(in.q(b, h, i, l));
          }
          for (std::int64_t c = 0; c < p.v_dim; ++c) {  // (6)
            g.d_v(b, kv, j, c) += weight[j] * bw.d_out(b, h, i, c);
            g.d_v_scale(b, kv, j, c) += row_factor * weight[j] * std::fabs(bw.d_out(b, h, i, c));
          }
        }
      }
  return g;
}

}  // namespace attncheck::testing
