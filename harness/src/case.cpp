#include "attncheck/case.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <limits>
#include <numbers>

namespace attncheck {
namespace {

// "5,0,9": the key lengths of describe(); each a non-negative integer.
std::vector<std::int64_t> parse_lengths(std::string_view text) {
  std::vector<std::int64_t> lengths;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view item = text.substr(pos, end - pos);
    std::int64_t length = -1;
    const auto [stop, ec] = std::from_chars(item.data(), item.data() + item.size(), length);
    if (item.empty() || ec != std::errc() || stop != item.data() + item.size() || length < 0)
      throw ProblemError(fmt::format("case text: lengths={} is not a comma-separated list of key lengths", text));
    lengths.push_back(length);
    pos = end + 1;
  }
  return lengths;
}

}  // namespace

std::string_view value_kind_name(ValueKind kind) {
  switch (kind) {
    case ValueKind::Gaussian: return "gaussian";
    case ValueKind::LargeLogits: return "large-logits";
    case ValueKind::Ties: return "ties";
    case ValueKind::DuplicateKeys: return "duplicate-keys";
    case ValueKind::OneHotV: return "one-hot-v";
    case ValueKind::Grid: return "grid";
    case ValueKind::Diffuse: return "diffuse";
    case ValueKind::Peaked: return "peaked";
    case ValueKind::ConstantV: return "constant-v";
    case ValueKind::NonNegativeV: return "non-negative-v";
  }
  return "?";
}

std::optional<ValueKind> parse_value_kind(std::string_view name) {
  for (auto k : {ValueKind::Gaussian, ValueKind::LargeLogits, ValueKind::Ties, ValueKind::DuplicateKeys,
                 ValueKind::OneHotV, ValueKind::Grid, ValueKind::Diffuse, ValueKind::Peaked, ValueKind::ConstantV,
                 ValueKind::NonNegativeV})
    if (value_kind_name(k) == name) return k;
  return std::nullopt;
}

// Constant V makes every P·V term the same multiple of its weight, so the rounding errors of a
// row are not independent (numerics/README.md §3.2); scaled logits and |V| keep them data-random
// (a stagnating sum is handled by the model itself, §9 item 31).
DataCharacter data_character(ValueKind kind) {
  switch (kind) {
    case ValueKind::Gaussian:
    case ValueKind::LargeLogits:
    case ValueKind::Diffuse:
    case ValueKind::Peaked:
    case ValueKind::NonNegativeV: return DataCharacter::GenericRandom;
    default: return DataCharacter::Structured;
  }
}

std::string AttentionCase::describe() const {
  std::string text = fmt::format("{} dtype={} values={}", problem.describe(), dtype_name(dtype), value_kind_name(values));
  if (sequence_major) text += " layout=blhd";
  if (poison_masked) text += " poison=1";
  if (!key_lengths.empty()) text += fmt::format(" lengths={}", fmt::join(key_lengths, ","));
  if (!query_lengths.empty()) text += fmt::format(" qlengths={}", fmt::join(query_lengths, ","));
  text += fmt::format(" seed={}", seed);
  if (page_shuffle != 0) text += fmt::format(" pages={}", page_shuffle);
  if (shared_prefix) text += " prefix=1";
  return text;
}

AttentionCase parse_case(std::string_view text) {
  AttentionCase c;
  std::string problem_text;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view token = text.substr(pos, end - pos);
    pos = end + 1;
    if (token.empty()) continue;
    const auto eq = token.find('=');
    const std::string_view key = token.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view{} : token.substr(eq + 1);
    if (key == "dtype") {
      auto d = parse_dtype(value);
      if (!d) throw ProblemError(fmt::format("case text: dtype={} is not f32, f16, bf16 or f64", value));
      c.dtype = *d;
    } else if (key == "values") {
      auto v = parse_value_kind(value);
      if (!v) throw ProblemError(fmt::format("case text: values={} is not a value kind", value));
      c.values = *v;
    } else if (key == "layout") {
      if (value != "blhd" && value != "bhld") throw ProblemError(fmt::format("case text: layout={} is not bhld or blhd", value));
      c.sequence_major = value == "blhd";
    } else if (key == "poison") {
      if (value != "0" && value != "1") throw ProblemError(fmt::format("case text: poison={} is not 0 or 1", value));
      c.poison_masked = value == "1";
    } else if (key == "lengths") {
      c.key_lengths = parse_lengths(value);
    } else if (key == "qlengths") {
      c.query_lengths = parse_lengths(value);
    } else if (key == "seed" || key == "pages") {
      std::uint64_t& field = key == "seed" ? c.seed : c.page_shuffle;
      const auto [stop, ec] = std::from_chars(value.data(), value.data() + value.size(), field);
      if (ec != std::errc() || stop != value.data() + value.size() || value.empty())
        throw ProblemError(fmt::format("case text: {}={} is not an integer in [0, 2^64)", key, value));
    } else if (key == "prefix") {
      if (value != "0" && value != "1") throw ProblemError(fmt::format("case text: prefix={} is not 0 or 1", value));
      c.shared_prefix = value == "1";
    } else {
      if (!problem_text.empty()) problem_text += ' ';
      problem_text += token;
    }
  }
  c.problem = parse_problem(problem_text);
  return c;
}

PortableRandom::PortableRandom(std::uint64_t seed) : state_(seed ^ 0x9e3779b97f4a7c15ull) {}

// splitmix64: fixed arithmetic, so every platform draws the same stream.
std::uint64_t PortableRandom::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double PortableRandom::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double PortableRandom::normal() {
  const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::int64_t PortableRandom::below(std::int64_t bound) {
  return bound <= 1 ? 0 : static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(bound));
}

namespace {

// The seed of the ALiBi-and-sinks stream of a case (make_case_data's comment), as
// backward_stream_seed derives the backward's: a tag ("alibi+sk" in ASCII) XORed into the seed.
std::uint64_t inference_stream_seed(std::uint64_t seed) {
  constexpr std::uint64_t kInferenceTag = 0x616c6962692b736bull;  // "alibi+sk"
  return PortableRandom(seed ^ kInferenceTag).next();
}

void draw_inference_inputs(const AttentionCase& c, CaseData& d) {
  const Problem& p = c.problem;
  if (!p.has_alibi() && !p.sinks) return;
  PortableRandom rng(inference_stream_seed(c.seed));
  const std::int64_t rows = p.alibi == AlibiSlopes::PerBatchHead ? p.batch : 1;
  // Per-head slopes are, one case in two, ALiBi's own closed form (Press et al. 2022, §3, with the
  // BLOOM extension to head counts that are not powers of two): for n = 2^⌊log2 Hq⌋, head h < n
  // gets 2^(−8(h+1)/n) and head n + k every other slope of 2n heads, 2^(−4(2k+1)/n). Those are the
  // slopes ALiBi models ship with and the ones ggml derives from max_bias = 8. Otherwise, and for
  // per-batch slopes, a geometric sequence jittered per element, so that a kernel reading the
  // slope of the wrong head or batch row is seen.
  const bool closed_form = p.alibi == AlibiSlopes::PerHead && rng.below(2) == 0;
  const double n = std::exp2(std::floor(std::log2(static_cast<double>(std::max<std::int64_t>(p.q_heads, 1)))));
  for (std::int64_t b = 0; b < rows && p.has_alibi(); ++b)
    for (std::int64_t h = 0; h < p.q_heads; ++h) {
      const auto head = static_cast<double>(h);
      if (closed_form) {
        const double exponent = head < n ? -8.0 * (head + 1.0) / n : -4.0 * (2.0 * (head - n) + 1.0) / n;
        d.alibi_slopes.push_back(round_to(DType::F32, std::exp2(exponent)));
        continue;
      }
      const double geometric = std::exp2(-8.0 * (head + 1.0) / static_cast<double>(p.q_heads));
      d.alibi_slopes.push_back(round_to(DType::F32, geometric * (0.5 + rng.uniform())));
    }
  for (std::int64_t h = 0; h < p.q_heads && p.sinks; ++h) {
    const double logit = round_to(DType::F32, 3.0 * rng.normal());
    d.sinks.push_back(rng.below(8) == 0 ? -std::numeric_limits<double>::infinity() : logit);
  }
}

// The seed of a packed batch's query-count stream ("varlen" in ASCII), so that every other value of
// the case is the same with or without packing.
std::uint64_t varlen_stream_seed(std::uint64_t seed) {
  constexpr std::uint64_t kVarlenTag = 0x7661726c656eull;  // "varlen"
  return PortableRandom(seed ^ kVarlenTag).next();
}

// Query counts of a packed batch: 0, Lq and 1 are the edges (an empty sequence, a full one, a
// single token as in decoding); fixed ones replace the draw.
std::vector<std::int64_t> query_lengths_of(const AttentionCase& c) {
  const Problem& p = c.problem;
  if (!p.varlen) {
    if (!c.query_lengths.empty())
      throw ProblemError("query_lengths: fixed query counts are given, but the problem is not a packed batch (varlen)");
    return {};
  }
  if (!c.query_lengths.empty()) {
    if (static_cast<std::int64_t>(c.query_lengths.size()) != p.batch)
      throw ProblemError(fmt::format("query_lengths: {} fixed count(s) given, but B = {}", c.query_lengths.size(), p.batch));
    for (size_t b = 0; b < c.query_lengths.size(); ++b)
      if (c.query_lengths[b] < 0 || c.query_lengths[b] > p.q_len)
        throw ProblemError(fmt::format("query_lengths: sequence {} has {} queries, outside [0, Lq = {}]", b,
                                       c.query_lengths[b], p.q_len));
    return c.query_lengths;
  }
  PortableRandom rng(varlen_stream_seed(c.seed));
  std::vector<std::int64_t> lengths(static_cast<size_t>(p.batch));
  for (auto& len : lengths) {
    const std::int64_t pick = rng.below(5);
    len = pick == 0 ? 0 : pick == 1 ? p.q_len : pick == 2 ? std::min<std::int64_t>(1, p.q_len) : rng.below(p.q_len + 1);
  }
  return lengths;
}

// The seed of a paged case's arrangement stream: the case seed and page_shuffle, tagged ("pages" in
// ASCII) as the other streams are, so the arrangement changes with page_shuffle and nothing else does.
std::uint64_t page_stream_seed(std::uint64_t seed, std::uint64_t shuffle) {
  constexpr std::uint64_t kPagesTag = 0x7061676573ull;  // "pages"
  return PortableRandom(PortableRandom(seed ^ kPagesTag).next() ^ shuffle).next();
}

// Lays the logical keys of `d` out in pages (make_case_data's comment) and makes d.k, d.v the
// gather of what the table reaches.
void build_pages(const AttentionCase& c, CaseData& d) {
  const Problem& p = c.problem;
  PortableRandom rng(page_stream_seed(c.seed, c.page_shuffle));
  const std::int64_t slots = p.pages_per_sequence(), page = p.page_size;
  std::vector<std::int64_t> used(static_cast<size_t>(p.batch));
  std::int64_t shared = slots;  // full pages every sequence has
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t length = d.key_lengths[static_cast<size_t>(b)];
    used[static_cast<size_t>(b)] = p.pages_used(length);
    shared = std::min(shared, length / page);
  }
  if (!c.shared_prefix || p.batch < 2) shared = 0;
  std::int64_t owned = 0;
  for (std::int64_t b = 0; b < p.batch; ++b) owned += used[static_cast<size_t>(b)] - (b > 0 ? shared : 0);
  const std::int64_t spare = 1 + owned / 4, pool = owned + spare;
  if (pool > std::numeric_limits<std::int32_t>::max())
    throw ProblemError(fmt::format("block_table: the pool needs {} pages, more than an int32 entry names", pool));

  std::vector<std::int32_t> order(static_cast<size_t>(pool));  // Fisher–Yates with the portable stream
  for (std::int64_t i = 0; i < pool; ++i) order[static_cast<size_t>(i)] = static_cast<std::int32_t>(i);
  for (std::int64_t i = pool - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.below(i + 1))]);
  std::vector<std::int32_t>& table = d.pages.block_table;
  table.assign(static_cast<size_t>(p.batch * slots), 0);
  std::int64_t next = 0;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t s = 0; s < slots; ++s) {
      std::int32_t& entry = table[static_cast<size_t>(b * slots + s)];
      if (s >= used[static_cast<size_t>(b)]) entry = order[static_cast<size_t>(owned + rng.below(spare))];
      else if (b > 0 && s < shared) entry = table[static_cast<size_t>(s)];
      else entry = order[static_cast<size_t>(next++)];
    }

  // Every element first gets the filler, then the pages in use get their sequence's keys.
  d.pages.k_pages = HostTensor(page_pool_shape(p, pool, p.qk_dim));
  d.pages.v_pages = HostTensor(page_pool_shape(p, pool, p.v_dim));
  const std::array<double, 3> poison = poison_values(c.dtype, false);
  for (HostTensor* t : {&d.pages.k_pages, &d.pages.v_pages})
    for (size_t e = 0; e < t->values.size(); ++e)
      t->values[e] = c.poison_masked ? poison[e % 3] : round_to(c.dtype, rng.normal());
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t s = (b > 0 ? shared : 0); s < used[static_cast<size_t>(b)]; ++s)
      for (std::int64_t j = s * page; j < (s + 1) * page; ++j)
        for (std::int64_t g = 0; g < p.kv_heads; ++g) {
          const auto at = paged_key_index(p, table, b, g, j);
          for (std::int64_t l = 0; l < p.qk_dim; ++l) d.pages.k_pages(at[0], at[1], at[2], l) = d.k(b, g, j, l);
          for (std::int64_t l = 0; l < p.v_dim; ++l) d.pages.v_pages(at[0], at[1], at[2], l) = d.v(b, g, j, l);
        }
  // The logical keys are what the table reaches: batch 0's prefix in every sequence that shares
  // it, the unused pages' filler in unused slots.
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t j = 0; j < p.k_len; ++j)
      for (std::int64_t g = 0; g < p.kv_heads; ++g) {
        const auto at = paged_key_index(p, table, b, g, j);
        for (std::int64_t l = 0; l < p.qk_dim; ++l) d.k(b, g, j, l) = d.pages.k_pages(at[0], at[1], at[2], l);
        for (std::int64_t l = 0; l < p.v_dim; ++l) d.v(b, g, j, l) = d.pages.v_pages(at[0], at[1], at[2], l);
      }
}

}  // namespace

AttentionInputs CaseData::inputs(const Problem& problem) const {
  AttentionInputs in{q.view(), k.view(), v.view(), {}, {}, {}, {}, {}, {}, {}, {}, {}};
  if (problem.has_descales()) {
    in.q_descale = q_descale;
    in.k_descale = k_descale;
    in.v_descale = v_descale;
  }
  if (problem.is_paged()) in.paged = pages.view();
  if (problem.mask != MaskKind::None) in.mask = mask.view();
  if (problem.has_key_lengths) in.key_lengths = key_lengths;
  if (problem.has_alibi()) in.alibi_slopes = alibi_slopes;
  if (problem.sinks) in.sinks = sinks;
  if (problem.varlen) in.query_lengths = query_lengths;
  return in;
}

namespace {

double grid_value(PortableRandom& rng) { return static_cast<double>(rng.below(65) - 32) / 16.0; }

void fill(HostTensor& t, PortableRandom& rng, ValueKind kind, double scale = 1.0) {
  for (double& x : t.values) x = kind == ValueKind::Grid ? grid_value(rng) : scale * rng.normal();
}

void round_all(HostTensor& t, DType dtype) {
  for (double& x : t.values) x = round_to(dtype, x);
}

// The key lengths of a problem that has them: drawn, then replaced by `fixed` when the case
// fixes them (the draw runs either way, so the values drawn after it do not depend on `fixed`).
std::vector<std::int64_t> key_lengths_of(const Problem& p, const std::vector<std::int64_t>& fixed, PortableRandom& rng) {
  std::vector<std::int64_t> lengths(static_cast<size_t>(p.batch));
  // Lengths 0 and Lk are the edges that break kernels most; draw them often.
  for (auto& len : lengths) {
    const std::int64_t pick = rng.below(4);
    len = pick == 0 ? 0 : pick == 1 ? p.k_len : rng.below(p.k_len + 1);
  }
  if (fixed.empty()) return lengths;
  if (static_cast<std::int64_t>(fixed.size()) != p.batch)
    throw ProblemError(fmt::format("key_lengths: {} fixed length(s) given, but B = {}", fixed.size(), p.batch));
  for (size_t b = 0; b < fixed.size(); ++b)
    if (fixed[b] < 0 || fixed[b] > p.k_len)
      throw ProblemError(fmt::format("key_lengths: batch {} has length {}, outside [0, Lk = {}]", b, fixed[b], p.k_len));
  return fixed;
}

// The seed of the descales' jitter, a stream of its own (as inference_stream_seed's).
std::uint64_t descale_stream_seed(std::uint64_t seed) {
  constexpr std::uint64_t kDescaleTag = 0x64657363616c6573ull;  // "descales"
  return PortableRandom(seed ^ kDescaleTag).next();
}

// Descaled storage (problem.h): one factor per tensor or per (b, kv head) group, the group's
// largest |x| over the format's largest finite value times 1 + U[0, 1/2), rounded up to float32
// (FlashAttention 3's amax / max recipe, jittered so that no two groups share a factor and a
// kernel reading the wrong one is seen); the stored values are x / factor rounded to `dtype`,
// never past its range. `head_of(row)` maps a tensor's head index to its factor's kv head.
std::vector<double> descale_and_store(const Problem& p, HostTensor& t, DType dtype, PortableRandom& rng,
                                      std::int64_t (*head_of)(const Problem&, std::int64_t)) {
  const std::int64_t groups = p.descale_count();
  std::vector<double> amax(static_cast<size_t>(groups), 0.0);
  const auto group = [&](std::int64_t b, std::int64_t h) {
    return p.descale == Descale::PerTensor ? 0 : b * p.kv_heads + head_of(p, h);
  };
  const Shape4 shape = t.shape;
  for (std::int64_t b = 0; b < shape[0]; ++b)
    for (std::int64_t h = 0; h < shape[1]; ++h)
      for (std::int64_t i = 0; i < shape[2]; ++i)
        for (std::int64_t l = 0; l < shape[3]; ++l) {
          double& m = amax[static_cast<size_t>(group(b, h))];
          m = std::max(m, std::fabs(t(b, h, i, l)));
        }
  std::vector<double> factors;
  for (const double m : amax) {
    const double target = m > 0 ? m / largest_finite(dtype) * (1.0 + 0.5 * rng.uniform()) : 1.0;
    float f = static_cast<float>(target);
    if (static_cast<double>(f) < target) f = std::nextafter(f, std::numeric_limits<float>::infinity());
    factors.push_back(f);
  }
  for (std::int64_t b = 0; b < shape[0]; ++b)
    for (std::int64_t h = 0; h < shape[1]; ++h)
      for (std::int64_t i = 0; i < shape[2]; ++i)
        for (std::int64_t l = 0; l < shape[3]; ++l)
          t(b, h, i, l) = round_to(dtype, t(b, h, i, l) / factors[static_cast<size_t>(group(b, h))]);
  return factors;
}

std::int64_t query_kv_head(const Problem& p, std::int64_t h) { return p.kv_head_of(h); }
std::int64_t same_kv_head(const Problem&, std::int64_t g) { return g; }

// Fixed lengths on a problem without key lengths would be silently ignored: refuse them.
void require_key_lengths_used(const Problem& p, const std::vector<std::int64_t>& fixed) {
  if (!fixed.empty() && !p.has_key_lengths)
    throw ProblemError("key_lengths: fixed lengths are given, but the problem has no key lengths");
}

}  // namespace

CaseData make_case_data(const AttentionCase& c) {
  const Problem& p = c.problem;
  p.validate();
  require_key_lengths_used(p, c.key_lengths);
  if (p.varlen && (c.sequence_major || c.poison_masked))
    throw ProblemError(fmt::format("case: {} has no meaning for a packed batch (varlen=1), whose tensors are packed "
                                   "token-major and hold no key past a sequence's length",
                                   c.sequence_major ? "layout=blhd" : "poison=1"));
  PortableRandom rng(c.seed);
  CaseData d;
  d.q = HostTensor({p.batch, p.q_heads, p.q_len, p.qk_dim});
  d.k = HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim});
  d.v = HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim});
  // |s| ≈ 1e3 for LargeLogits: s = σ q·k with σ = 1/sqrt(Dk) has unit spread when q, k ~ N(0,1).
  const double q_scale = c.values == ValueKind::LargeLogits ? 1e3
                         : c.values == ValueKind::Diffuse ? 1.0 / 16
                         : c.values == ValueKind::Peaked  ? 4.0
                                                          : 1.0;
  fill(d.q, rng, c.values, q_scale);
  fill(d.k, rng, c.values);
  fill(d.v, rng, c.values);
  if (c.values == ValueKind::ConstantV)
    for (double& x : d.v.values) x = 10.0;
  if (c.values == ValueKind::NonNegativeV)
    for (double& x : d.v.values) x = std::fabs(x);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t j = 0; j < p.k_len; ++j) {
        for (std::int64_t l = 0; l < p.qk_dim; ++l) {
          if (c.values == ValueKind::Ties) d.k(b, g, j, l) = d.k(b, g, 0, l);
          if (c.values == ValueKind::DuplicateKeys && j % 2 == 1) d.k(b, g, j, l) = d.k(b, g, j - 1, l);
        }
        if (c.values == ValueKind::OneHotV)
          for (std::int64_t l = 0; l < p.v_dim; ++l) d.v(b, g, j, l) = l == (j * 7 + 3) % p.v_dim ? 1.0 : 0.0;
      }
  if (p.has_descales()) {
    PortableRandom descale_rng(descale_stream_seed(c.seed));
    d.q_descale = descale_and_store(p, d.q, c.dtype, descale_rng, query_kv_head);
    d.k_descale = descale_and_store(p, d.k, c.dtype, descale_rng, same_kv_head);
    d.v_descale = descale_and_store(p, d.v, c.dtype, descale_rng, same_kv_head);
  } else {
    round_all(d.q, c.dtype);
    round_all(d.k, c.dtype);
    round_all(d.v, c.dtype);
  }

  if (p.has_key_lengths) d.key_lengths = key_lengths_of(p, c.key_lengths, rng);
  if (p.mask != MaskKind::None) {
    d.mask = HostTensor({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len});
    for (double& x : d.mask.values) {
      if (p.mask == MaskKind::Boolean) {
        x = rng.uniform() < 0.75 ? 1.0 : 0.0;
      } else {
        x = rng.uniform() < 0.1 ? -std::numeric_limits<double>::infinity() : round_to(c.dtype, rng.normal());
      }
    }
  }
  if (c.poison_masked) {
    // Keys no query may see (beyond the key length or the mask's length) get NaN and the largest
    // finite values: a kernel that multiplies them by a zero weight instead of skipping them
    // produces NaN (0·NaN) or Inf.
    const std::array<double, 3> poison = poison_values(c.dtype, false);
    for (std::int64_t b = 0; b < p.batch; ++b) {
      std::int64_t first_dead = p.k_len;
      if (p.has_key_lengths) first_dead = std::min(first_dead, d.key_lengths[static_cast<size_t>(b)]);
      if (p.mask != MaskKind::None) first_dead = std::min(first_dead, p.mask_k_len);
      for (std::int64_t g = 0; g < p.kv_heads; ++g)
        for (std::int64_t j = first_dead; j < p.k_len; ++j) {
          for (std::int64_t l = 0; l < p.qk_dim; ++l) d.k(b, g, j, l) = poison[(j + l) % 3];
          for (std::int64_t l = 0; l < p.v_dim; ++l) d.v(b, g, j, l) = poison[(j + l + 1) % 3];
        }
    }
  }
  draw_inference_inputs(c, d);
  if (p.is_paged()) build_pages(c, d);
  d.query_lengths = query_lengths_of(c);
  return d;
}

namespace {

// The seed of the backward stream of a case whose forward stream is seeded by `seed`: the first
// output of a PortableRandom seeded by `seed` XOR a tag ("backward" in ASCII). Both streams are
// runs of the one splitmix64 sequence (PortableRandom::next), started at states that differ by
// δ steps with δ = ((t ^ K) − (seed ^ K)) · K⁻¹ mod 2^64 (K the increment, t this seed); t is
// the hash of seed ^ tag, so δ is in effect drawn uniformly from 2^64 values and the two runs of
// at most N draws each share a value with probability about 2N / 2^64. Deriving t from the seed
// rather than drawing it after the inputs keeps the forward's values and the backward's apart:
// neither shifts when the other draws more (a larger Lq, a mask, dLSE asked for or not).
std::uint64_t backward_stream_seed(std::uint64_t seed) {
  constexpr std::uint64_t kBackwardTag = 0x6261636b77617264ull;  // "backward"
  return PortableRandom(seed ^ kBackwardTag).next();
}

void require_shape(const char* tensor, const HostTensor& t, const Shape4& expected) {
  if (t.shape != expected)
    throw ProblemError(fmt::format("make_backward_data: the reference's {} is {}, but the case's problem needs {}", tensor,
                                   shape_string(t.shape), shape_string(expected)));
}

}  // namespace

BackwardInputs BackwardData::exact_inputs(const AttentionResult& reference) const {
  return backward_inputs(reference, d_out.view(), d_lse ? d_lse->view() : View4<const double>{});
}

BackwardData make_backward_data(const AttentionCase& c, const AttentionResult& reference, DType output, bool with_d_lse) {
  const Problem& p = c.problem;
  p.validate();
  require_shape("O", reference.out, {p.batch, p.q_heads, p.q_len, p.v_dim});
  require_shape("LSE", reference.lse, {1, p.batch, p.q_heads, p.q_len});
  BackwardData d;
  // The reference's O is 0 in a row with no allowed key (reference.h) and stays 0 here; its LSE is
  // −inf there, which round_to keeps, and that row's dO and dLSE must not reach any gradient.
  d.out = reference.out;
  round_all(d.out, output);
  d.lse = reference.lse;
  round_all(d.lse, DType::F32);
  PortableRandom rng(backward_stream_seed(c.seed));
  d.d_out = HostTensor({p.batch, p.q_heads, p.q_len, p.v_dim});
  fill(d.d_out, rng, ValueKind::Gaussian);
  round_all(d.d_out, c.dtype);
  if (with_d_lse) {  // after dO, so that dO is the same with or without it
    d.d_lse = HostTensor({1, p.batch, p.q_heads, p.q_len});
    fill(*d.d_lse, rng, ValueKind::Gaussian);
    round_all(*d.d_lse, DType::F32);
  }
  return d;
}

double largest_held_finite(DType dtype, std::optional<DType> held) {
  double big = largest_finite(dtype);
  if (held && largest_finite(*held) < big) {
    big = largest_finite(*held);
    while (round_to(dtype, big) > big) big = std::nextafter(big, 0.0);  // rounded down into dtype
    big = round_to(dtype, big);
  }
  return big;
}

std::array<double, 3> poison_values(DType dtype, bool finite_only, std::optional<DType> held) {
  const double big = finite_only ? largest_held_finite(dtype, held) : largest_finite(dtype);
  if (finite_only) return {big / 2, big, -big};
  return {std::numeric_limits<double>::quiet_NaN(), big, -big};
}

void round_additive_mask(const Problem& p, CaseData& data, DType mask_dtype) {
  if (p.mask != MaskKind::Additive) return;
  round_all(data.mask, mask_dtype);
}

void make_poison_finite(const Problem& p, CaseData& data, DType dtype, std::optional<DType> held) {
  const double big = largest_held_finite(dtype, held);
  auto finite = [&](double x) {
    if (std::isnan(x)) return round_to(dtype, big / 2);
    return std::fabs(x) > big ? std::copysign(big, x) : x;
  };
  for (std::int64_t b = 0; b < p.batch; ++b) {
    std::int64_t first_dead = p.k_len;
    if (p.has_key_lengths && static_cast<std::int64_t>(data.key_lengths.size()) > b)
      first_dead = std::min(first_dead, data.key_lengths[static_cast<size_t>(b)]);
    if (p.mask != MaskKind::None) first_dead = std::min(first_dead, p.mask_k_len);
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t j = first_dead; j < p.k_len; ++j) {
        for (std::int64_t l = 0; l < p.qk_dim; ++l) data.k(b, g, j, l) = finite(data.k(b, g, j, l));
        for (std::int64_t l = 0; l < p.v_dim; ++l) data.v(b, g, j, l) = finite(data.v(b, g, j, l));
      }
  }
  // A pool's unused pages and tails hold the poison; every reachable key is finite and far below
  // any dtype's largest value (make_case_data draws O(10) at most), so finite() keeps it, and the
  // logical keys above stay the gather of the pages.
  if (p.is_paged())
    for (HostTensor* t : {&data.pages.k_pages, &data.pages.v_pages})
      for (double& x : t->values) x = finite(x);
}

void forbid_in_mask(const Problem& p, CaseData& data, const std::function<bool(std::int64_t row)>& row,
                    std::int64_t key_begin, std::int64_t key_end) {
  if (p.mask == MaskKind::None) throw ProblemError("forbid_in_mask: the problem has no mask");
  const double forbidden = p.mask == MaskKind::Boolean ? 0.0 : -std::numeric_limits<double>::infinity();
  const Shape4& s = data.mask.shape;
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t h = 0; h < s[1]; ++h)
      for (std::int64_t i = 0; i < s[2]; ++i) {
        if (!row(i)) continue;
        for (std::int64_t j = std::max<std::int64_t>(key_begin, 0); j < std::min(key_end, s[3]); ++j)
          data.mask(b, h, i, j) = forbidden;
      }
}

std::string LayerCase::describe() const {
  std::string text = fmt::format("{} dtype={}", problem.describe(), dtype_name(dtype));
  if (!key_lengths.empty()) text += fmt::format(" lengths={}", fmt::join(key_lengths, ","));
  return text + fmt::format(" seed={}", seed);
}

LayerInputs LayerCaseData::inputs(const LayerProblem& lp) const {
  LayerInputs in;
  in.x = x.view();
  if (!lp.self_attention) in.x_kv = x_kv.view();
  in.w_q = w_q.view();
  in.w_k = w_k.view();
  in.w_v = w_v.view();
  if (lp.has_qkv_bias) {
    in.b_q = b_q.view();
    in.b_k = b_k.view();
    in.b_v = b_v.view();
  }
  in.w_o = w_o.view();
  if (lp.has_out_bias) in.b_o = b_o.view();
  if (lp.attention.mask != MaskKind::None) in.mask = mask.view();
  if (lp.attention.has_key_lengths) in.key_lengths = key_lengths;
  if (lp.separate_values) in.x_v = x_v.view();
  return in;
}

LayerCaseData make_layer_case_data(const LayerCase& c) {
  c.problem.validate();
  const Problem& p = c.problem.attention;
  require_key_lengths_used(p, c.key_lengths);
  const std::int64_t dm = c.problem.model_dim;
  PortableRandom rng(c.seed);
  auto draw = [&](const Shape4& shape, double spread) {
    HostTensor t(shape);
    for (double& x : t.values) x = round_to(c.dtype, spread * rng.normal());
    return t;
  };
  // Each weight ~ N(0, 1/fan-in): W_K's fan-in is the key input's width, W_V's the value input's
  // (d_model unless the layer has torch's kdim/vdim), so the shapes and draws of other layers stay.
  const std::int64_t dk_in = c.problem.key_width(), dv_in = c.problem.value_width();
  const double w_in = 1.0 / std::sqrt(static_cast<double>(dm));
  const double w_out = 1.0 / std::sqrt(static_cast<double>(p.q_heads * p.v_dim));
  LayerCaseData d;
  d.x = draw({1, p.batch, p.q_len, dm}, 1.0);
  if (!c.problem.self_attention) d.x_kv = draw({1, p.batch, p.k_len, dk_in}, 1.0);
  d.w_q = draw({1, p.q_heads, dm, p.qk_dim}, w_in);
  d.w_k = draw({1, p.kv_heads, dk_in, p.qk_dim}, 1.0 / std::sqrt(static_cast<double>(dk_in)));
  d.w_v = draw({1, p.kv_heads, dv_in, p.v_dim}, 1.0 / std::sqrt(static_cast<double>(dv_in)));
  d.b_q = draw({1, 1, p.q_heads, p.qk_dim}, 0.1);
  d.b_k = draw({1, 1, p.kv_heads, p.qk_dim}, 0.1);
  d.b_v = draw({1, 1, p.kv_heads, p.v_dim}, 0.1);
  d.w_o = draw({1, 1, p.q_heads * p.v_dim, dm}, w_out);
  d.b_o = draw({1, 1, 1, dm}, 0.1);
  if (p.mask != MaskKind::None) d.mask = draw({p.mask_batch, p.mask_heads, p.mask_q_len, p.mask_k_len}, 1.0);
  // Last, so that layer cases without key lengths draw what they always drew.
  if (p.has_key_lengths) d.key_lengths = key_lengths_of(p, c.key_lengths, rng);
  // After everything else, for the same reason.
  if (c.problem.separate_values) d.x_v = draw({1, p.batch, p.k_len, dv_in}, 1.0);
  return d;
}

}  // namespace attncheck
