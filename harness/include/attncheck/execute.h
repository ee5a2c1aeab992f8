/// \file execute.h
/// \brief Runs a backend on one set of inputs through the C ABI — forward, layer or backward —
/// with memory probes on every call.
///
/// Inputs are encoded exactly in the kernel's dtype (they were rounded to it already) in the
/// layout asked for; every buffer sits between guard regions; outputs are pre-filled with a
/// signalling NaN pattern so an element never written is found by index; inputs are compared
/// byte for byte after the call. What the probes find is returned as one line per finding.
///
/// The buffers are built and probed on the host; a backend whose memory is elsewhere (a GPU, the
/// simulated device) receives copies of them, made and read back only through its memory domain
/// (memory_domain.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/backward.h"
#include "attncheck/case.h"
#include "attncheck/layer.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/reference.h"

namespace attncheck {

struct RunOptions {
  /// Q, K, V and O (and a backward call's dO, dQ, dK, dV: every [B, H, L, D] tensor) as
  /// [B, L, H, D] in memory; row_padding and byte_offset below apply to the same tensors.
  bool sequence_major = false;
  bool want_lse = true;               ///< pass an LSE tensor when the backend writes one
  std::int64_t guard_elements = 256;  ///< guard region on each side of every buffer, in elements
  /// Unused elements after every head-dim row of Q, K, V and O in memory (either layout): the
  /// stride of the dimension outside D becomes D + row_padding, as in a tensor sliced out of a
  /// wider one. The padding holds the guard pattern; a backend that assumes compact rows reads it
  /// and writes into it, and a write into an output's padding is a finding.
  std::int64_t row_padding = 0;
  /// DLTensor::byte_offset of Q, K, V and O: their first element lies this many bytes after
  /// DLTensor::data (a multiple of 8 keeps every dtype aligned). The bytes in between count as
  /// guard, so a backend that ignores the offset reads guard bytes and writes "before the start".
  std::uint64_t byte_offset = 0;
  /// Hand every tensor whose layout is compact row-major with strides = NULL (DLPack's way of
  /// saying compact) instead of explicit strides. Q, K, V and O are compact unless sequence_major
  /// or row_padding say otherwise; the mask, key lengths, LSE and all layer tensors always are.
  bool null_strides = false;
  /// Run the call in a forked child with a fresh instance of the backend: a crash (signal), an
  /// abnormal exit or a hang past `timeout_seconds` becomes a BackendError for this call, and
  /// the caller goes on. Buffers live in shared memory, so the probes see the child's writes.
  bool isolate = false;
  double timeout_seconds = 30;
};

struct BackendRun {
  HostTensor out;                 ///< [B, Hq, Lq, Dv], the backend's values converted exactly to double
  std::optional<HostTensor> lse;  ///< [1, B, Hq, Lq] when the backend wrote it
  /// Out-of-bounds writes, writes into an output's row padding, unwritten outputs, modified inputs.
  std::vector<std::string> memory_findings;
};

/// Inside PreparedCall::execute: the tensors as the backend sees them, and the stream they are
/// ordered by.
class DeviceCall {
 public:
  /// Waits for the call's device work; throws BackendError(kAttncheckInternalError) with the
  /// device's error text ("asynchronous device error after the call returned: …").
  virtual void synchronize() = 0;

 protected:
  ~DeviceCall() = default;
};

/// The guarded buffers of one forward call, on the host (the staging: data between guard
/// regions, outputs pre-filled with the NaN payload), prepared but not yet run.
class PreparedCall {
 public:
  PreparedCall(const Problem& problem, const NumericsProfile& profile, const AttentionInputs& inputs,
               const RunOptions& options = {});
  ~PreparedCall();
  PreparedCall(const PreparedCall&) = delete;
  PreparedCall& operator=(const PreparedCall&) = delete;

  /// Places every buffer in `device`'s memory (memory_domain.h: host memory is handed over as it
  /// is; elsewhere each whole allocation, guards included, is copied in), runs `call` with the
  /// placed tensors and the domain's stream, synchronizes the stream, and copies every allocation
  /// back, so finish() probes what the backend left there. The domain is made here, in the
  /// calling process. Throws BackendError for an asynchronous device error or an unusable device.
  void execute(DLDevice device, const std::function<void(const attncheck_attention_tensors&, DeviceCall&)>& call);
  /// Runs the probes on the staging and reads the outputs back.
  BackendRun finish();

 private:
  struct Buffers;
  std::unique_ptr<Buffers> buffers_;
};

/// Calls backend.forward on `inputs` (values already in the profile's input dtype), in the memory
/// the backend declares. Throws BackendError when the backend returns a non-ok status (a
/// kAttncheckNotSupported included: the caller decides it is a skip), a device reports an
/// asynchronous error, or — isolated — the call crashes or hangs. Isolated calls of a backend
/// whose memory is not the host's also ask supports() in the child, so that the parent never
/// initialises the device.
BackendRun run_backend(Backend& backend, const Problem& problem, const NumericsProfile& profile,
                       const AttentionInputs& inputs, const RunOptions& options = {});

/// Calls backend.forward with the problem `called` on tensors built for `prepared` from `inputs`
/// and placed in the backend's memory as run_backend places them: for checks that a backend
/// refuses tensors that disagree with the problem (kAttncheckInvalidProblem naming the tensor
/// and the dimension). Returns the BackendError the call threw; nullopt when it was accepted.
std::optional<BackendError> forward_with_problem(Backend& backend, const Problem& prepared, const Problem& called,
                                                 const NumericsProfile& profile, const AttentionInputs& inputs,
                                                 const RunOptions& options = {});

struct BackwardRun {
  /// The backend's dQ, dK, dV (and dBias) converted exactly to double, in logical order.
  AttentionGradients gradients;
  /// As BackendRun's, each naming its tensor by its field in attncheck_backward_tensors ("dq",
  /// "dout", …): out-of-bounds writes, writes into row padding, unwritten gradients, modified
  /// inputs (out, lse, dout and dlse included).
  std::vector<std::string> memory_findings;
};

/// Calls backend.backward on `inputs` and `data` (values already in the dtypes the kernel takes)
/// with the guards, NaN pre-fill, input fingerprints, memory domain and isolation of
/// run_backend, laid out as `options` say. dbias is passed when `want_d_bias` (the problem has an
/// additive mask and the backward profile writes_dbias). Throws BackendError as run_backend does.
///
/// The tensors (backend.h, attncheck_backward_tensors): the forward's Q, K, V, mask and key
/// lengths as run_backend hands them; out in the forward profile's output dtype, lse [B, Hq, Lq]
/// float32, dout in the input dtype and dlse float32 (NULL when data.d_lse is unset), all inputs,
/// fingerprinted; dq, dk, dv and dbias (the mask's shape) in backward_profile.gradient_dtype(input),
/// pre-filled with the NaN payload. sequence_major, row_padding and byte_offset apply to Q, K, V,
/// out, dout, dq, dk and dv; the mask, key lengths, lse, dlse and dbias are always compact
/// (null_strides applies to every compact tensor). Refused before the call, with the tensor named:
/// `data` of another problem's shapes (ProblemError), a value the encoding would round
/// (std::invalid_argument: the reference must see what the kernel receives), dbias asked for
/// without an additive mask or from a profile that does not write it, dlse given to a profile
/// that does not take it.
BackwardRun run_backend_backward(Backend& backend, const Problem& problem, const NumericsProfile& profile,
                                 const BackwardProfile& backward_profile, const AttentionInputs& inputs,
                                 const BackwardData& data, bool want_d_bias, const RunOptions& options = {});

/// The same for the layer entry point; out is [1, B, Lq, d_model]. Every layer tensor is compact,
/// so of the layout options only null_strides applies.
BackendRun run_backend_layer(Backend& backend, const LayerProblem& problem, const NumericsProfile& profile,
                             const LayerInputs& inputs, const RunOptions& options = {});

}  // namespace attncheck
