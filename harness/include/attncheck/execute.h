/// \file execute.h
/// \brief Runs a backend on one set of inputs through the C ABI, with memory probes on every call.
///
/// Inputs are encoded exactly in the kernel's dtype (they were rounded to it already) in the
/// layout asked for; every buffer sits between guard regions; outputs are pre-filled with a
/// signalling NaN pattern so an element never written is found by index; inputs are compared
/// byte for byte after the call. What the probes find is returned as one line per finding.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attncheck/backend_handle.h"
#include "attncheck/layer.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/reference.h"

namespace attncheck {

struct RunOptions {
  bool sequence_major = false;        ///< Q, K, V and O as [B, L, H, D] in memory
  bool want_lse = true;               ///< pass an LSE tensor when the backend writes one
  std::int64_t guard_elements = 256;  ///< guard region on each side of every buffer, in elements
  /// Run the call in a forked child with a fresh instance of the backend: a crash (signal), an
  /// abnormal exit or a hang past `timeout_seconds` becomes a BackendError for this call, and
  /// the caller goes on. Buffers live in shared memory, so the probes see the child's writes.
  bool isolate = false;
  double timeout_seconds = 30;
};

struct BackendRun {
  HostTensor out;                 ///< [B, Hq, Lq, Dv], the backend's values converted exactly to double
  std::optional<HostTensor> lse;  ///< [1, B, Hq, Lq] when the backend wrote it
  std::vector<std::string> memory_findings;  ///< out-of-bounds writes, unwritten outputs, modified inputs
};

/// The guarded buffers of one forward call, prepared but not yet run: for properties that call
/// the table themselves (with a deliberately invalid problem, say) and still want the probes.
class PreparedCall {
 public:
  PreparedCall(const Problem& problem, const NumericsProfile& profile, const AttentionInputs& inputs,
               const RunOptions& options = {});
  ~PreparedCall();
  PreparedCall(const PreparedCall&) = delete;
  PreparedCall& operator=(const PreparedCall&) = delete;

  const attncheck_attention_tensors& tensors() const;
  /// Runs the probes and reads the outputs back.
  BackendRun finish();

 private:
  struct Buffers;
  std::unique_ptr<Buffers> buffers_;
};

/// Calls backend.forward on `inputs` (values already in the profile's input dtype). Throws
/// BackendError when the backend returns a non-ok status, or — isolated — crashes or hangs.
BackendRun run_backend(Backend& backend, const Problem& problem, const NumericsProfile& profile,
                       const AttentionInputs& inputs, const RunOptions& options = {});

/// The same for the layer entry point; out is [1, B, Lq, d_model].
BackendRun run_backend_layer(Backend& backend, const LayerProblem& problem, const NumericsProfile& profile,
                             const LayerInputs& inputs, const RunOptions& options = {});

}  // namespace attncheck
