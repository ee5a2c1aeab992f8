/// \file harness.h
/// \brief The test bed shared by the backend tests: generate seeded inputs, quantize them to the
/// backend's dtype, lay them out in backend storage (any layout, byte offsets), run the reference
/// on exactly those values, read the backend's output back and judge it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/problem.h"
#include "attncheck/reference.h"

namespace attncheck::test {

/// Memory order of Q, K, V, O (the logical order is always [B, H, L, D]).
enum class Layout : std::uint8_t {
  Compact,         ///< [B, H, L, D] row-major, strides NULL
  SequenceMajor,   ///< [B, L, H, D] in memory, explicit strides, data behind a byte_offset
  PaddedRows,      ///< [B, H, L, D] with 5 unused elements after every row (stride(L) = D + 5)
};

/// One problem of the fixed grid, and how its inputs are made.
struct Case {
  std::string name;  ///< CamelCase, unique, no underscores (gtest)
  Problem problem;
  Layout layout = Layout::Compact;
  std::vector<std::int64_t> key_lengths;  ///< used when problem.has_key_lengths
  std::int64_t empty_mask_row_every = 0;  ///< > 0: mask rows i % n == n - 1 attend to nothing
  std::int64_t masked_keys_begin = 0, masked_keys_end = 0;  ///< the mask also drops these keys in every row
  std::uint64_t seed = 1;
};

/// A tensor in backend storage with the DLTensor describing it.
struct StoredTensor {
  std::vector<std::byte> bytes;
  std::vector<std::int64_t> shape, strides;
  DLTensor tensor{};
  /// Logical element (any rank up to 4) as a double, converted exactly from the stored dtype.
  double get(std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0, std::int64_t i3 = 0) const;
};

/// Inputs quantized to `dtype` (values exactly representable there), in backend storage and as
/// the doubles the reference reads.
struct Prepared {
  Problem problem;
  DType dtype = DType::F32;
  HostTensor q, k, v, mask;
  std::vector<std::int64_t> key_lengths;
  StoredTensor sq, sk, sv, smask, skl, sout, slse;

  AttentionInputs reference_inputs() const;
  attncheck_attention_tensors abi_tensors();
  HostTensor out() const;  ///< [B, Hq, Lq, Dv] as written by the backend
  HostTensor lse() const;  ///< [1, B, Hq, Lq]
};

/// Generates and stores the inputs of `c` for a backend whose output dtype is `output`.
Prepared prepare(const Case& c, DType dtype, DType output);

/// A compact tensor of `dtype` over `values` (logical shape `shape`), for layer tests.
StoredTensor store(const std::vector<double>& values, const std::vector<std::int64_t>& shape, DType dtype);

/// Standard-normal values rounded to `dtype`, seeded.
std::vector<double> random_values(std::size_t count, DType dtype, std::uint64_t seed, double stddev = 1.0);

struct Judgement {
  bool passed = false;
  std::string message;  ///< one line: the verdict's summary, or where and why it failed
};

/// The one place these tests judge a backend's output: compare_attention() of attncheck::numerics.
/// `reference` must carry row statistics.
Judgement judge(const Problem& problem, const NumericsProfile& profile, const AttentionInputs& inputs,
                const AttentionResult& reference, const HostTensor& out, const HostTensor* lse);

}  // namespace attncheck::test
