/// \file backend_handle.h
/// \brief The C++ side of the ABI: an owning handle on a backend table, the plug-in loader and the
/// registry of built-in backends. Status codes become exceptions here, on our side only.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "attncheck/backend.h"
#include "attncheck/layer.h"
#include "attncheck/numerics_profile.h"
#include "attncheck/problem.h"

namespace attncheck {

/// A backend could not be loaded: one line naming the file and what is wrong (missing file, not
/// a shared library, missing entry symbol, NULL table, ABI version mismatch, unknown name).
class LoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A backend call returned a status other than ok; what() holds the backend's last_error().
class BackendError : public std::runtime_error {
 public:
  BackendError(attncheck_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  attncheck_status status() const { return status_; }

 private:
  attncheck_status status_;
};

/// The ABI's name of a status ("ok", "not supported", "invalid problem", "internal error").
std::string_view status_name(attncheck_status status);

/// Conversions between the suite's types and the ABI's, defined once.
attncheck_problem to_abi(const Problem& problem);
Problem from_abi(const attncheck_problem& problem);
attncheck_layer_problem to_abi(const LayerProblem& problem);
DLDataType to_dlpack(DType dtype);
std::optional<DType> from_dlpack(DLDataType dtype);
/// Throws BackendError(kAttncheckInvalidProblem) naming the field on an unknown enumerator or dtype.
NumericsProfile from_abi(const attncheck_numerics_profile& profile);
attncheck_numerics_profile to_abi(const NumericsProfile& profile);
/// ABI 2.2. Throws BackendError(kAttncheckInvalidProblem) naming the field on an unknown dtype,
/// a negative block, or atomics declared deterministic.
BackwardProfile from_abi(const attncheck_backward_profile& profile);
attncheck_backward_profile to_abi(const BackwardProfile& profile);

/// Owns one backend table (destroy() on destruction). Move-only.
class Backend {
 public:
  /// Takes ownership of `table` (not NULL), which came from `origin` (a library path or
  /// "built-in"); `library` keeps the shared library loaded for as long as the table lives.
  Backend(attncheck_backend* table, std::string origin, std::shared_ptr<void> library = nullptr);
  Backend(Backend&&) noexcept;
  Backend& operator=(Backend&&) noexcept;
  ~Backend();

  std::string_view name() const;
  std::string_view description() const;
  /// "built-in" or the path the library was loaded from.
  const std::string& origin() const { return origin_; }
  attncheck_abi_version abi_version() const;
  /// Where every tensor of a call must live (the table's `device`).
  DLDevice device() const { return table_->device; }

  /// The profile for inputs of `input`, or nullopt if that dtype is not supported.
  std::optional<NumericsProfile> profile(DType input) const;
  /// The profile of the path forward takes for `problem` (get_problem_profile, ABI 2.1), or the
  /// dtype's profile when the backend has no per-problem entry; nullopt if `input` is not supported.
  std::optional<NumericsProfile> profile(const Problem& problem, DType input) const;
  /// Whether the backend declares profiles per problem (get_problem_profile is set).
  bool has_problem_profiles() const;
  /// nullopt if supported; otherwise the backend's reason (never empty).
  std::optional<std::string> unsupported_reason(const Problem& problem, DType input, DLDeviceType device) const;
  /// The same for the memory the backend declared.
  std::optional<std::string> unsupported_reason(const Problem& problem, DType input) const {
    return unsupported_reason(problem, input, device().device_type);
  }
  bool has_layer() const;
  /// Whether the backend has a backward pass (get_backward_profile and backward, ABI 2.2).
  bool has_backward() const;
  /// The backward profile for `problem` with `input` inputs; nullopt when the backend has no
  /// backward pass or declines (kAttncheckNotSupported) this problem or dtype.
  std::optional<BackwardProfile> backward_profile(const Problem& problem, DType input) const;

  /// Runs forward; throws BackendError with the backend's message on any status but ok.
  void forward(const Problem& problem, const attncheck_attention_tensors& tensors);
  void forward_layer(const LayerProblem& problem, const attncheck_layer_tensors& tensors);
  /// Runs backward (ABI 2.2); throws BackendError on any status but ok, and
  /// BackendError(kAttncheckNotSupported) when the backend has no backward pass.
  void backward(const Problem& problem, const attncheck_backward_tensors& tensors);

  attncheck_backend* table() const { return table_; }
  /// The problem options (attncheck_problem_option bits) the table declares; 0 where it predates
  /// problem_options (ABI 2.3). A property draws an option only where it is declared.
  std::uint32_t declared_options() const;

 private:
  NumericsProfile checked_profile(const attncheck_numerics_profile& p, std::string_view call, DType input) const;
  /// Why `problem` must not reach this table: it uses an option the table does not declare in
  /// problem_options (backend.h, ABI 2.3), or one added after the table's ABI minor.
  std::optional<std::string> predating_reason(const Problem& problem) const;
  attncheck_backend* table_;
  std::string origin_;
  std::shared_ptr<void> library_;  // released after ~Backend()'s body has destroyed the table
};

/// Loads a plug-in: dlopen(path), the entry symbol, the table, the ABI major check.
/// Throws LoadError with one line naming the file.
Backend load_backend_library(const std::filesystem::path& path);

/// Names of the built-in backends (cpu-naive, cpu-flash, mutants, …) in registration order.
std::vector<std::string> builtin_backend_names();
/// A built-in by name, or a plug-in when `name_or_path` contains a '/' or ends in ".so".
/// Throws LoadError ("unknown backend 'x'; built-in backends are: …").
Backend open_backend(const std::string& name_or_path);

}  // namespace attncheck
