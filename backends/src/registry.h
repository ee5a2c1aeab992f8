/// \file registry.h
/// \brief The built-in backend table, generated at configure time (builtin_registry.cpp.in).
#pragma once

#include <span>

#include "attncheck/backend.h"

namespace attncheck::detail {

struct BuiltinBackend {
  const char* name;                  ///< as given to attncheck_add_backend()
  attncheck_backend_entry_fn entry;  ///< returns a new table, owned by the caller
};

/// Every built-in backend, in registration order.
std::span<const BuiltinBackend> builtin_backends();

}  // namespace attncheck::detail
