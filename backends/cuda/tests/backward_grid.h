// The backward pass of the CUDA flash backends over the forward's grid (attention_grid.h), shared
// by the host-emulated and the device tests.
#pragma once

#include <string>

#include "attention_grid.h"

namespace attncheck::cuda::testing {

/// Checks the backward pass of the built-in backend `backend` on grid case `g` (with a dLSE input
/// when `with_d_lse`) through the harness (run_backend_backward with the grid's layout options;
/// dO, dLSE and the O and LSE handed over from make_backward_data): no memory findings, the
/// gradients within τ of reference_attention_backward (gradient_tolerance, compare_gradients), and
/// the same bits from a second call, as the declared deterministic profile promises. Skips with
/// the backend's own reason when it declines the case.
void expect_gradients_conform(const std::string& backend, const GridCase& g, bool with_d_lse);

}  // namespace attncheck::cuda::testing
