// Keys processed in tiles of T with the last partial tile skipped: keys j ≥ ⌊Lk/T⌋·T never
// attended. One hypothesis per common tile size; a case tells T from T′ only when ⌊Lk/T⌋·T
// differs, so the smallest T that reproduces the output is named first.
#include <fmt/format.h>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {

std::vector<Hypothesis> key_tiles_skipped_hypotheses() {
  std::vector<Hypothesis> list;
  for (const std::int64_t tile : {16, 32, 64, 128})
    list.push_back(alternative_reference(
        fmt::format("last-key-tile-skipped-{}", tile),
        fmt::format("matches the reference with the last partial tile of {} keys skipped (keys j ≥ ⌊Lk/{}⌋·{} ignored)",
                    tile, tile, tile),
        [tile](const FailureEvidence& e) -> std::optional<Alteration> {
          const Problem& p = e.attention_case.problem;
          const std::int64_t whole_tiles = p.k_len / tile * tile;
          // Without a whole tile, or without a partial one, nothing is skipped.
          if (whole_tiles == 0 || whole_tiles == p.k_len) return std::nullopt;
          auto [problem, data] = with_structure(p, e.data, [&](std::int64_t b, std::int64_t i, std::int64_t j) {
            return j < whole_tiles && in_structural_range(p, e.data, b, i, j);
          });
          return Alteration{problem, data};
        }));
  return list;
}

}  // namespace attncheck::diagnosis
