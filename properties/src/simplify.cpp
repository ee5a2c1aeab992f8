#include "attncheck/simplify.h"

#include <algorithm>
#include <fmt/format.h>

namespace attncheck {
namespace {

// A step that changes one dimension must keep the rest of the case consistent with it: a mask
// that spanned the old length spans the new one, fixed key lengths stay within Lk.
void fit_to_sizes(AttentionCase& c, const Problem& before) {
  Problem& p = c.problem;
  if (p.mask != MaskKind::None) {
    if (p.mask_batch == before.batch) p.mask_batch = p.batch;
    if (p.mask_heads == before.q_heads) p.mask_heads = p.q_heads;
    if (p.mask_q_len == before.q_len) p.mask_q_len = p.q_len;
    if (p.mask_batch != p.batch) p.mask_batch = 1;
    if (p.mask_heads != p.q_heads) p.mask_heads = 1;
    if (p.mask_q_len != p.q_len) p.mask_q_len = 1;
    p.mask_k_len = p.mask_k_len == before.k_len ? p.k_len : std::min(p.mask_k_len, p.k_len);
  }
  if (static_cast<std::int64_t>(c.key_lengths.size()) > p.batch) c.key_lengths.resize(static_cast<std::size_t>(p.batch));
  for (auto& length : c.key_lengths) length = std::min(length, p.k_len);
  if (static_cast<std::int64_t>(c.query_lengths.size()) > p.batch) c.query_lengths.resize(static_cast<std::size_t>(p.batch));
  for (auto& length : c.query_lengths) length = std::min(length, p.q_len);
  if (p.alignment == Alignment::Offset) p.diagonal_offset = std::min(p.diagonal_offset, p.k_len);
  if (p.window_left > p.k_len) p.window_left = p.k_len;
  if (p.window_right > p.k_len) p.window_right = p.k_len;
}

bool valid(const AttentionCase& c) {
  try {
    c.problem.validate();
    if (!c.key_lengths.empty() && static_cast<std::int64_t>(c.key_lengths.size()) != c.problem.batch) return false;
    if (!c.query_lengths.empty() && static_cast<std::int64_t>(c.query_lengths.size()) != c.problem.batch) return false;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// 1, half and one less: the first that still fails is kept, and the next pass tries again.
std::vector<std::int64_t> smaller_sizes(std::int64_t n, std::int64_t lowest = 1) {
  std::vector<std::int64_t> sizes;
  for (std::int64_t m : {lowest, n / 2, n - 1})
    if (m >= lowest && m < n && std::find(sizes.begin(), sizes.end(), m) == sizes.end()) sizes.push_back(m);
  return sizes;
}

}  // namespace

std::vector<SimplificationStep> simplification_steps(const AttentionCase& c) {
  std::vector<SimplificationStep> steps;
  const Problem& p = c.problem;
  auto add = [&](std::string option, std::string what, auto&& change) {
    AttentionCase next = c;
    change(next);
    fit_to_sizes(next, p);
    if (valid(next) && next.describe() != c.describe()) steps.push_back({std::move(option), std::move(what), std::move(next)});
  };

  // Options first: removing one is the larger simplification.
  if (p.softcap != 0) add("softcap", fmt::format("softcap={} → off", p.softcap), [](AttentionCase& n) { n.problem.softcap = 0; });
  if (p.has_alibi()) {
    add("alibi", fmt::format("alibi={} → off", alibi_slopes_name(p.alibi)), [](AttentionCase& n) { n.problem.alibi = AlibiSlopes::None; });
    if (p.alibi == AlibiSlopes::PerBatchHead)
      add("", "alibi batch-head → head", [](AttentionCase& n) { n.problem.alibi = AlibiSlopes::PerHead; });
  }
  if (p.sinks) add("sinks", "sinks → off", [](AttentionCase& n) { n.problem.sinks = false; });
  if (p.is_paged()) {  // the cache stays paged (the paged properties' statement needs it), simpler
    if (c.shared_prefix) add("", "shared prefix → none", [](AttentionCase& n) { n.shared_prefix = false; });
    if (c.page_shuffle != 0) add("", "page shuffle → 0", [](AttentionCase& n) { n.page_shuffle = 0; });
    if (p.kv_storage == KvStorage::PagedHeadMajor)
      add("", "kv paged-head → paged", [](AttentionCase& n) { n.problem.kv_storage = KvStorage::PagedTokenMajor; });
    if (p.page_size > 1) add("", fmt::format("page size {} → 1", p.page_size), [](AttentionCase& n) { n.problem.page_size = 1; });
  }
  if (p.varlen && p.alignment == Alignment::BottomRight && p.causal)  // the batch stays packed (its properties need it)
    add("", "varlen align bottom-right → top-left", [](AttentionCase& n) { n.problem.alignment = Alignment::TopLeft; });
  if (p.has_window()) {
    add("window", fmt::format("window={},{} → off", p.window_left, p.window_right), [](AttentionCase& n) {
      n.problem.window_left = n.problem.window_right = -1;
    });
    if (p.window_left >= 0 && p.window_right >= 0) {
      add("", fmt::format("window left {} → unbounded", p.window_left), [](AttentionCase& n) { n.problem.window_left = -1; });
      add("", fmt::format("window right {} → unbounded", p.window_right), [](AttentionCase& n) { n.problem.window_right = -1; });
    }
  }
  if (p.mask != MaskKind::None) {
    add("mask", fmt::format("mask={} → none", mask_kind_name(p.mask)), [](AttentionCase& n) {
      Problem& q = n.problem;
      q.mask = MaskKind::None;
      q.mask_batch = q.mask_heads = q.mask_q_len = q.mask_k_len = 1;
    });
    if (p.mask == MaskKind::Additive)
      add("", "mask bias → bool", [](AttentionCase& n) { n.problem.mask = MaskKind::Boolean; });
    if (p.mask_batch > 1) add("", "mask batch broadcast", [](AttentionCase& n) { n.problem.mask_batch = 1; });
    if (p.mask_heads > 1) add("", "mask head broadcast", [](AttentionCase& n) { n.problem.mask_heads = 1; });
    if (p.mask_q_len > 1) add("", "mask query broadcast", [](AttentionCase& n) { n.problem.mask_q_len = 1; });
    if (p.mask_k_len < p.k_len)
      add("", fmt::format("short mask {} → {} keys", p.mask_k_len, p.k_len), [](AttentionCase& n) {
        n.problem.mask_k_len = n.problem.k_len;
      });
  }
  if (p.has_key_lengths)
    add("key-lengths", "key lengths → off", [](AttentionCase& n) {
      n.problem.has_key_lengths = false;
      n.key_lengths.clear();
      if (n.problem.alignment == Alignment::KeyLengths) n.problem.alignment = Alignment::TopLeft;
    });
  if (!c.key_lengths.empty()) add("", "fixed key lengths → drawn", [](AttentionCase& n) { n.key_lengths.clear(); });
  if (!c.query_lengths.empty())
    add("", "fixed query counts → drawn", [](AttentionCase& n) { n.query_lengths.clear(); });
  if (c.poison_masked) add("poison", "poison → off", [](AttentionCase& n) { n.poison_masked = false; });
  if (c.sequence_major) add("layout", "layout blhd → bhld", [](AttentionCase& n) { n.sequence_major = false; });
  if (p.causal) add("causal", "causal → off", [](AttentionCase& n) { n.problem.causal = false; });
  if (p.alignment != Alignment::TopLeft)
    add("alignment", fmt::format("align={} → top-left", alignment_name(p.alignment)), [](AttentionCase& n) {
      n.problem.alignment = Alignment::TopLeft;
      n.problem.diagonal_offset = 0;
    });
  if (p.alignment == Alignment::Offset && p.diagonal_offset > 0)
    for (std::int64_t m : smaller_sizes(p.diagonal_offset, 0))
      add("", fmt::format("offset {} → {}", p.diagonal_offset, m), [m](AttentionCase& n) { n.problem.diagonal_offset = m; });
  if (p.kv_heads != p.q_heads)
    add("gqa", fmt::format("{} → MHA (Hkv {} → {})", p.kv_heads == 1 ? "MQA" : "GQA", p.kv_heads, p.q_heads), [](AttentionCase& n) { n.problem.kv_heads = n.problem.q_heads; });
  if (p.scale) add("scale", fmt::format("scale={} → 1/sqrt(Dk)", *p.scale), [](AttentionCase& n) { n.problem.scale.reset(); });
  if (c.values != ValueKind::Gaussian)
    add("values", fmt::format("values={} → gaussian", value_kind_name(c.values)), [](AttentionCase& n) {
      n.values = ValueKind::Gaussian;
    });

  // Then sizes, one dimension at a time.
  for (std::int64_t m : smaller_sizes(p.batch))
    add("", fmt::format("B {} → {}", p.batch, m), [m](AttentionCase& n) { n.problem.batch = m; });
  // Heads keep the group ratio: fewer groups, then smaller groups.
  const std::int64_t ratio = p.q_heads / p.kv_heads;
  for (std::int64_t m : smaller_sizes(p.kv_heads))
    add("", fmt::format("Hkv {} → {} (Hq {} → {})", p.kv_heads, m, p.q_heads, m * ratio), [m, ratio](AttentionCase& n) {
      n.problem.kv_heads = m;
      n.problem.q_heads = m * ratio;
    });
  if (p.kv_heads != p.q_heads)
    for (std::int64_t r : smaller_sizes(ratio, 2))
      add("", fmt::format("Hq {} → {} (group {} → {})", p.q_heads, p.kv_heads * r, ratio, r), [r](AttentionCase& n) {
        n.problem.q_heads = n.problem.kv_heads * r;
      });
  for (std::int64_t m : smaller_sizes(p.q_len))
    add("", fmt::format("Lq {} → {}", p.q_len, m), [m](AttentionCase& n) { n.problem.q_len = m; });
  for (std::int64_t m : smaller_sizes(p.k_len))
    add("", fmt::format("Lk {} → {}", p.k_len, m), [m](AttentionCase& n) { n.problem.k_len = m; });
  if (p.qk_dim == p.v_dim)
    for (std::int64_t m : smaller_sizes(p.qk_dim))
      add("", fmt::format("Dk=Dv {} → {}", p.qk_dim, m), [m](AttentionCase& n) { n.problem.qk_dim = n.problem.v_dim = m; });
  for (std::int64_t m : smaller_sizes(p.qk_dim))
    add("", fmt::format("Dk {} → {}", p.qk_dim, m), [m](AttentionCase& n) { n.problem.qk_dim = m; });
  for (std::int64_t m : smaller_sizes(p.v_dim))
    add("", fmt::format("Dv {} → {}", p.v_dim, m), [m](AttentionCase& n) { n.problem.v_dim = m; });
  return steps;
}

std::vector<std::string> removable_options(const AttentionCase& c) {
  std::vector<std::string> options;
  for (const SimplificationStep& step : simplification_steps(c))
    if (!step.option.empty() && std::find(options.begin(), options.end(), step.option) == options.end())
      options.push_back(step.option);
  return options;
}

}  // namespace attncheck
