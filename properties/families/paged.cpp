// Paged KV caches (ABI 2.4): a page pool and a block table are storage, not semantics. The
// attention of a paged cache is that of the keys its table reaches (paged.h), so a kernel's paged
// output must equal its contiguous output on the same keys, must not move when the pages are
// permuted and the table rewritten, and must not see what lies in unused pages, unused slots and
// the last page's tail. A deterministic kernel reads the same values in the same order in every
// formulation, so it must agree bitwise; any other within τ + τ′.
#include <bit>
#include <fmt/format.h>

#include "common.h"

namespace attncheck::props {
namespace {


// A drawn case laid out in pages: page sizes 1, 16, 64, 256 and 5 (no power of two), Lk rounded up
// to whole pages (a full-length mask follows it), either layout, a shuffled pool, a shared prefix
// one time in two, and poison one time in two. Key lengths are the sequences' lengths, drawn as
// make_case_data draws them (0 and Lk often: an empty sequence, a full table). A pinned case that
// is paged already is kept as it is.
AttentionCase draw_paged_case(PropertyContext& ctx) {
  ProblemSpace space = ctx.space();
  space.paged = true;
  AttentionCase c = ctx.draw_case(space, all_value_kinds());
  if (c.problem.is_paged()) return c;
  Problem& p = c.problem;
  const std::int64_t drawn_k_len = p.k_len;
  p.page_size = *rc::gen::element<std::int64_t>(16, 1, 5, 64, 256);
  p.kv_storage = *rc::gen::element(KvStorage::PagedTokenMajor, KvStorage::PagedHeadMajor);
  p.k_len = (drawn_k_len + p.page_size - 1) / p.page_size * p.page_size;
  if (p.mask != MaskKind::None && p.mask_k_len == drawn_k_len) p.mask_k_len = p.k_len;
  p.has_key_lengths = true;
  c.page_shuffle = *rc::gen::inRange<std::uint64_t>(1, 1u << 20);
  c.shared_prefix = p.batch > 1 && *rc::gen::element(false, true);
  c.poison_masked = *rc::gen::element(false, true);
  return c;
}


// Why a deterministic path must give the same bits on two arrangements of one cache.
constexpr const char* kSameKeys = "the path is declared deterministic and reads the same keys in the same order";

// 1. Paged ≡ contiguous: the kernel's paged output is judged against the reference of the gathered
// keys, and equals its own output on those keys handed as one [B, Hkv, Lk, D] tensor.
void paged_equals_contiguous(PropertyContext& ctx) {
  const AttentionCase c = draw_paged_case(ctx);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun paged = run_and_bound(ctx, c);
  ctx.expect(judge(ctx, c, paged.data, paged.run), c, "a paged cache against the reference of its gathered keys");
  AttentionCase contiguous = c;
  contiguous.problem.kv_storage = KvStorage::Contiguous;
  contiguous.problem.page_size = 0;
  if (!ctx.supports(contiguous.problem)) return;
  CaseData gathered = paged.data;  // k and v are the gather of the pages (case.h)
  gathered.pages = {};
  const JudgedRun other = run_and_bound(ctx, contiguous, std::move(gathered));
  expect_same_output(ctx, c, paged, other, "the paged cache against the same keys contiguous", kSameKeys);
}

// 2. The physical arrangement is invisible: another permutation of the pool, with the table
// rewritten to match, reaches the same keys.
void page_arrangement_invariance(PropertyContext& ctx) {
  const AttentionCase c = draw_paged_case(ctx);
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun first = run_and_bound(ctx, c);
  // The next shuffle whose table differs (a pool of a few pages repeats one now and then); a pool
  // of one page has a single arrangement, and the case is declined.
  AttentionCase shuffled = c;
  CaseData shuffled_data;
  bool rearranged = false;
  for (int attempt = 0; attempt < 16 && !rearranged; ++attempt) {
    shuffled.page_shuffle = c.page_shuffle + 1 + static_cast<std::uint64_t>(attempt);
    shuffled_data = ctx.case_data(shuffled);
    rearranged = shuffled_data.pages.block_table != first.data.pages.block_table;
  }
  if (!rearranged) ctx.decline("the pool has a single arrangement (one page)");
  const JudgedRun second = run_and_bound(ctx, shuffled, std::move(shuffled_data));
  ctx.expect(judge(ctx, shuffled, second.data, second.run), shuffled, "a permuted pool against the reference");
  expect_same_output(ctx, c, first, second, "the cache with its pages permuted and its table rewritten", kSameKeys);
}

// 3. What no slot in use reaches — unused pages, the pages unused slots name, and the last page's
// tail past the sequence — holds NaN and ±max: the output must be that of the same keys with
// ordinary values there.
void paged_unreachable_keys(PropertyContext& ctx) {
  AttentionCase c = draw_paged_case(ctx);
  c.poison_masked = true;
  ctx.classify(c);
  ctx.require_supported(c.problem);
  const JudgedRun poisoned = run_and_bound(ctx, c);
  ctx.expect(judge(ctx, c, poisoned.data, poisoned.run), c,
             "a cache whose unused pages, unused slots and last-page tails hold NaN and ±max, against the reference");
  AttentionCase clean = c;
  clean.poison_masked = false;
  const JudgedRun plain = run_and_bound(ctx, clean);
  expect_same_output(ctx, c, poisoned, plain, "the poisoned cache against the same keys with finite filler", kSameKeys);
}

}  // namespace

std::vector<PropertyDef> paged_properties() {
  return {
      {"paged-equals-contiguous", "paged",
       "a block table is storage: the attention of a paged cache is that of the keys it reaches, laid out contiguously",
       false, paged_equals_contiguous},
      {"page-arrangement-invariance", "paged",
       "which physical page holds a slot is not part of the function: permuting the pool and rewriting the table changes nothing",
       false, page_arrangement_invariance},
      {"paged-unreachable-keys", "paged",
       "unused pages, unused slots and the last page's tail lie past every sequence's length: no value there may reach the output",
       false, paged_unreachable_keys},
  };
}

}  // namespace attncheck::props
