#include "attncheck/problem.h"

#include <algorithm>
#include <cmath>
#include <charconv>
#include <fmt/format.h>
#include <map>
#include <vector>

namespace attncheck {

std::string_view alignment_name(Alignment alignment) {
  switch (alignment) {
    case Alignment::TopLeft: return "top-left";
    case Alignment::BottomRight: return "bottom-right";
    case Alignment::Offset: return "offset";
    case Alignment::KeyLengths: return "key-lengths";
  }
  return "?";
}

std::string_view mask_kind_name(MaskKind kind) {
  switch (kind) {
    case MaskKind::None: return "none";
    case MaskKind::Boolean: return "bool";
    case MaskKind::Additive: return "bias";
  }
  return "?";
}

std::string_view empty_row_name(EmptyRowConvention convention) {
  switch (convention) {
    case EmptyRowConvention::Zeros: return "zeros";
    case EmptyRowConvention::NaN: return "nan";
    case EmptyRowConvention::MeanOfV: return "mean-of-v";
  }
  return "?";
}

std::string_view alibi_slopes_name(AlibiSlopes slopes) {
  switch (slopes) {
    case AlibiSlopes::None: return "none";
    case AlibiSlopes::PerHead: return "head";
    case AlibiSlopes::PerBatchHead: return "batch-head";
  }
  return "?";
}

std::string_view kv_storage_name(KvStorage storage) {
  switch (storage) {
    case KvStorage::Contiguous: return "contiguous";
    case KvStorage::PagedTokenMajor: return "paged";
    case KvStorage::PagedHeadMajor: return "paged-head";
  }
  return "?";
}

std::optional<KvStorage> parse_kv_storage(std::string_view name) {
  for (auto k : {KvStorage::Contiguous, KvStorage::PagedTokenMajor, KvStorage::PagedHeadMajor})
    if (kv_storage_name(k) == name) return k;
  return std::nullopt;
}

std::string_view descale_name(Descale descale) {
  switch (descale) {
    case Descale::None: return "none";
    case Descale::PerTensor: return "tensor";
    case Descale::PerHead: return "head";
  }
  return "?";
}

std::optional<Descale> parse_descale(std::string_view name) {
  for (auto d : {Descale::None, Descale::PerTensor, Descale::PerHead})
    if (descale_name(d) == name) return d;
  return std::nullopt;
}

std::optional<AlibiSlopes> parse_alibi_slopes(std::string_view name) {
  for (auto a : {AlibiSlopes::None, AlibiSlopes::PerHead, AlibiSlopes::PerBatchHead})
    if (alibi_slopes_name(a) == name) return a;
  return std::nullopt;
}

std::optional<Alignment> parse_alignment(std::string_view name) {
  for (auto a : {Alignment::TopLeft, Alignment::BottomRight, Alignment::Offset, Alignment::KeyLengths})
    if (alignment_name(a) == name) return a;
  return std::nullopt;
}

std::optional<MaskKind> parse_mask_kind(std::string_view name) {
  for (auto k : {MaskKind::None, MaskKind::Boolean, MaskKind::Additive})
    if (mask_kind_name(k) == name) return k;
  return std::nullopt;
}

std::optional<EmptyRowConvention> parse_empty_row(std::string_view name) {
  for (auto c : {EmptyRowConvention::Zeros, EmptyRowConvention::NaN, EmptyRowConvention::MeanOfV})
    if (empty_row_name(c) == name) return c;
  return std::nullopt;
}

Problem Problem::of_shape(std::int64_t batch, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t q_len,
                          std::int64_t k_len, std::int64_t qk_dim, std::int64_t v_dim) {
  Problem p;
  p.batch = batch;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.q_len = q_len;
  p.k_len = k_len;
  p.qk_dim = qk_dim;
  p.v_dim = v_dim;
  return p;
}

double Problem::effective_scale() const {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(qk_dim));
}

namespace {

void require_positive(std::string_view tensor, int dim, std::string_view what, std::int64_t value) {
  if (value < 1)
    throw ProblemError(fmt::format("{}: dim {} ({}) is {}, but must be at least 1", tensor, dim, what, value));
}

}  // namespace

void Problem::validate() const {
  require_positive("Q", 0, "batch", batch);
  require_positive("Q", 1, "query heads", q_heads);
  require_positive("K", 1, "kv heads", kv_heads);
  require_positive("Q", 2, "query length", q_len);
  require_positive("K", 2, "key length", k_len);
  require_positive("Q", 3, "head dim", qk_dim);
  require_positive("V", 3, "value dim", v_dim);
  if (q_heads % kv_heads != 0)
    throw ProblemError(fmt::format("K: dim 1 (kv heads) is {}, but Hq = {} is not a multiple of it", kv_heads, q_heads));
  if (scale && !std::isfinite(*scale))
    throw ProblemError(fmt::format("scale: is {}, but must be finite", *scale));
  if (!std::isfinite(softcap) || softcap < 0)
    throw ProblemError(fmt::format("softcap: is {}, but must be finite and >= 0 (0 = off)", softcap));
  if (window_left < -1 || window_right < -1)
    throw ProblemError(fmt::format("window: is ({}, {}), but each side must be >= 0 or -1 (unbounded)", window_left, window_right));
  if (alignment == Alignment::KeyLengths && !has_key_lengths)
    throw ProblemError("alignment: is key-lengths, but no key_lengths tensor is given");
  if (alignment != Alignment::Offset && diagonal_offset != 0)
    throw ProblemError(fmt::format("diagonal_offset: is {}, but alignment is {} (only 'offset' uses it)",
                                   diagonal_offset, alignment_name(alignment)));
  if (alignment == Alignment::Offset && (diagonal_offset < 0 || diagonal_offset > k_len))
    throw ProblemError(fmt::format("diagonal_offset: is {}, but a cache of P past tokens needs 0 <= P <= Lk = {}",
                                   diagonal_offset, k_len));
  if (mask != MaskKind::None) {
    if (mask_batch != 1 && mask_batch != batch)
      throw ProblemError(fmt::format("mask: dim 0 (batch) is {}, but must be 1 or B = {}", mask_batch, batch));
    if (mask_heads != 1 && mask_heads != q_heads)
      throw ProblemError(fmt::format("mask: dim 1 (heads) is {}, but must be 1 or Hq = {}", mask_heads, q_heads));
    if (mask_q_len != 1 && mask_q_len != q_len)
      throw ProblemError(fmt::format("mask: dim 2 (query length) is {}, but must be 1 or Lq = {}", mask_q_len, q_len));
    if (mask_k_len < 1 || mask_k_len > k_len)
      throw ProblemError(fmt::format("mask: dim 3 (key length) is {}, but must be in [1, Lk = {}]", mask_k_len, k_len));
  }
  if (!is_paged() && page_size != 0)
    throw ProblemError(fmt::format("page_size: is {}, but K and V are contiguous (only a paged cache has pages)", page_size));
  if (is_paged()) {
    if (page_size < 1)
      throw ProblemError(fmt::format("page_size: is {}, but a paged cache needs at least 1 key per page", page_size));
    if (k_len % page_size != 0)
      throw ProblemError(fmt::format("block_table: Lk = {} is the table's capacity, which must be a whole number of "
                                     "pages of {} keys", k_len, page_size));
    if (!has_key_lengths)
      throw ProblemError("key_lengths: a paged cache needs them (each sequence's length in its pages), but none are given");
  }
  if (varlen) {
    if (!has_key_lengths)
      throw ProblemError("key_lengths: a packed batch needs them (each sequence's key count), but none are given");
    if (is_paged())
      throw ProblemError(fmt::format("kv: is {}, but a packed batch takes its keys packed, not in pages",
                                     kv_storage_name(kv_storage)));
    if (mask != MaskKind::None)
      throw ProblemError(fmt::format("mask: is {}, but a packed batch takes no mask (its sequences have no common shape)",
                                     mask_kind_name(mask)));
    if (alignment != Alignment::TopLeft && alignment != Alignment::BottomRight)
      throw ProblemError(fmt::format("alignment: is {}, but a packed batch aligns each sequence top-left or bottom-right",
                                     alignment_name(alignment)));
  }
  if (has_descales()) {
    // FlashAttention 3's fp8 path takes none of these; the suite defines no fp8 bias dtype.
    if (mask == MaskKind::Additive)
      throw ProblemError("descale: is set, but the mask is additive (descaled fp8 inputs take no additive bias)");
    if (is_paged()) throw ProblemError("descale: is set, but K and V are paged (descaled inputs are contiguous)");
    if (varlen) throw ProblemError("descale: is set, but the batch is packed (descaled inputs are a padded batch)");
  }
}

std::string Problem::describe() const {
  std::string out = fmt::format("B={} Hq={} Hkv={} Lq={} Lk={} Dk={} Dv={}", batch, q_heads, kv_heads, q_len, k_len,
                                qk_dim, v_dim);
  if (scale) out += fmt::format(" scale={}", *scale);
  if (softcap != 0) out += fmt::format(" softcap={}", softcap);
  if (causal) out += " causal=1";
  if (alignment != Alignment::TopLeft) out += fmt::format(" align={}", alignment_name(alignment));
  if (diagonal_offset != 0) out += fmt::format(" offset={}", diagonal_offset);
  if (has_window()) out += fmt::format(" window={},{}", window_left, window_right);
  if (mask != MaskKind::None)
    out += fmt::format(" mask={}:{}x{}x{}x{}", mask_kind_name(mask), mask_batch, mask_heads, mask_q_len, mask_k_len);
  if (has_key_lengths) out += " keylens=1";
  if (has_alibi()) out += fmt::format(" alibi={}", alibi_slopes_name(alibi));
  if (sinks) out += " sinks=1";
  if (is_paged()) out += fmt::format(" kv={}:{}", kv_storage_name(kv_storage), page_size);
  if (varlen) out += " varlen=1";
  if (has_descales()) out += fmt::format(" descale={}", descale_name(descale));
  return out;
}

namespace {

std::int64_t parse_int(std::string_view key, std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    throw ProblemError(fmt::format("problem text: {}={} is not an integer", key, text));
  return value;
}

double parse_double(std::string_view key, std::string_view text) {
  std::string owned(text);
  char* end = nullptr;
  const double value = std::strtod(owned.c_str(), &end);
  if (owned.empty() || end != owned.c_str() + owned.size())
    throw ProblemError(fmt::format("problem text: {}={} is not a number", key, text));
  return value;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const auto at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

}  // namespace

Problem parse_problem(std::string_view text) {
  Problem p;
  for (std::string_view token : split(text, ' ')) {
    if (token.empty()) continue;
    const auto eq = token.find('=');
    if (eq == std::string_view::npos)
      throw ProblemError(fmt::format("problem text: '{}' is not key=value", token));
    const std::string_view key = token.substr(0, eq), value = token.substr(eq + 1);
    if (key == "B") p.batch = parse_int(key, value);
    else if (key == "Hq") p.q_heads = parse_int(key, value);
    else if (key == "Hkv") p.kv_heads = parse_int(key, value);
    else if (key == "Lq") p.q_len = parse_int(key, value);
    else if (key == "Lk") p.k_len = parse_int(key, value);
    else if (key == "Dk") p.qk_dim = parse_int(key, value);
    else if (key == "Dv") p.v_dim = parse_int(key, value);
    else if (key == "scale") p.scale = parse_double(key, value);
    else if (key == "softcap") p.softcap = parse_double(key, value);
    else if (key == "causal") p.causal = parse_int(key, value) != 0;
    else if (key == "offset") p.diagonal_offset = parse_int(key, value);
    else if (key == "keylens") p.has_key_lengths = parse_int(key, value) != 0;
    else if (key == "sinks") p.sinks = parse_int(key, value) != 0;
    else if (key == "varlen") p.varlen = parse_int(key, value) != 0;
    else if (key == "kv") {
      const auto colon = value.find(':');
      auto storage = parse_kv_storage(value.substr(0, colon));
      if (!storage || colon == std::string_view::npos)
        throw ProblemError(fmt::format("problem text: kv={} is not paged:PAGE_SIZE or paged-head:PAGE_SIZE", value));
      p.kv_storage = *storage;
      p.page_size = parse_int(key, value.substr(colon + 1));
    }
    else if (key == "descale") {
      auto d = parse_descale(value);
      if (!d) throw ProblemError(fmt::format("problem text: descale={} is not none, tensor or head", value));
      p.descale = *d;
    }
    else if (key == "alibi") {
      auto a = parse_alibi_slopes(value);
      if (!a) throw ProblemError(fmt::format("problem text: alibi={} is not none, head or batch-head", value));
      p.alibi = *a;
    }
    else if (key == "align") {
      auto a = parse_alignment(value);
      if (!a) throw ProblemError(fmt::format("problem text: align={} is not top-left, bottom-right, offset or key-lengths", value));
      p.alignment = *a;
    } else if (key == "window") {
      auto sides = split(value, ',');
      if (sides.size() != 2) throw ProblemError(fmt::format("problem text: window={} is not LEFT,RIGHT", value));
      p.window_left = parse_int(key, sides[0]);
      p.window_right = parse_int(key, sides[1]);
    } else if (key == "mask") {
      const auto colon = value.find(':');
      auto kind = parse_mask_kind(value.substr(0, colon));
      auto dims = colon == std::string_view::npos ? std::vector<std::string_view>{} : split(value.substr(colon + 1), 'x');
      if (!kind || *kind == MaskKind::None || dims.size() != 4)
        throw ProblemError(fmt::format("problem text: mask={} is not bool|bias:BxHxLqxLk", value));
      p.mask = *kind;
      p.mask_batch = parse_int(key, dims[0]);
      p.mask_heads = parse_int(key, dims[1]);
      p.mask_q_len = parse_int(key, dims[2]);
      p.mask_k_len = parse_int(key, dims[3]);
    } else {
      throw ProblemError(fmt::format("problem text: unknown key '{}'", key));
    }
  }
  return p;
}

std::int64_t Problem::diagonal_key(std::int64_t i, std::int64_t key_length) const {
  switch (alignment) {
    case Alignment::TopLeft: return i;
    // A packed sequence's last query sits on row Lq − 1 (first_query_row): its own key length
    // takes Lk's place, as FlashAttention's varlen diagonal is key_lengths[b] − query_lengths[b].
    case Alignment::BottomRight: return i + (varlen ? key_length : k_len) - q_len;
    case Alignment::Offset: return i + diagonal_offset;
    case Alignment::KeyLengths: return i + key_length - q_len;
  }
  return i;
}

Problem::KeyRange Problem::structural_key_range(std::int64_t i, std::int64_t key_length) const {
  std::int64_t first = 0, last = key_length;
  if (mask != MaskKind::None) last = std::min(last, mask_k_len);
  const std::int64_t diagonal = diagonal_key(i, key_length);
  if (causal) last = std::min(last, diagonal + 1);
  if (window_right >= 0) last = std::min(last, diagonal + window_right + 1);
  if (window_left >= 0) first = std::max(first, diagonal - window_left);
  return {first, std::max(first, last)};
}

}  // namespace attncheck
