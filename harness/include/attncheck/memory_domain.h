/// \file memory_domain.h
/// \brief Where a backend's tensors live, and the only ways the suite reaches them there.
///
/// The suite builds every buffer of a call on the host (the staging copy: data between guard
/// regions, outputs pre-filled with a NaN payload) and runs its probes on the host. A domain is
/// the backend's side: for host memory the staging itself is handed over; for any other memory
/// the staging is copied in whole (guards included) before the call and back in whole after the
/// stream was synchronized. Nothing else ever dereferences a domain's pointers — the simulated
/// device proves that on machines without a GPU, because its pages fault outside copies and
/// calls.
///
/// A domain is made in the process that runs the call (the forked child, under isolation), so a
/// parent never initialises a device and a sticky device error dies with its child.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "attncheck/backend.h"

namespace attncheck {

class MemoryDomain {
 public:
  virtual ~MemoryDomain() = default;
  /// The device the DLTensors of a call say they are on.
  virtual DLDevice device() const = 0;
  /// True when the backend reads the suite's host staging directly (no copies, no stream).
  virtual bool is_host() const { return false; }
  /// `bytes` of the domain's memory; throws BackendError(kAttncheckInternalError) with the
  /// domain's own message when it cannot.
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void release(void* pointer) noexcept = 0;
  virtual void copy_in(void* domain_destination, const void* host_source, std::size_t bytes) = 0;
  virtual void copy_out(void* host_destination, const void* domain_source, std::size_t bytes) = 0;
  /// The stream handed to the backend in the tensor set (backend.h, "Memory").
  virtual void* stream() = 0;
  /// Waits for the work of the call; the asynchronous error it reports, if any.
  virtual std::optional<std::string> synchronize() = 0;
  /// Brackets the backend call (the simulated device maps its pages only in between).
  virtual void enter_call() {}
  virtual void leave_call() {}
};

/// The domain for `device`: host memory, the simulated device, or CUDA device, pinned or managed
/// memory (CUDA builds only). Throws BackendError(kAttncheckNotSupported) naming the device when
/// this build cannot place tensors there, and BackendError(kAttncheckInternalError) when the
/// device exists in the build but cannot be used (the CUDA error text).
std::unique_ptr<MemoryDomain> make_memory_domain(DLDevice device);

/// The CUDA domains; defined in cuda_domain.cpp when CUDA is built, else a stub that refuses.
std::unique_ptr<MemoryDomain> make_cuda_memory_domain(DLDevice device);

/// Host pages that fault except inside copy_in/copy_out and enter_call..leave_call; its stream is
/// an attncheck_simulated_stream whose recorded fault synchronize() reports.
std::unique_ptr<MemoryDomain> make_simulated_memory_domain(int device_id);

}  // namespace attncheck
