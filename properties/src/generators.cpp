#include "attncheck/generators.h"

#include <algorithm>

namespace attncheck {
namespace {

// Head dims where attention kernels' bugs live: 1 and 3 (degenerate), 59 and 111 (odd, not a
// tile multiple), 256 (the largest common). The first element is what shrinking converges to.
const std::vector<std::int64_t> kSmallHeadDims = {4, 1, 3, 8};
const std::vector<std::int64_t> kAllHeadDims = {4, 1, 3, 8, 16, 32, 59, 64, 111, 128, 256};
// Lengths at tile boundaries ± 1 for tiles of 16, 32, 64.
const std::vector<std::int64_t> kBoundaryLengths = {15, 16, 17, 31, 32, 33, 63, 64, 65};

// Keeps one case's reference work (∝ B·Hq·Lq·Lk·max(Dk, Dv)) bounded so that a property's cases
// run in milliseconds; lengths give way first since the other dimensions carry the bug classes.
constexpr std::int64_t kWorkBudget = 3'000'000;

// Medium and long problems: lengths where real kernels switch code paths (one key at a time below
// 64, 64-key tiles, 128/256 tiles, split-KV decode from 512 keys), ± 1 for the partial tile.
const std::vector<std::int64_t> kMediumLengths = {63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513};
const std::vector<std::int64_t> kLongKeyLengths = {1023, 1024, 1025, 2048, 4095, 4096, 4097, 8191, 8192};
// Prefill against a long cache: Lq at the 128-row tile (± 1 past it), Lk past 1024 keys.
const std::vector<std::int64_t> kLongQueryLengths = {128, 129};
const std::vector<std::int64_t> kLongPrefillKeyLengths = {1023, 1024, 1025};
const std::vector<std::int64_t> kMediumHeadDims = {64, 1, 59, 111, 128, 256};
const std::vector<std::int64_t> kLongHeadDims = {64, 128, 256, 512};
// A long case's reference costs ∝ Lq·Lk·D per head; one budget holds Lk = 8192 against Lq = 16 at
// D = 64 (8.4e6) and the largest prefill, Lq = 129 against Lk = 1025 at D = 64 (8.5e6), so that
// neither is halved back into the medium class. Batch and heads give way first, so that the
// lengths that reach the kernel's long paths survive, and a long case takes tens of milliseconds.
constexpr std::int64_t kLongWorkBudget = 9'000'000;

SizeClass draw_size_class(const SizeMix& mix) {
  if (mix.medium_percent <= 0 && mix.long_percent <= 0) return SizeClass::Small;  // no draw: small runs unchanged
  // At the full size, so that the mix holds at every RapidCheck size (inRange narrows with it);
  // it still shrinks to 0: small.
  const int r = *rc::gen::resize(100, rc::gen::inRange(0, 100));
  if (r < 100 - mix.medium_percent - mix.long_percent) return SizeClass::Small;
  return r < 100 - mix.long_percent ? SizeClass::Medium : SizeClass::Long;
}

}  // namespace

std::string_view size_class_name(SizeClass size) {
  switch (size) {
    case SizeClass::Small: return "small";
    case SizeClass::Medium: return "medium";
    case SizeClass::Long: return "long";
  }
  return "?";
}

SizeClass size_class_of(const Problem& problem) {
  const std::int64_t longest = std::max(problem.q_len, problem.k_len);
  if (longest > 600) return SizeClass::Long;
  return longest > 96 ? SizeClass::Medium : SizeClass::Small;
}

rc::Gen<Problem> gen_problem(const ProblemSpace& space) {
  return rc::gen::withSize([space](int size) {
    return rc::gen::exec([space, size] {
      Problem p;
      const SizeClass size_class = draw_size_class(space.sizes);
      const bool big = size >= 30;
      // Batch 3 from size 40 on, so that the quick profile (size ≤ 60) reaches "batch>=3": a batch
      // stride applied from the second sequence on agrees with the right one at B = 2 when the
      // bug is in the third's offset (coverage.h).
      // (element, not inRange: inRange narrows its range at small sizes and never reached 3.)
      std::vector<std::int64_t> batches = {1};
      for (std::int64_t b = 2; b <= 1 + std::min(2, size / 20); ++b) batches.push_back(b);
      p.batch = *rc::gen::elementOf(batches);

      // MHA first (shrinks to it), then MQA and GQA with ratios 2, 3 and 12: a mapping written
      // h % Hkv instead of h / (Hq/Hkv) agrees with the right one when the ratio or Hkv is 1.
      const int variant = space.gqa ? *rc::gen::element(0, 1, 2) : 0;
      if (variant == 0) {
        p.q_heads = p.kv_heads = *rc::gen::inRange<std::int64_t>(1, 1 + std::min<std::int64_t>(space.max_heads, 1 + size / 15));
      } else if (variant == 1) {
        p.kv_heads = 1;
        p.q_heads = *rc::gen::inRange<std::int64_t>(2, 1 + std::max<std::int64_t>(2, std::min<std::int64_t>(space.max_heads, 2 + size / 10)));
      } else {
        p.kv_heads = *rc::gen::inRange<std::int64_t>(2, 4);
        p.q_heads = p.kv_heads * *rc::gen::element<std::int64_t>(2, 3, 12);
      }

      const auto& dims = size_class == SizeClass::Long     ? kLongHeadDims
                         : size_class == SizeClass::Medium ? kMediumHeadDims
                         : big                             ? kAllHeadDims
                                                           : kSmallHeadDims;
      p.qk_dim = *rc::gen::elementOf(dims);
      p.v_dim = space.distinct_dims && *rc::gen::element(false, true) ? *rc::gen::elementOf(dims) : p.qk_dim;

      const std::int64_t max_len = std::max<std::int64_t>(2, space.max_len * std::min(size, 100) / 100);
      auto length = [&] {
        if (big && *rc::gen::element(false, false, true)) return *rc::gen::elementOf(kBoundaryLengths);
        return *rc::gen::inRange<std::int64_t>(1, max_len + 1);
      };
      if (size_class == SizeClass::Small) {
        p.k_len = length();
        p.q_len = space.decode && *rc::gen::element(false, false, false, true) ? 1 : length();
      } else if (size_class == SizeClass::Medium) {
        p.k_len = *rc::gen::elementOf(kMediumLengths);
        const int query = *rc::gen::inRange(0, 4);  // medium, medium, small, decode
        p.q_len = query < 2 ? *rc::gen::elementOf(kMediumLengths) : query == 2 || !space.decode ? length() : 1;
      } else if (*rc::gen::element(true, false) || !space.decode) {  // prefill: a 128-row tile of queries against a long cache
        p.q_len = *rc::gen::elementOf(kLongQueryLengths);
        p.k_len = *rc::gen::elementOf(kLongPrefillKeyLengths);
      } else {  // decode: one or a few queries against a long cache
        p.k_len = *rc::gen::elementOf(kLongKeyLengths);
        p.q_len = *rc::gen::element(true, false) ? 1 : *rc::gen::inRange<std::int64_t>(2, 17);
      }
      if (size_class != SizeClass::Small) {
        // Batch and heads give way before the lengths (which are the point of the class).
        const std::int64_t work = std::max(p.qk_dim, p.v_dim) * p.q_len * p.k_len;
        while (p.batch * p.q_heads * work > kLongWorkBudget && (p.batch > 1 || p.q_heads > 1)) {
          if (p.batch > 1) p.batch = 1;
          else if (p.kv_heads > 1) p.q_heads /= p.kv_heads, p.kv_heads = 1;
          else p.q_heads = p.q_heads % 2 == 0 && p.q_heads > 2 ? p.q_heads / 2 : 1, p.kv_heads = 1;
        }
        // Then the head dims (512 fits one budget only at decode lengths), then the lengths below.
        if (p.q_heads * work > kLongWorkBudget) {
          p.qk_dim = std::min<std::int64_t>(p.qk_dim, 64);
          p.v_dim = std::min<std::int64_t>(p.v_dim, 64);
        }
      }

      const std::int64_t widest = std::max(p.qk_dim, p.v_dim);
      const std::int64_t per_pair = p.batch * p.q_heads * widest;
      const std::int64_t budget = size_class == SizeClass::Small ? kWorkBudget : kLongWorkBudget;
      while (per_pair * p.q_len * p.k_len > budget && (p.q_len > 1 || p.k_len > 1)) {
        if (p.k_len >= p.q_len) p.k_len = std::max<std::int64_t>(1, p.k_len / 2);
        else p.q_len = std::max<std::int64_t>(1, p.q_len / 2);
      }

      if (space.key_lengths) p.has_key_lengths = *rc::gen::element(false, true);
      if (space.causal) {
        // One class of the coverage grid's causal axis each, uniformly: no causal, or one of the
        // alignments. Key-length alignment brings its key lengths with it; drawn only when both
        // coins fell right, it was a sixteenth of the draws and the quick profile missed its cells.
        std::vector<Alignment> alignments = {Alignment::TopLeft, Alignment::BottomRight, Alignment::Offset};
        if (space.key_lengths) alignments.push_back(Alignment::KeyLengths);
        // At full size: inRange narrows toward its start at small sizes.
        const std::size_t causal_class = *rc::gen::resize(100, rc::gen::inRange<std::size_t>(0, alignments.size() + 1));  // 0: none
        p.causal = causal_class > 0;
        if (p.causal) {
          p.alignment = alignments[causal_class - 1];
          p.has_key_lengths = p.has_key_lengths || p.alignment == Alignment::KeyLengths;
        } else {  // the diagonal a window alone is measured from
          if (!p.has_key_lengths && space.key_lengths) alignments.pop_back();
          p.alignment = *rc::gen::elementOf(alignments);
        }
        if (p.alignment == Alignment::Offset) p.diagonal_offset = *rc::gen::inRange<std::int64_t>(0, p.k_len + 1);
      }
      if (space.window && *rc::gen::element(false, true)) {
        p.window_left = *rc::gen::inRange<std::int64_t>(-1, p.k_len + 1);
        p.window_right = *rc::gen::inRange<std::int64_t>(-1, p.k_len + 1);
      }
      if (space.softcap && *rc::gen::element(false, true)) p.softcap = *rc::gen::element(50.0, 1.0, 15.0);
      if (space.mask) {
        p.mask = *rc::gen::element(MaskKind::None, MaskKind::Boolean, MaskKind::Additive);
        if (p.mask != MaskKind::None) {
          p.mask_batch = *rc::gen::element(p.batch, std::int64_t{1});
          p.mask_heads = *rc::gen::element(p.q_heads, std::int64_t{1});
          p.mask_q_len = *rc::gen::element(p.q_len, std::int64_t{1});
          p.mask_k_len = *rc::gen::element(false, false, true) ? *rc::gen::inRange<std::int64_t>(1, p.k_len + 1) : p.k_len;
        }
      }
      if (space.custom_scale && *rc::gen::element(false, false, false, true)) p.scale = *rc::gen::element(0.5, 0.0, 2.0);
      if (space.alibi && *rc::gen::element(false, true))
        p.alibi = *rc::gen::element(AlibiSlopes::PerHead, AlibiSlopes::PerBatchHead);
      if (space.sinks) p.sinks = *rc::gen::element(false, true);
      return p;
    });
  });
}

rc::Gen<AttentionCase> gen_case(DType dtype, const ProblemSpace& space, std::vector<ValueKind> kinds) {
  return rc::gen::exec([dtype, space, kinds] {
    AttentionCase c;
    c.problem = *gen_problem(space);
    c.dtype = dtype;
    c.values = *rc::gen::elementOf(kinds);
    if (space.layouts) c.sequence_major = *rc::gen::element(false, true);
    const bool has_dead_keys = c.problem.has_key_lengths || c.problem.mask != MaskKind::None;
    if (space.poison && has_dead_keys) c.poison_masked = *rc::gen::element(false, true);
    c.seed = *rc::gen::inRange<std::uint64_t>(0, 1u << 20);
    return c;
  });
}

}  // namespace attncheck
