// The backward pass of the CUDA flash backends over the forward's grid (attention_grid.h), shared
// by the host-emulated and the device tests.
#pragma once

#include <string>

#include "attention_grid.h"

namespace attncheck::cuda::testing {

/// Checks the backward pass of the built-in backend `backend` on grid case `g` (with a dLSE input
/// when `with_d_lse`) against reference_attention_backward: skips with the backend's own reason
/// when it declines the case, fails with the tensor, element and error otherwise.
void expect_gradients_conform(const std::string& backend, const GridCase& g, bool with_d_lse);

}  // namespace attncheck::cuda::testing
