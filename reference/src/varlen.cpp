#include "attncheck/varlen.h"

#include <fmt/format.h>

#include <limits>

namespace attncheck {

std::vector<std::int32_t> cumulative_lengths(std::span<const std::int64_t> lengths, std::string_view tensor) {
  std::vector<std::int32_t> cu(lengths.size() + 1, 0);
  std::int64_t total = 0;
  for (size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 0) throw ProblemError(fmt::format("{}: sequence {} has length {}, below 0", tensor, b, lengths[b]));
    total += lengths[b];
    if (total > std::numeric_limits<std::int32_t>::max())
      throw ProblemError(fmt::format("{}: the first {} sequences hold {} tokens, more than an int32 offset addresses",
                                     tensor, b + 1, total));
    cu[b + 1] = static_cast<std::int32_t>(total);
  }
  return cu;
}

bool query_row_exists(const Problem& p, std::span<const std::int64_t> query_lengths, std::int64_t b, std::int64_t i) {
  if (!p.varlen) return true;
  if (static_cast<std::int64_t>(query_lengths.size()) != p.batch)
    throw ProblemError(fmt::format("query_lengths: dim 0 (batch) is {}, but the packed problem expects B = {}",
                                   query_lengths.size(), p.batch));
  const std::int64_t length = query_lengths[static_cast<size_t>(b)];
  const std::int64_t first = p.first_query_row(length);
  return i >= first && i < first + length;
}

namespace {

void check_lengths(const Problem& p, std::span<const std::int64_t> lengths, std::int64_t capacity, PackedRows rows) {
  const char* const name = rows == PackedRows::Queries ? "query_lengths" : "key_lengths";
  if (static_cast<std::int64_t>(lengths.size()) != p.batch)
    throw ProblemError(fmt::format("{}: dim 0 (batch) is {}, but the problem expects B = {}", name, lengths.size(), p.batch));
  for (size_t b = 0; b < lengths.size(); ++b)
    if (lengths[b] < 0 || lengths[b] > capacity)
      throw ProblemError(fmt::format("{}: element {} is {}, but must be in [0, {}]", name, b, lengths[b], capacity));
}

std::int64_t first_row(const Problem& p, PackedRows rows, std::int64_t length) {
  return rows == PackedRows::Queries ? p.first_query_row(length) : 0;
}

}  // namespace

HostTensor pack_sequences(const Problem& p, const View4<const double>& logical, std::span<const std::int64_t> lengths,
                          PackedRows rows) {
  const Shape4& s = logical.shape;
  check_lengths(p, lengths, s[2], rows);
  const std::vector<std::int32_t> cu = cumulative_lengths(lengths, rows == PackedRows::Queries ? "cu_seqlens_q" : "cu_seqlens_k");
  HostTensor packed({1, cu.back(), s[1], s[3]});
  for (std::int64_t b = 0; b < s[0]; ++b) {
    const std::int64_t length = lengths[static_cast<size_t>(b)], first = first_row(p, rows, length);
    for (std::int64_t r = 0; r < length; ++r)
      for (std::int64_t h = 0; h < s[1]; ++h)
        for (std::int64_t d = 0; d < s[3]; ++d) packed(0, cu[static_cast<size_t>(b)] + r, h, d) = logical(b, h, first + r, d);
  }
  return packed;
}

HostTensor unpack_sequences(const Problem& p, const View4<const double>& packed, std::span<const std::int64_t> lengths,
                            PackedRows rows, std::int64_t length, double absent) {
  check_lengths(p, lengths, length, rows);
  const std::vector<std::int32_t> cu = cumulative_lengths(lengths, rows == PackedRows::Queries ? "cu_seqlens_q" : "cu_seqlens_k");
  const Shape4& s = packed.shape;
  if (s[0] != 1 || s[1] != cu.back())
    throw ProblemError(fmt::format("packed tensor: shape is {}, but {} packed rows are expected", shape_string(s), cu.back()));
  HostTensor logical({p.batch, s[2], length, s[3]});
  for (double& x : logical.values) x = absent;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t n = lengths[static_cast<size_t>(b)], first = first_row(p, rows, n);
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t h = 0; h < s[2]; ++h)
        for (std::int64_t d = 0; d < s[3]; ++d) logical(b, h, first + r, d) = packed(0, cu[static_cast<size_t>(b)] + r, h, d);
  }
  return logical;
}

}  // namespace attncheck
