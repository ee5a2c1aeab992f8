// An independent statement of the specification for the tests: scaled dot-product attention as
// three plain loops per query row, written from problem.h's documented semantics alone. No Eigen,
// no blocking, no threads, no shortcuts (every key of every row is visited and tested against
// every rule), so that agreement with reference_attention means something.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "attncheck/reference.h"

namespace attncheck::testing {

struct PlainResult {
  HostTensor out;            // [B, Hq, Lq, Dv]
  HostTensor lse;            // [1, B, Hq, Lq]
  HostTensor probabilities;  // [B, Hq, Lq, Lk]
  HostTensor allowed;        // [B, Hq, Lq, Lk]: 1 where the key is allowed, else 0
  // numerics/README.md §2.2 row data, with the same shapes as RowStatistics.
  HostTensor allowed_keys, max_abs_score, max_score, max_dot_abs;
  HostTensor row_scale, spread, centered, centered_dot, centered_score, fp16_tail, e4m3_tail;
};

/// Whether key j is allowed for query row i of (b, h), by problem.h's rules taken one at a time.
bool plain_key_allowed(const Problem& p, const AttentionInputs& in, std::int64_t b, std::int64_t h,
                       std::int64_t i, std::int64_t j);

PlainResult plain_attention(const Problem& p, const AttentionInputs& in);

/// Standard normal values, times `scale`.
HostTensor random_tensor(const Shape4& shape, std::mt19937_64& rng, double scale = 1.0);

/// A copy of `logical` whose view has non-compact strides: every element sits `spacing` apart in
/// memory and the axes are stored in the order `memory_order` (outermost first), so Q/K/V can be
/// given as [B, L, H, D], with a gap between elements, or both.
struct StridedCopy {
  std::vector<double> storage;
  View4<const double> view;
};
StridedCopy strided_copy(const View4<const double>& logical, const std::array<int, 4>& memory_order,
                         std::int64_t spacing, double filler);

inline View4<const double> cview(const HostTensor& t) { return t.view(); }

}  // namespace attncheck::testing
