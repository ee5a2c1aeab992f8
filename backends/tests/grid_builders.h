/// \file grid_builders.h
/// \brief The words the backends' fixed case grids are written in (conformance_test.cpp for the
/// forward pass, cpu_flash_backward_test.cpp for the backward pass): problem shapes, how a case
/// hands its tensors over, the mask adjustments that make rows or key tiles empty, and the
/// capitalised pieces of a gtest parameter name. Both grids speak of the same shapes and
/// layouts, so a case named alike in both is the same case.
#pragma once

#include <cctype>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "attncheck/case.h"
#include "attncheck/check.h"

namespace attncheck::grid_builders {

inline Problem mha(std::int64_t b, std::int64_t h, std::int64_t lq, std::int64_t lk, std::int64_t d) {
  return Problem::of_shape(b, h, h, lq, lk, d, d);
}

inline Problem grouped(std::int64_t hq, std::int64_t hkv, std::int64_t lq, std::int64_t lk, std::int64_t d) {
  return Problem::of_shape(1, hq, hkv, lq, lk, d, d);
}

inline Problem with_key_lengths(Problem p) {
  p.has_key_lengths = true;
  return p;
}

// How a case hands Q, K, V and O (and the backward's dO and gradients) over. Every compact tensor
// goes with strides = NULL, so the ABI's "compact row-major" reading is exercised next to the
// explicit strides of the others.
enum class Layout : std::uint8_t {
  Compact,        // [B, H, L, D] row-major, strides NULL
  SequenceMajor,  // [B, L, H, D] in memory, explicit strides, data behind a byte_offset
  PaddedRows,     // [B, H, L, D] with 5 unused elements after every row (stride(L) = D + 5)
};

/// Grid case `name` of problem `p` with the data of `seed`, handed over in `layout`. The scale
/// and softcap are rounded to fp32 (with_fp32_parameters): the CPU backends apply them in fp32.
inline GridCase layout_case(std::string name, const Problem& p, Layout layout, std::uint64_t seed) {
  GridCase g;
  g.name = std::move(name);
  g.c.problem = with_fp32_parameters(p);
  g.c.seed = seed;
  g.c.sequence_major = layout == Layout::SequenceMajor;
  g.options.null_strides = true;
  g.options.sequence_major = layout == Layout::SequenceMajor;
  // 64 bytes: a multiple of every element size, and short of the 256-byte alignment a backend
  // might wrongly assume of the first element.
  if (layout == Layout::SequenceMajor) g.options.byte_offset = 64;
  if (layout == Layout::PaddedRows) g.options.row_padding = 5;
  return g;
}

using CaseAdjustment = std::function<void(const AttentionCase&, CaseData&)>;

/// Rows i of the mask with i % n == n − 1 allow no key at all: the empty-row convention.
inline CaseAdjustment empty_rows_every(std::int64_t n) {
  return [n](const AttentionCase& c, CaseData& d) {
    forbid_in_mask(c.problem, d, [n](std::int64_t i) { return i % n == n - 1; }, 0, c.problem.mask_k_len);
  };
}

/// Every row of the mask forbids keys [begin, end): whole key tiles masked inside live rows.
inline CaseAdjustment masked_keys(std::int64_t begin, std::int64_t end) {
  return [begin, end](const AttentionCase& c, CaseData& d) {
    forbid_in_mask(c.problem, d, [](std::int64_t) { return true; }, begin, end);
  };
}

/// `s` with its first letter in upper case ("f16" → "F16"), for gtest parameter names.
inline std::string capitalized(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

}  // namespace attncheck::grid_builders
