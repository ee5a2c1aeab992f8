// The objects a Python backend receives in one call: the tensors as attributes (None where the
// problem has no such tensor), plus the ABI structs they came from, so that a backend wrapping a
// C plug-in hands the plug-in exactly what the suite passed.
#pragma once

#include <nanobind/nanobind.h>

#include "attncheck/backend.h"

namespace attncheck::python {

namespace nb = nanobind;

struct AttentionTensorSet {
  nb::object q, k, v, mask, key_lengths, out, lse;
  // The options a backend declares (its `options`): ALiBi slopes and sinks (ABI 2.3), a paged
  // cache's block table (2.4), a packed batch's offsets (2.5), fp8 inputs' descales (2.6); None
  // where the problem has none.
  nb::object alibi_slopes, sinks, block_table, cu_seqlens_q, cu_seqlens_k, q_descale, k_descale, v_descale;
  attncheck_problem abi_problem{};
  /// Valid during the call only; reset to nullptr when forward returns.
  const attncheck_attention_tensors* abi_tensors = nullptr;
};

struct LayerTensorSet {
  nb::object x, x_kv, w_q, w_k, w_v, b_q, b_k, b_v, w_o, b_o, mask, key_lengths, out;
  attncheck_layer_problem abi_problem{};
  const attncheck_layer_tensors* abi_tensors = nullptr;
};

}  // namespace attncheck::python
