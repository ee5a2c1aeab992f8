#include "attncheck/generators.h"

#include <algorithm>
#include <array>
#include <optional>

#include "attncheck/coverage.h"

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
// A steered case (generators.h) carries several large classes at once (a 256-wide head with 65
// keys and three batches); it gives way to this budget, a free case's typical work at the sizes
// where the steered ones run, so that steering does not make the quick profile slower.
constexpr std::int64_t kSteeredWorkBudget = 200'000;

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


// The coverage schedule (generators.h): which class each axis of a steered case takes.
constexpr int kGridCells = 3 * 3 * 5;
constexpr int kSizeClassStride = 6;  // variant × mask × causal (none, three alignments, key lengths)
struct Steering {
  bool active = false;
  int slot = 0;
  int grid = 0;
  int stream = 0;
  int variant() const { return grid % 3; }          // MHA, MQA, GQA
  int mask() const { return grid / 3 % 3; }         // none, boolean, additive
  int causal() const { return grid / 9; }           // none, top-left, bottom-right, offset, key lengths
  int batch() const { return slot % 3; }            // 1, 2, ≥3
  int ratio() const { return slot / 3 % 2; }        // Hq/Hkv 2, ≥3 (past MHA)
  // Lengths and head dims are steered apart, so that a steered case stays light: the first
  // half of the slots steers the length classes (with head dims 1, odd or other), the second
  // half the head dim classes (with lengths 1 or between).
  bool length_slot() const { return slot < kSteeredSlots / 2; }
  int dim_slot() const { return slot - kSteeredSlots / 2; }
  int q_length() const { return length_slot() ? slot % 5 : dim_slot() % 2 * 4; }  // classes of kLengthClasses
  int k_length() const { return length_slot() ? slot / 2 % 5 : dim_slot() / 2 % 2 * 4; }
  int qk_dim() const { return length_slot() ? std::array{0, 1, 5}[slot % 3] : dim_slot() % 6; }  // kHeadDimClasses
  int v_dim() const { return length_slot() ? std::array{0, 1, 5}[slot / 3 % 3] : dim_slot() / 2 % 6; }
  bool sequence_major() const { return slot / 4 % 2 == 1; }
  /// 0: the mix decides; 1: medium; 2: long. One property in kSizeClassStride steers a medium
  /// case, the next one a long case: each costs what dozens of small ones do.
  int size_class() const {
    const int turn = stream % kSizeClassStride;
    return slot == kSteeredSlots - 1 && (turn == 1 || turn == 2) ? turn : 0;
  }
};

Steering steering_for(int size, const ProblemSpace& space) {
  Steering s;
  s.slot = size / 2;
  // Three draws in four are steered. RapidCheck retries a discarded case at the same size, so
  // a case steered into a cell the backend declines (a mask for a kernel that takes none) would
  // be declined on every retry, and a restrictive backend would check nothing at all; one
  // retry in four is the free draw. Shrinking moves the coin to 0: steered, whose classes then
  // shrink toward the free draw (steered()).
  s.active = s.slot < kSteeredSlots && *rc::gen::inRange(0, 4) < 3;
  s.stream = std::max(space.coverage_stream, 0);
  s.grid = (s.slot + kSteeredSlots * (s.stream % kGridCells)) % kGridCells;
  return s;
}

// A steered choice: `forced` (1 + the class; 0 means the free draw) as drawn, shrinking toward 0
// so that shrinking first gives the class up for the free draw, which then shrinks as usual.
int steered(int forced) {
  if (forced <= 0) return 0;
  return *rc::Gen<int>([forced](const rc::Random&, int) {
    return rc::shrinkable::shrinkRecur(forced, [](int value) { return rc::shrink::towards(value, 0); });
  });
}

// Length classes of coverage.h (tiles of 16; one more / one less than 16, 32, 64): "1", "tile-1",
// "tile", "tile+1", "between"; the first value of each is what shrinking converges to.
const std::vector<std::vector<std::int64_t>> kLengthClasses = {
    {1}, {15, 31, 63}, {16, 32, 64}, {17, 33, 65}, {2, 3, 5, 7, 9, 12, 14}};
// Head dim classes of coverage.h: 1, odd, 64, 128, ≥256, other.
const std::vector<std::vector<std::int64_t>> kHeadDimClasses = {{1}, {3, 59, 111}, {64}, {128}, {256}, {4, 8, 16, 32}};

// A length of class `length_class` (1-based, 0 = free) within max_len, or nullopt: free draw.
std::optional<std::int64_t> steered_length(int length_class, std::int64_t max_len) {
  if (length_class == 0) return std::nullopt;
  std::vector<std::int64_t> values;
  for (std::int64_t v : kLengthClasses[static_cast<std::size_t>(length_class - 1)])
    if (v <= max_len) values.push_back(v);
  if (values.empty()) return std::nullopt;
  return *rc::gen::elementOf(values);
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
      const Steering steer = steering_for(size, space);
      const int size_steer = steer.active ? steered(steer.size_class()) : 0;
      const SizeClass size_class = size_steer == 1 && space.sizes.medium_percent > 0 ? SizeClass::Medium
                                   : size_steer == 2 && space.sizes.long_percent > 0 ? SizeClass::Long
                                                                                       : draw_size_class(space.sizes);
      const bool big = size >= 30;
      const bool steer_small = steer.active && size_class == SizeClass::Small;
      const int batch_steer = steer.active ? steered(steer.batch() + 1) : 0;
      p.batch = batch_steer > 0 ? batch_steer : *rc::gen::inRange<std::int64_t>(1, 2 + size / 40);

      // MHA first (shrinks to it), then MQA and GQA with ratios 2, 3 and 12: a mapping written
      // h % Hkv instead of h / (Hq/Hkv) agrees with the right one when the ratio or Hkv is 1.
      const int variant_steer = steer.active && space.gqa ? steered(steer.variant() + 1) : 0;
      const int variant = variant_steer > 0 ? variant_steer - 1 : space.gqa ? *rc::gen::element(0, 1, 2) : 0;
      const int ratio_steer = variant_steer > 1 ? steered(steer.ratio() + 1) : 0;  // 1: Hq/Hkv = 2, 2: ≥ 3
      if (variant == 0) {
        p.q_heads = p.kv_heads = *rc::gen::inRange<std::int64_t>(1, 1 + std::min<std::int64_t>(space.max_heads, 1 + size / 15));
      } else if (variant == 1) {
        p.kv_heads = 1;
        p.q_heads = ratio_steer == 1   ? 2
                    : ratio_steer == 2 ? *rc::gen::inRange<std::int64_t>(3, 5)
                                       : *rc::gen::inRange<std::int64_t>(2, 1 + std::max<std::int64_t>(2, std::min<std::int64_t>(space.max_heads, 2 + size / 10)));
      } else {
        p.kv_heads = *rc::gen::inRange<std::int64_t>(2, 4);
        p.q_heads = p.kv_heads * (ratio_steer > 0 ? ratio_steer + 1 : *rc::gen::element<std::int64_t>(2, 3, 12));
      }

      const auto& dims = size_class == SizeClass::Long     ? kLongHeadDims
                         : size_class == SizeClass::Medium ? kMediumHeadDims
                         : big                             ? kAllHeadDims
                                                           : kSmallHeadDims;
      const int qk_steer = steer_small ? steered(steer.qk_dim() + 1) : 0;
      p.qk_dim = qk_steer > 0 ? *rc::gen::elementOf(kHeadDimClasses[static_cast<std::size_t>(qk_steer - 1)]) : *rc::gen::elementOf(dims);
      const int v_steer = steer_small && space.distinct_dims ? steered(steer.v_dim() + 1) : 0;
      if (v_steer > 0) p.v_dim = *rc::gen::elementOf(kHeadDimClasses[static_cast<std::size_t>(v_steer - 1)]);
      else p.v_dim = space.distinct_dims && *rc::gen::element(false, true) ? *rc::gen::elementOf(dims) : p.qk_dim;

      const std::int64_t max_len = std::max<std::int64_t>(2, space.max_len * std::min(size, 100) / 100);
      auto length = [&] {
        if (big && *rc::gen::element(false, false, true)) return *rc::gen::elementOf(kBoundaryLengths);
        return *rc::gen::inRange<std::int64_t>(1, max_len + 1);
      };
      if (size_class == SizeClass::Small) {
        // A steered length keeps within the space's max_len (not the size's share of it: the
        // steered classes are the point of the early cases); Lq = 1 only where decode is drawn.
        const int k_steer = steer_small ? steered(steer.k_length() + 1) : 0;
        const int q_steer = steer_small && (space.decode || steer.q_length() != 0) ? steered(steer.q_length() + 1) : 0;
        const auto k_len = steered_length(k_steer, space.max_len);
        p.k_len = k_len ? *k_len : length();
        const auto q_len = q_steer > 0 && q_steer == k_steer && k_len ? k_len : steered_length(q_steer, space.max_len);
        p.q_len = q_len ? *q_len : space.decode && *rc::gen::element(false, false, false, true) ? 1 : length();
        // A steered case costs about what a free one of its size does (kSteeredWorkBudget): its
        // steered dimensions give way within their classes (coverage.h), lengths 16 at a time,
        // then odd and other head dims to their smallest, then the heads to the fewest that keep
        // the variant and the Hq/Hkv class.
        if (steer_small) {
          auto work = [&p] { return p.batch * p.q_heads * std::max(p.qk_dim, p.v_dim) * p.q_len * p.k_len; };
          auto smallest_of_class = [](std::int64_t dim) {
            return dim == 1 || dim == 64 || dim >= 128 ? dim : dim % 2 == 1 ? std::int64_t{3} : std::int64_t{4};
          };
          while (work() > kSteeredWorkBudget) {
            const bool equal = p.q_len == p.k_len && q_len;
            if (k_len && p.k_len > kTileQuantum + 1 && (p.k_len >= p.q_len || !q_len || p.q_len <= kTileQuantum + 1)) p.k_len -= kTileQuantum;
            else if (q_len && p.q_len > kTileQuantum + 1) p.q_len -= kTileQuantum;
            else break;
            if (equal) p.q_len = p.k_len = std::min(p.q_len, p.k_len);
          }
          if (work() > kSteeredWorkBudget && qk_steer > 0) p.qk_dim = smallest_of_class(p.qk_dim);
          if (work() > kSteeredWorkBudget && v_steer > 0) p.v_dim = smallest_of_class(p.v_dim);
          if (work() > kSteeredWorkBudget) {  // the variant and its Hq/Hkv class stay
            const std::int64_t ratio = std::min<std::int64_t>(p.q_heads / p.kv_heads, 3);
            p.kv_heads = variant == 2 ? 2 : 1;
            p.q_heads = variant == 0 ? 1 : p.kv_heads * ratio;
          }
        }
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

      // The grid's causal class: 1 none, 2–4 the alignments, 5 key lengths (which need them).
      const bool causal_steerable = steer.active && space.causal && (steer.causal() != 4 || space.key_lengths);
      const int causal_steer = causal_steerable ? steered(steer.causal() + 1) : 0;
      if (space.key_lengths) p.has_key_lengths = causal_steer == 5 || *rc::gen::element(false, true);
      if (space.causal) {
        std::vector<Alignment> alignments = {Alignment::TopLeft, Alignment::BottomRight, Alignment::Offset};
        if (p.has_key_lengths) alignments.push_back(Alignment::KeyLengths);
        if (causal_steer == 0) {
          p.causal = *rc::gen::element(false, true);
          p.alignment = *rc::gen::elementOf(alignments);
        } else {
          p.causal = causal_steer > 1;
          p.alignment = causal_steer > 1 ? alignments[static_cast<std::size_t>(causal_steer - 2)] : Alignment::TopLeft;
        }
        if (p.alignment == Alignment::Offset) p.diagonal_offset = *rc::gen::inRange<std::int64_t>(0, p.k_len + 1);
      }
      if (space.window && *rc::gen::element(false, true)) {
        p.window_left = *rc::gen::inRange<std::int64_t>(-1, p.k_len + 1);
        p.window_right = *rc::gen::inRange<std::int64_t>(-1, p.k_len + 1);
      }
      if (space.softcap && *rc::gen::element(false, true)) p.softcap = *rc::gen::element(50.0, 1.0, 15.0);
      if (space.mask) {
        const int mask_steer = steer.active ? steered(steer.mask() + 1) : 0;
        p.mask = mask_steer > 0 ? std::array{MaskKind::None, MaskKind::Boolean, MaskKind::Additive}[static_cast<std::size_t>(mask_steer - 1)]
                                : *rc::gen::element(MaskKind::None, MaskKind::Boolean, MaskKind::Additive);
        if (p.mask != MaskKind::None) {
          p.mask_batch = *rc::gen::element(p.batch, std::int64_t{1});
          p.mask_heads = *rc::gen::element(p.q_heads, std::int64_t{1});
          p.mask_q_len = *rc::gen::element(p.q_len, std::int64_t{1});
          p.mask_k_len = *rc::gen::element(false, false, true) ? *rc::gen::inRange<std::int64_t>(1, p.k_len + 1) : p.k_len;
        }
      }
      if (space.custom_scale && *rc::gen::element(false, false, false, true)) p.scale = *rc::gen::element(0.5, 0.0, 2.0);
      return p;
    });
  });
}

rc::Gen<AttentionCase> gen_case(DType dtype, const ProblemSpace& space, std::vector<ValueKind> kinds) {
  return rc::gen::withSize([dtype, space, kinds](int size) {
    return rc::gen::exec([dtype, space, kinds, size] {
      AttentionCase c;
      c.problem = *gen_problem(space);
      c.dtype = dtype;
      c.values = *rc::gen::elementOf(kinds);
      const Steering steer = steering_for(size, space);
      const int layout_steer = steer.active && space.layouts ? steered(steer.sequence_major() ? 2 : 1) : 0;
      if (layout_steer > 0) c.sequence_major = layout_steer == 2;
      else if (space.layouts) c.sequence_major = *rc::gen::element(false, true);
      const bool has_dead_keys = c.problem.has_key_lengths || c.problem.mask != MaskKind::None;
      if (space.poison && has_dead_keys) c.poison_masked = *rc::gen::element(false, true);
      c.seed = *rc::gen::inRange<std::uint64_t>(0, 1u << 20);
      return c;
    });
  });
}

}  // namespace attncheck
