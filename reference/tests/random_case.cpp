#include "random_case.h"

#include <fmt/format.h>

#include <limits>

namespace attncheck::testing {
namespace {

std::int64_t uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}
bool coin(std::mt19937_64& rng, double p_true = 0.5) { return std::bernoulli_distribution(p_true)(rng); }

// One of four layouts: compact [B, H, L, D], sequence-major [B, L, H, D], compact with a gap of
// one element between neighbours (no axis contiguous), sequence-major with a gap.
StridedCopy lay_out(const HostTensor& t, int choice, std::string_view name, std::string& layout) {
  const std::array<int, 4> head_major{0, 1, 2, 3}, sequence_major{0, 2, 1, 3};
  static constexpr const char* kNames[4] = {"BHLD", "BLHD", "BHLD+gap", "BLHD+gap"};
  layout += fmt::format("{}:{} ", name, kNames[choice]);
  // NaN in the gaps: a read outside the view would poison the output.
  const double gap = std::numeric_limits<double>::quiet_NaN();
  return strided_copy(t.view(), choice % 2 == 0 ? head_major : sequence_major, choice >= 2 ? 2 : 1, gap);
}

// Q, K, V, the mask's values, the key lengths and the layouts of c.problem.
void draw_inputs(RandomCase& c, std::mt19937_64& rng, double large_q) {
  const Problem& p = c.problem;
  // Logits from about ±3 (unit Q, K) to about ±30 (Q ten times larger), so that rows range from
  // flat to nearly one-hot.
  const double q_scale = coin(rng, large_q) ? 10.0 : 1.0;
  c.q = random_tensor({p.batch, p.q_heads, p.q_len, p.qk_dim}, rng, q_scale);
  c.k = random_tensor({p.batch, p.kv_heads, p.k_len, p.qk_dim}, rng);
  c.v = random_tensor({p.batch, p.kv_heads, p.k_len, p.v_dim}, rng);
  if (p.mask != MaskKind::None) {
    c.mask = HostTensor({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len});
    const double attend = coin(rng, 0.2) ? 0.15 : 0.75;  // sparse masks make empty rows
    for (double& m : c.mask.values) {
      if (p.mask == MaskKind::Boolean)
        m = coin(rng, attend) ? 1.0 : 0.0;
      else
        m = coin(rng, attend) ? std::normal_distribution<double>(0.0, 2.0)(rng)
                              : -std::numeric_limits<double>::infinity();
    }
  }
  if (p.has_key_lengths)
    for (std::int64_t b = 0; b < p.batch; ++b) c.key_lengths.push_back(coin(rng, 0.15) ? 0 : uniform(rng, 0, p.k_len));

  c.q_laid = lay_out_randomly(c.q, rng, "q", c.layout);
  c.k_laid = lay_out_randomly(c.k, rng, "k", c.layout);
  c.v_laid = lay_out_randomly(c.v, rng, "v", c.layout);
  if (p.mask != MaskKind::None) c.mask_laid = lay_out_randomly(c.mask, rng, "mask", c.layout);
}

}  // namespace

StridedCopy lay_out_randomly(const HostTensor& t, std::mt19937_64& rng, std::string_view name, std::string& layout) {
  return lay_out(t, static_cast<int>(uniform(rng, 0, 3)), name, layout);
}

RandomCase make_random_inputs(const Problem& problem, std::mt19937_64& rng, double large_q) {
  RandomCase c;
  c.problem = problem;
  c.options.threads = 1;
  draw_inputs(c, rng, large_q);
  return c;
}

RandomCase make_random_case(std::mt19937_64& rng, const RandomCaseSizes& sizes) {
  RandomCase c;
  Problem& p = c.problem;
  p.batch = uniform(rng, 1, sizes.max_batch);
  p.kv_heads = uniform(rng, 1, sizes.max_kv_heads);
  p.q_heads = p.kv_heads * uniform(rng, 1, sizes.max_group);  // MHA, GQA and MQA ratios
  auto length = [&] {
    return coin(rng, 0.2) ? uniform(rng, sizes.min_long_len, sizes.max_long_len) : uniform(rng, 1, sizes.max_short_len);
  };
  p.q_len = length();
  p.k_len = length();
  p.qk_dim = uniform(rng, 1, sizes.max_dim);
  p.v_dim = coin(rng, 0.3) ? p.qk_dim : uniform(rng, 1, sizes.max_dim);
  if (coin(rng, 0.3)) p.scale = std::uniform_real_distribution<double>(-1.5, 1.5)(rng);
  if (coin(rng, 0.3)) p.softcap = std::uniform_real_distribution<double>(0.5, 5.0)(rng);
  p.causal = coin(rng);
  p.alignment = static_cast<Alignment>(uniform(rng, 0, 3));
  if (p.alignment == Alignment::Offset) p.diagonal_offset = uniform(rng, 0, p.k_len);
  if (coin(rng, 0.35)) {
    p.window_left = uniform(rng, -1, 4);
    p.window_right = uniform(rng, -1, 4);
  }
  p.has_key_lengths = p.alignment == Alignment::KeyLengths || coin(rng, 0.3);
  p.mask = static_cast<MaskKind>(uniform(rng, 0, 2));
  if (p.mask != MaskKind::None) {
    p.mask_batch = coin(rng) ? 1 : p.batch;
    p.mask_heads = coin(rng) ? 1 : p.q_heads;
    p.mask_q_len = coin(rng) ? 1 : p.q_len;
    p.mask_k_len = coin(rng) ? p.k_len : uniform(rng, 1, p.k_len);  // short masks
  }

  ReferenceOptions& o = c.options;
  o.row_block = coin(rng) ? uniform(rng, 1, 4) : 128;
  o.threads = static_cast<int>(uniform(rng, 1, 3));
  o.probabilities = true;
  o.row_statistics = coin(rng);

  draw_inputs(c, rng, sizes.large_q);
  return c;
}

}  // namespace attncheck::testing
