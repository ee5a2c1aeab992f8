/// \file cuda_backend.h
/// \brief What the five CUDA backends add to impl::BackendImpl: turning the ABI's problem and
/// DLTensors into the kernels' AttentionParams, the profile they all declare but for a few traits,
/// and the order of checks every one of them makes before it launches anything.
///
/// Plain C++ (no CUDA headers), and C++17: the nvcc-built device backends include it too.
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "attncheck/backend_impl.h"
#include "attncheck/cuda/attention_params.h"

namespace attncheck::cuda {

/// The element type a DLDataType names, if it is one the kernels read (f32, f16, bf16).
std::optional<ElementType> element_type_of(DLDataType dtype);
DLDataType dlpack_type_of(ElementType type);

/// Checks every tensor of `tensors` against `problem` with impl::check_tensor (in `device`
/// memory, q, k, v, out and an additive mask in `type`) and builds the kernels' parameters.
AttentionParams make_params(const attncheck_problem& problem, const attncheck_attention_tensors& tensors,
                            DLDeviceType device, ElementType type);

/// The same for a backward call: the forward's tensors as make_params checks them (out, the
/// forward's O, in `type`; lse required), dout, dq, dk, dv in `type`, dlse (optional) in float32.
/// BackwardParams::delta is left for the launch to allocate. A dbias tensor is refused (invalid):
/// these kernels do not write the bias gradient.
BackwardParams make_backward_params(const attncheck_problem& problem, const attncheck_backward_tensors& tensors,
                                    DLDeviceType device, ElementType type);

/// Where the backends differ in how they compute; everything else in their profile is shared.
struct ProfileTraits {
  bool probability_rounded_to_input = false;  ///< P is stored in the input dtype for P·V
  attncheck_rounding accumulation = kAttncheckRoundNearest;
  int softmax_block = 0;  ///< keys per online-softmax update; 0 = three-pass
  bool deterministic = true;
};
attncheck_numerics_profile make_profile(ElementType input, const ProfileTraits& traits);

/// A CUDA backend: its memory, the input dtypes it reads, and what remains to it once the shared
/// checks have passed. forward() checks as supports() does first, so a caller that skips
/// supports() still gets a decline rather than a launch the kernels cannot take.
class CudaBackend : public impl::BackendImpl {
 public:
  DLDevice device() const final { return device_; }
  attncheck_numerics_profile profile(DLDataType input) const final;
  void check_supported(const attncheck_problem& problem, DLDataType input, DLDeviceType device) const final;
  void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) final;

 protected:
  CudaBackend(DLDevice device, std::vector<ElementType> inputs) : device_(device), inputs_(std::move(inputs)) {}

  virtual ProfileTraits traits(ElementType input) const = 0;
  /// Throws impl::unsupported when nothing can run at all (no usable device).
  virtual void check_available() const {}
  /// Throws impl::unsupported for a consistent problem beyond this backend's limits.
  virtual void check_limits(const attncheck_problem& problem) const = 0;
  /// Computes out (and lse when params.lse is set). A device backend enqueues its work on
  /// `stream` and returns: the suite synchronizes it.
  virtual void run(const AttentionParams& params, ElementType type, void* stream) = 0;

 private:
  ElementType accepted_input(DLDataType input) const;

  DLDevice device_;
  std::vector<ElementType> inputs_;
};

}  // namespace attncheck::cuda
