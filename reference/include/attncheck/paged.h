/// \file paged.h
/// \brief A paged KV cache (problem.h, "Paged KV cache"): the physical pages, the block table, and
/// the gather that defines what they mean.
///
/// The reference never computes on pages: a paged problem is the attention of the keys the block
/// table reaches, gathered into [B, Hkv, Lk, D] (gather_paged_kv). Key j of batch b is
///   TokenMajor  K_pages[block_table[b, ⌊j/page⌋], j mod page, g, :]
///   HeadMajor   K_pages[block_table[b, ⌊j/page⌋], g, j mod page, :]
/// Only slots s < ⌈key_lengths[b] / page⌉ are read; an unused slot may hold any value (a kernel
/// must not follow it), and keys j ≥ key_lengths[b] of the last used page are its tail, which the
/// key length masks like any padded key.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "attncheck/problem.h"
#include "attncheck/tensor.h"

namespace attncheck {

/// The physical storage of a paged problem, as views (AttentionInputs::paged).
struct PagedKvView {
  View4<const double> k_pages;  ///< TokenMajor [N, page, Hkv, Dk]; HeadMajor [N, Hkv, page, Dk]
  View4<const double> v_pages;  ///< the same with Dv
  std::span<const std::int32_t> block_table;  ///< [B, Lk / page] row-major: physical page of each slot

  bool empty() const { return k_pages.empty(); }
  std::int64_t num_pages() const { return k_pages.shape[0]; }
};

/// Owning storage of a paged cache.
struct PagedKv {
  HostTensor k_pages, v_pages;
  std::vector<std::int32_t> block_table;

  PagedKvView view() const { return {k_pages.view(), v_pages.view(), block_table}; }
};

/// The shape of a page pool of `num_pages` pages of head dim `dim` for this problem's layout.
Shape4 page_pool_shape(const Problem& problem, std::int64_t num_pages, std::int64_t dim);

/// Index into the page pool of key j of (batch b, kv head g), reading block_table[b, ⌊j/page⌋].
/// The caller makes sure the slot is used (its entry is a page of the pool).
std::array<std::int64_t, 4> paged_key_index(const Problem& problem, std::span<const std::int32_t> block_table,
                                            std::int64_t b, std::int64_t g, std::int64_t j);

/// Throws ProblemError, naming the tensor, on the first inconsistency: pools not of
/// page_pool_shape (K and V with the same page count, at least one page), a table not of
/// B × Lk / page entries, or a used slot (s < ⌈key_lengths[b] / page⌉) naming no page of the pool.
void validate_paged_kv(const Problem& problem, const PagedKvView& paged, std::span<const std::int64_t> key_lengths);

struct GatheredKv {
  HostTensor k, v;  ///< [B, Hkv, Lk, Dk], [B, Hkv, Lk, Dv]
};

/// The logical keys and values of a paged cache: every key of a used slot read through the table;
/// the keys of unused slots are NaN (no query may reach them: they lie past the key length).
/// Validates first.
GatheredKv gather_paged_kv(const Problem& problem, const PagedKvView& paged, std::span<const std::int64_t> key_lengths);

}  // namespace attncheck
