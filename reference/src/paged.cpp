#include "attncheck/paged.h"

#include <fmt/format.h>

#include <limits>

namespace attncheck {

Shape4 page_pool_shape(const Problem& p, std::int64_t num_pages, std::int64_t dim) {
  if (p.kv_storage == KvStorage::PagedHeadMajor) return {num_pages, p.kv_heads, p.page_size, dim};
  return {num_pages, p.page_size, p.kv_heads, dim};
}

std::array<std::int64_t, 4> paged_key_index(const Problem& p, std::span<const std::int32_t> table, std::int64_t b,
                                            std::int64_t g, std::int64_t j) {
  const std::int64_t page = table[static_cast<size_t>(b * p.pages_per_sequence() + j / p.page_size)];
  const std::int64_t row = j % p.page_size;
  if (p.kv_storage == KvStorage::PagedHeadMajor) return {page, g, row, 0};
  return {page, row, g, 0};
}

void validate_paged_kv(const Problem& p, const PagedKvView& paged, std::span<const std::int64_t> key_lengths) {
  if (!p.is_paged()) {
    if (!paged.empty()) throw ProblemError("k_pages: pages are given, but the problem's K and V are contiguous");
    return;
  }
  if (paged.empty()) throw ProblemError(fmt::format("k_pages: the problem is paged ({}), but no pages are given", p.describe()));
  const std::int64_t pages = paged.num_pages();
  if (pages < 1) throw ProblemError("k_pages: dim 0 (pages) is 0, but a paged cache needs at least one page");
  const auto check = [&](const char* name, const View4<const double>& view, std::int64_t dim) {
    const Shape4 expected = page_pool_shape(p, pages, dim);
    if (view.shape != expected)
      throw ProblemError(fmt::format("{}: shape is {}, but the problem's {} layout expects {}", name, shape_string(view.shape),
                                     kv_storage_name(p.kv_storage), shape_string(expected)));
  };
  check("k_pages", paged.k_pages, p.qk_dim);
  if (paged.v_pages.empty()) throw ProblemError("v_pages: not given, but K's pages are");
  check("v_pages", paged.v_pages, p.v_dim);
  const std::int64_t slots = p.pages_per_sequence();
  if (static_cast<std::int64_t>(paged.block_table.size()) != p.batch * slots)
    throw ProblemError(fmt::format("block_table: holds {} entries, but [B, Lk / page] = [{}, {}] needs {}",
                                   paged.block_table.size(), p.batch, slots, p.batch * slots));
  if (static_cast<std::int64_t>(key_lengths.size()) != p.batch)
    throw ProblemError(fmt::format("key_lengths: dim 0 (batch) is {}, but the problem expects B = {}", key_lengths.size(), p.batch));
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t length = key_lengths[static_cast<size_t>(b)];
    if (length < 0 || length > p.k_len)
      throw ProblemError(fmt::format("key_lengths[{}]: is {}, but must be in [0, Lk = {}]", b, length, p.k_len));
    for (std::int64_t s = 0; s < p.pages_used(length); ++s) {
      const std::int64_t page = paged.block_table[static_cast<size_t>(b * slots + s)];
      if (page < 0 || page >= pages)
        throw ProblemError(fmt::format("block_table[{}, {}]: is {}, but the slot holds keys below key_lengths[{}] = {} "
                                       "and the pool has pages 0..{}", b, s, page, b, length, pages - 1));
    }
  }
}

GatheredKv gather_paged_kv(const Problem& p, const PagedKvView& paged, std::span<const std::int64_t> key_lengths) {
  validate_paged_kv(p, paged, key_lengths);
  constexpr double kUnreached = std::numeric_limits<double>::quiet_NaN();
  GatheredKv kv{HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim}, kUnreached),
                HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim}, kUnreached)};
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t reached = p.pages_used(key_lengths[static_cast<size_t>(b)]) * p.page_size;
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      for (std::int64_t j = 0; j < reached; ++j) {
        const auto at = paged_key_index(p, paged.block_table, b, g, j);
        for (std::int64_t d = 0; d < p.qk_dim; ++d) kv.k(b, g, j, d) = paged.k_pages(at[0], at[1], at[2], d);
        for (std::int64_t d = 0; d < p.v_dim; ++d) kv.v(b, g, j, d) = paged.v_pages(at[0], at[1], at[2], d);
      }
  }
  return kv;
}

}  // namespace attncheck
