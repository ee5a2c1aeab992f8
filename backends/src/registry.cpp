// Built-in backends by name, and the one place that decides "name or plug-in path".
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "attncheck/backend_handle.h"
#include "registry.h"

namespace attncheck {

std::vector<std::string> builtin_backend_names() {
  std::vector<std::string> names;
  for (const detail::BuiltinBackend& b : detail::builtin_backends()) names.emplace_back(b.name);
  return names;
}

Backend open_backend(const std::string& name_or_path) {
  const bool is_path = name_or_path.find('/') != std::string::npos ||
                       (name_or_path.size() > 3 && name_or_path.ends_with(".so"));
  if (is_path) return load_backend_library(name_or_path);
  for (const detail::BuiltinBackend& b : detail::builtin_backends()) {
    if (name_or_path != b.name) continue;
    attncheck_backend* table = b.entry();
    if (table == nullptr) throw LoadError(fmt::format("built-in backend '{}': its entry function returned NULL", b.name));
    return Backend(table, "built-in");
  }
  throw LoadError(fmt::format("unknown backend '{}'; built-in backends are: {}", name_or_path,
                              fmt::join(builtin_backend_names(), ", ")));
}

}  // namespace attncheck
