// The grid of named harness cases every CUDA backend is checked on, shared by the host-emulated
// and the device backends' tests. Each case runs through check_case (run_backend: tensors placed
// in the backend's declared memory — the simulated device for the @host backends, CUDA memory
// for the others — guards, NaN pre-fill, input fingerprints) and is judged by compare_attention.
#pragma once

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "attncheck/check.h"

namespace attncheck::cuda::testing {

/// MHA / MQA / GQA (ratio 3 and 4), all four alignments, windows, softcap, boolean and additive
/// masks with broadcast and short last dims, key lengths (including 0) with poisoned padding,
/// [B, L, H, D] strides, padded rows behind a byte offset, Dk ≠ Dv, Lq = 1, tile boundaries ±1
/// for 16- and 32-key tiles, fully masked rows and large logits — each in every dtype of
/// `dtypes`, named with the dtype appended.
std::vector<GridCase> attention_grid(const std::vector<DType>& dtypes);
/// attention_grid without its paged cases: the backward ABI takes contiguous K and V only
/// (backend.h, ABI 2.4), so a paged cache has no backward call to check.
std::vector<GridCase> backward_attention_grid(const std::vector<DType>& dtypes);

/// gtest parameter name: the case's name.
std::string case_name(const ::testing::TestParamInfo<GridCase>& info);

/// Checks `g` on the built-in backend `backend`: skips with the backend's own reason when it
/// declines the case (a dtype it does not take, a limit, no CUDA device), fails with the
/// check's report otherwise unless it passed.
void expect_conforms(const std::string& backend, const GridCase& g);

}  // namespace attncheck::cuda::testing

namespace attncheck {
/// How gtest prints a grid parameter: its name and case text.
inline void PrintTo(const GridCase& g, std::ostream* os) { *os << g.name << " (" << g.c.describe() << ")"; }
}  // namespace attncheck
