/// \file varlen.h
/// \brief Packed variable-length batches (problem.h, "Packed variable-length batches"): the
/// offsets a packed batch is addressed by, and the map between its packed rows and the logical
/// padded problem the reference and the tolerance model work on.
///
/// Sequence b's rows are packed at [cu[b], cu[b + 1]) of dim 0 with cu = cumulative_lengths(lengths),
/// FlashAttention's cu_seqlens. Packed query row cu_q[b] + r is logical row
/// first_query_row(query_lengths[b]) + r of batch b; packed key cu_k[b] + j is logical key j.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "attncheck/problem.h"
#include "attncheck/tensor.h"

namespace attncheck {

/// cu[0] = 0, cu[b + 1] = cu[b] + lengths[b]: B + 1 offsets, int32 as FlashAttention's cu_seqlens
/// are. Throws ProblemError naming `tensor` when a length is negative or the total exceeds int32.
std::vector<std::int32_t> cumulative_lengths(std::span<const std::int64_t> lengths, std::string_view tensor);

/// Whether logical query row i of batch b is one of its sequence's queries: always for a problem
/// that is not varlen; for a varlen one, i ∈ [first_query_row(len), first_query_row(len) + len)
/// with len = query_lengths[b].
bool query_row_exists(const Problem& problem, std::span<const std::int64_t> query_lengths, std::int64_t b,
                      std::int64_t i);

/// What a packed tensor holds: the queries (rows placed by first_query_row) or the keys and values
/// (rows from 0).
enum class PackedRows : std::uint8_t { Queries, Keys };

/// The rows of a logical [B, H, L, D] tensor that exist, packed as [1, Σ lengths, H, D] (a 4-d
/// HostTensor with a leading 1, as lower-rank tensors are stored). Throws ProblemError when
/// `lengths` has not B entries in [0, L].
HostTensor pack_sequences(const Problem& problem, const View4<const double>& logical, std::span<const std::int64_t> lengths,
                          PackedRows rows);

/// The inverse of pack_sequences for a packed [1, Σ lengths, H, D] tensor, into the logical
/// [B, H, L, D] of `length` rows per batch; rows that do not exist hold `absent`.
HostTensor unpack_sequences(const Problem& problem, const View4<const double>& packed, std::span<const std::int64_t> lengths,
                            PackedRows rows, std::int64_t length, double absent);

}  // namespace attncheck
