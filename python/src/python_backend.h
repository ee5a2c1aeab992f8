// A Python object as an attncheck backend: a C++ BackendImpl whose methods take the GIL and call
// the object's profile(), supports(), forward() and optional forward_layer() and
// problem_profile(). impl::make_backend_table turns it into the ABI table the engine runs, so a
// Python kernel goes through exactly the calls, probes and verdicts a C plug-in does.
#pragma once

#include <nanobind/nanobind.h>

#include <array>
#include <cstdint>
#include <string>

#include "attncheck/backend.h"
#include "attncheck/backend_handle.h"
#include "attncheck/backend_impl.h"

namespace attncheck::python {

namespace nb = nanobind;

/// One DLTensor of a backend call, handed to Python. It exports the suite's buffer through DLPack
/// (`__dlpack__`, `__dlpack_device__`) without copying; the buffer belongs to the suite and lives
/// only for the duration of the call, after which the object refuses to export it again.
struct CallTensor {
  std::string name;
  DLTensor tensor{};                  ///< byte_offset folded into data, strides always explicit
  std::array<std::int64_t, 4> shape{};
  std::array<std::int64_t, 4> strides{};
  bool writable = false;
  bool alive = true;
  /// The table's DLTensor as received (what a wrapped C plug-in is handed on).
  const DLTensor* original = nullptr;

  CallTensor(std::string tensor_name, const DLTensor& from, bool is_output);
  void check_alive() const;
};

/// Raised by a Python backend to decline a problem in forward (a skip, as supports() would).
/// Defined in the module; the bridge maps it to kAttncheckNotSupported.
extern PyObject* unsupported_error;
/// Raised by a Python backend for inconsistent tensors: kAttncheckInvalidProblem.
extern PyObject* invalid_problem_error;

/// The last line of the current Python exception's traceback ("ValueError: boom"), and clears
/// nothing: `error` still owns it.
std::string exception_line(const nb::python_error& error);

/// The ABI status and message a Python exception becomes (unsupported_error: not supported;
/// invalid_problem_error: invalid problem; anything else: internal error with `what` prefixed).
[[noreturn]] void rethrow_as_abi_error(const nb::python_error& error, const std::string& what);

/// Builds the ABI table around `backend` (a Python object); `name` is the table's name.
attncheck_backend* make_python_backend_table(nb::object backend, const std::string& name, const std::string& description);

}  // namespace attncheck::python
