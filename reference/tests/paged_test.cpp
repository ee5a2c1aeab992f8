// Paged KV caches (paged.h) against the independent formulation they are defined to equal: the
// same keys handed contiguously. The pages are built here by this file's own scatter (a
// permutation of the pool, shared prefix pages, garbage in every unused page and slot), then the
// reference of the pages alone must equal, bitwise, the reference of the contiguous keys; plus a
// hand-derived case and the validation of pools and tables.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "attncheck/reference.h"

namespace attncheck::testing {
namespace {

bool same_bits(double a, double b) { return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b); }

// Scatters contiguous K, V [B, Hkv, Lk, D] into a shuffled pool: slot s of batch b gets a page of
// its own (or, with `share`, batch 0's page s for s < shared), every unused slot names one of two
// spare pages, and every element not written from the keys holds NaN.
PagedKv scatter(const Problem& p, const HostTensor& k, const HostTensor& v, const std::vector<std::int64_t>& lengths,
                std::int64_t shared, std::mt19937_64& rng) {
  const std::int64_t slots = p.pages_per_sequence();
  std::int64_t owned = 0;
  for (std::int64_t b = 0; b < p.batch; ++b) owned += p.pages_used(lengths[b]) - (b > 0 ? shared : 0);
  const std::int64_t pool = owned + 2;
  std::vector<std::int32_t> order(static_cast<size_t>(pool));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  PagedKv paged;
  paged.block_table.assign(static_cast<size_t>(p.batch * slots), 0);
  std::int64_t next = 0;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t s = 0; s < slots; ++s) {
      std::int32_t& entry = paged.block_table[static_cast<size_t>(b * slots + s)];
      if (s >= p.pages_used(lengths[b])) entry = order[static_cast<size_t>(owned + (b + s) % 2)];
      else if (b > 0 && s < shared) entry = paged.block_table[static_cast<size_t>(s)];
      else entry = order[static_cast<size_t>(next++)];
    }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  paged.k_pages = HostTensor(page_pool_shape(p, pool, p.qk_dim), nan);
  paged.v_pages = HostTensor(page_pool_shape(p, pool, p.v_dim), nan);
  const bool head_major = p.kv_storage == KvStorage::PagedHeadMajor;
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t j = 0; j < p.pages_used(lengths[b]) * p.page_size; ++j) {
      const std::int32_t page = paged.block_table[static_cast<size_t>(b * slots + j / p.page_size)];
      const std::int64_t row = j % p.page_size;
      for (std::int64_t g = 0; g < p.kv_heads; ++g) {
        for (std::int64_t d = 0; d < p.qk_dim; ++d)
          (head_major ? paged.k_pages(page, g, row, d) : paged.k_pages(page, row, g, d)) = k(b, g, j, d);
        for (std::int64_t d = 0; d < p.v_dim; ++d)
          (head_major ? paged.v_pages(page, g, row, d) : paged.v_pages(page, row, g, d)) = v(b, g, j, d);
      }
    }
  return paged;
}

HostTensor random_tensor(const Shape4& shape, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  HostTensor t(shape);
  for (double& x : t.values) x = normal(rng);
  return t;
}

TEST(PagedKv, EqualsContiguousKeysBitwise) {
  std::mt19937_64 rng(7);
  for (const KvStorage storage : {KvStorage::PagedTokenMajor, KvStorage::PagedHeadMajor})
    for (const std::int64_t page : {1, 5, 16, 64})
      for (const bool share : {false, true}) {
        Problem p = Problem::of_shape(3, 4, 2, 3, 4 * page, 8, 6);
        p.kv_storage = storage;
        p.page_size = page;
        p.has_key_lengths = true;
        p.causal = true;
        p.alignment = Alignment::KeyLengths;
        // A full table, an empty sequence, and one ending inside its last page (when pages hold more than a key).
        const std::vector<std::int64_t> lengths{p.k_len, 0, 2 * page + (page > 1 ? page / 2 : 1)};
        HostTensor q = random_tensor({p.batch, p.q_heads, p.q_len, p.qk_dim}, rng);
        HostTensor k = random_tensor({p.batch, p.kv_heads, p.k_len, p.qk_dim}, rng);
        HostTensor v = random_tensor({p.batch, p.kv_heads, p.k_len, p.v_dim}, rng);
        // Shared prefix pages are batch 0's: the contiguous keys of every batch copy them.
        const std::int64_t shared = share ? 1 : 0;
        for (std::int64_t b = 1; b < p.batch; ++b)
          for (std::int64_t g = 0; g < p.kv_heads; ++g)
            for (std::int64_t j = 0; j < shared * page; ++j) {
              for (std::int64_t d = 0; d < p.qk_dim; ++d) k(b, g, j, d) = k(0, g, j, d);
              for (std::int64_t d = 0; d < p.v_dim; ++d) v(b, g, j, d) = v(0, g, j, d);
            }
        const PagedKv paged = scatter(p, k, v, lengths, shared, rng);
        Problem contiguous = p;
        contiguous.kv_storage = KvStorage::Contiguous;
        contiguous.page_size = 0;
        const AttentionResult expected =
            reference_attention(contiguous, AttentionInputs{q.view(), k.view(), v.view(), {}, lengths, {}, {}, {}});
        AttentionInputs pages_only{q.view(), {}, {}, {}, lengths, {}, {}, paged.view()};
        const AttentionResult got = reference_attention(p, pages_only);
        for (size_t e = 0; e < expected.out.values.size(); ++e)
          ASSERT_TRUE(same_bits(got.out.values[e], expected.out.values[e]))
              << p.describe() << " share=" << share << " O at " << e << ": " << got.out.values[e] << " vs "
              << expected.out.values[e];
        for (size_t e = 0; e < expected.lse.values.size(); ++e)
          ASSERT_TRUE(same_bits(got.lse.values[e], expected.lse.values[e])) << p.describe() << " LSE at " << e;
        // The gather reaches exactly the keys of the slots in use; the rest is never read (NaN).
        const GatheredKv gathered = gather_paged_kv(p, paged.view(), lengths);
        EXPECT_TRUE(std::isnan(gathered.k(1, 0, 0, 0))) << "batch 1 is empty: its slots are unused";
        EXPECT_EQ(gathered.k(2, 1, 2 * page, 3), k(2, 1, 2 * page, 3));
      }
}

// Two pages of one key each (page size 1), stored in the pool in reverse: table [1, 0]. Keys
// k0 = 0 (score 0, value 1) and k1 = 1 with q = log 3 (score log 3, value 0), scale 1:
// O = e^0 / (e^0 + e^{log 3}) = 1/4, LSE = log 4. Reading the pool in storage order would give 3/4.
TEST(PagedKv, TwoSwappedPagesByHand) {
  Problem p = Problem::of_shape(1, 1, 1, 1, 2, 1, 1);
  p.scale = 1.0;
  p.kv_storage = KvStorage::PagedTokenMajor;
  p.page_size = 1;
  p.has_key_lengths = true;
  HostTensor q({1, 1, 1, 1}, std::log(3.0));
  PagedKv paged{HostTensor({2, 1, 1, 1}), HostTensor({2, 1, 1, 1}), {1, 0}};
  paged.k_pages(1, 0, 0, 0) = 0.0, paged.v_pages(1, 0, 0, 0) = 1.0;  // logical key 0
  paged.k_pages(0, 0, 0, 0) = 1.0, paged.v_pages(0, 0, 0, 0) = 0.0;  // logical key 1
  const std::vector<std::int64_t> lengths{2};
  const AttentionResult r = reference_attention(p, AttentionInputs{q.view(), {}, {}, {}, lengths, {}, {}, paged.view()});
  EXPECT_NEAR(r.out(0, 0, 0, 0), 0.25, 1e-16);
  EXPECT_NEAR(r.lse(0, 0, 0, 0), std::log(4.0), 1e-15);
}

TEST(PagedKv, ValidationNamesTheTensor) {
  Problem p = Problem::of_shape(1, 1, 1, 1, 4, 2, 2);
  p.kv_storage = KvStorage::PagedTokenMajor;
  p.page_size = 2;
  EXPECT_THROW(p.validate(), ProblemError);  // no key lengths
  p.has_key_lengths = true;
  p.page_size = 3;
  EXPECT_THROW(p.validate(), ProblemError);  // Lk = 4 is not whole pages of 3
  p.page_size = 2;
  p.validate();
  EXPECT_EQ(parse_problem(p.describe()), p);
  EXPECT_NE(p.describe().find("kv=paged:2"), std::string::npos);

  HostTensor q({1, 1, 1, 2});
  PagedKv paged{HostTensor({3, 2, 1, 2}), HostTensor({3, 2, 1, 2}), {2, 5}};
  std::vector<std::int64_t> lengths{3};
  const auto message = [&] {
    try {
      reference_attention(p, AttentionInputs{q.view(), {}, {}, {}, lengths, {}, {}, paged.view()});
    } catch (const ProblemError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message().find("block_table[0, 1]: is 5"), std::string::npos) << message();
  lengths = {2};  // slot 1 unused now: its entry is never followed
  EXPECT_EQ(message(), "no error");
  paged.v_pages = HostTensor({2, 2, 1, 2});
  EXPECT_NE(message().find("v_pages"), std::string::npos) << message();
}

}  // namespace
}  // namespace attncheck::testing
