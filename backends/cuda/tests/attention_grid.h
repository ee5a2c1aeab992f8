// The grid of attention problems every CUDA backend is checked on, and the one routine that runs
// a case through a backend table and judges it against reference_attention(). Host-emulated and
// device backends differ only in where the tensors live (TensorMemory).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "attncheck/backend.h"
#include "attncheck/dtype.h"
#include "attncheck/problem.h"

namespace attncheck::cuda::testing {

struct AttentionCase {
  std::string name;  ///< gtest parameter name: letters and digits only
  Problem problem;
  DType dtype = DType::F32;
  bool sequence_major = false;  ///< q, k, v, out laid out [B, L, H, D] instead of [B, H, L, D]
  double amplitude = 1.0;       ///< inputs are N(0, amplitude²) before rounding
  std::vector<std::int64_t> key_lengths;  ///< when problem.has_key_lengths
  bool nan_padding = false;     ///< K and V hold NaN beyond each key length (must not leak)
  bool empty_first_row = false; ///< the boolean mask forbids every key of query row 0
};

inline std::ostream& operator<<(std::ostream& os, const AttentionCase& c) {
  return os << c.name << " (" << c.problem.describe() << " dtype=" << dtype_name(c.dtype) << ")";
}

/// The grid: MHA / MQA / GQA (ratio 3 and 4), all four alignments, windows, softcap, boolean and
/// additive masks with broadcast and short last dims, key lengths (including 0), [B, L, H, D]
/// strides, Dk ≠ Dv, Lq = 1, tile boundaries ±1 for 16- and 32-key tiles, fully masked rows and
/// large logits — each in every dtype of `dtypes`.
std::vector<AttentionCase> attention_grid(const std::vector<DType>& dtypes);

/// Where a backend's tensors live: host memory, or CUDA memory through cudaMalloc / cudaMemcpy.
struct TensorMemory {
  DLDeviceType device = kDLCPU;
  std::function<void*(std::size_t)> allocate;
  std::function<void(void*)> release;
  std::function<void(void* device_dst, const void* host_src, std::size_t)> upload;
  std::function<void(void* host_dst, const void* device_src, std::size_t)> download;
};
TensorMemory host_memory();

/// Runs `c` through `backend` and records gtest failures for every mismatch with the reference.
/// Returns the backend's reason when it declines the problem (the caller skips).
std::optional<std::string> check_case(attncheck_backend* backend, const AttentionCase& c, const TensorMemory& memory);

}  // namespace attncheck::cuda::testing
