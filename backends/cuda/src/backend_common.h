/// \file backend_common.h
/// \brief What the five CUDA backends share on the host side: turning the ABI's problem and
/// DLTensors into AttentionParams (with errors that name the tensor and dimension), their
/// numerics profiles, and the C table whose entry points never let an exception out.
///
/// Plain C++ (no CUDA headers), so the host-emulated backends and the nvcc-built device
/// backends use the very same validation.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "attncheck/backend.h"
#include "attncheck/cuda/attention_params.h"

namespace attncheck::cuda {

/// A status other than ok, with the message last_error() will return. Thrown on our side only;
/// the table's entry points turn it into a status.
class BackendFailure : public std::runtime_error {
 public:
  BackendFailure(attncheck_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  attncheck_status status() const { return status_; }

 private:
  attncheck_status status_;
};

/// The element type a DLDataType names, if it is one the kernels read (f32, f16, bf16).
bool element_type_of(DLDataType dtype, ElementType& type);
DLDataType dlpack_type_of(ElementType type);
/// "f32", "f16", "bf16", or DLPack's code/bits/lanes for anything else.
std::string dtype_string(DLDataType dtype);

/// Why `problem` is inconsistent (the attncheck_problem contract of backend.h), or "".
std::string problem_error(const attncheck_problem& problem);

/// Checks every tensor of `tensors` against `problem` (presence, ndim, shape, dtype, device) and
/// builds the kernels' parameters. Throws BackendFailure(kAttncheckInvalidProblem) naming the
/// tensor and dimension on the first mismatch.
AttentionParams make_params(const attncheck_problem& problem, const attncheck_attention_tensors& tensors,
                            DLDeviceType device, ElementType& type);

/// How a kernel computes, for get_profile.
struct ProfileTraits {
  ElementType input = ElementType::F32;
  bool probability_rounded_to_input = false;  ///< P is stored in the input dtype for P·V
  attncheck_rounding accumulation = kAttncheckRoundNearest;
  int softmax_block = 0;                       ///< keys per online-softmax update; 0 = three-pass
  bool deterministic = true;
};
attncheck_numerics_profile make_profile(const ProfileTraits& traits);

/// A backend's behaviour; CudaTable wraps it in the C table.
class BackendImpl {
 public:
  virtual ~BackendImpl() = default;
  /// Fills the profile, or returns false if the dtype is not handled.
  virtual bool profile(DLDataType input, attncheck_numerics_profile& profile) const = 0;
  /// "" if supported; otherwise the reason (a kAttncheckNotSupported).
  virtual std::string unsupported_reason(const attncheck_problem& problem, DLDataType input,
                                         DLDeviceType device) const = 0;
  /// Computes out and lse; throws BackendFailure (or anything else, reported as internal error).
  virtual void forward(const attncheck_problem& problem, const attncheck_attention_tensors& tensors) = 0;
};

/// A new C table (name and description are copied) owning `impl`; destroy() deletes both.
attncheck_backend* make_table(const char* name, const char* description, std::unique_ptr<BackendImpl> impl);

}  // namespace attncheck::cuda
