// The plug-in loader: dlopen, the entry symbol, the table, the ABI major check. Every failure is
// one line that starts with the file's path.
#include <dlfcn.h>
#include <fmt/format.h>
#include <system_error>

#include "attncheck/backend_handle.h"

namespace attncheck {

namespace {

// dlerror() text on one line (it may quote the path again; that is fine, the line starts with ours).
std::string dl_message() {
  const char* e = dlerror();
  std::string text = e != nullptr ? e : "unknown dlopen error";
  for (char& c : text)
    if (c == '\n') c = ' ';
  return text;
}

}  // namespace

Backend load_backend_library(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw LoadError(fmt::format("{}: no such file", file));
  if (std::filesystem::is_directory(path, ec)) throw LoadError(fmt::format("{}: is a directory, not a shared library", file));

  // dlopen searches the library path for a name without '/'; a relative path must mean this file.
  const std::string open_name = path.has_parent_path() ? file : "./" + file;
  dlerror();
  void* handle = dlopen(open_name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) throw LoadError(fmt::format("{}: cannot be loaded as a shared library: {}", file, dl_message()));
  std::shared_ptr<void> library(handle, [](void* h) { dlclose(h); });

  dlerror();
  void* symbol = dlsym(handle, ATTNCHECK_BACKEND_ENTRY_SYMBOL);
  if (symbol == nullptr)
    throw LoadError(fmt::format("{}: does not export {}() (not an attncheck backend)", file, ATTNCHECK_BACKEND_ENTRY_SYMBOL));
  auto entry = reinterpret_cast<attncheck_backend_entry_fn>(symbol);

  attncheck_backend* table = entry();
  if (table == nullptr) throw LoadError(fmt::format("{}: {}() returned NULL", file, ATTNCHECK_BACKEND_ENTRY_SYMBOL));

  // Only abi_version may be read before the major check. On a mismatch, or a table too short for
  // this ABI, the layout is unknown and destroy() cannot safely be called: the table is leaked.
  const attncheck_abi_version v = table->abi_version;
  if (v.major == 1 && ATTNCHECK_ABI_VERSION_MAJOR == 2)
    throw LoadError(fmt::format(
        "{}: built for attncheck ABI {}.{}, but this attncheck speaks ABI 2.{}: rebuild it against attncheck 2's "
        "backend.h, setting the table's `device` to where your tensors live and reading the stream from the "
        "tensor sets (BackendImpl-based plug-ins need only the rebuild)",
        file, v.major, v.minor, ATTNCHECK_ABI_VERSION_MINOR));
  if (v.major != ATTNCHECK_ABI_VERSION_MAJOR)
    throw LoadError(fmt::format("{}: built for attncheck ABI {}.{}, but this attncheck speaks ABI {}.{} (major versions must match)",
                                file, v.major, v.minor, ATTNCHECK_ABI_VERSION_MAJOR, ATTNCHECK_ABI_VERSION_MINOR));
  // A 2.0 table ends at destroy; fields appended by later minors are read only where its
  // struct_size covers them (backend.h, rule 2).
  if (table->struct_size < ATTNCHECK_BACKEND_SIZE_2_0)
    throw LoadError(fmt::format("{}: table struct_size is {} bytes, but ABI {}.0 needs {}", file, table->struct_size,
                                ATTNCHECK_ABI_VERSION_MAJOR, ATTNCHECK_BACKEND_SIZE_2_0));
  switch (static_cast<int>(table->device.device_type)) {
    case kDLCPU: case kDLCUDA: case kDLCUDAHost: case kDLCUDAManaged: case kAttncheckSimulatedDevice: break;
    default:
      throw LoadError(fmt::format("{}: table device type is {}, but attncheck places tensors only in CPU (1), CUDA (2), "
                                  "CUDA host-pinned (3), CUDA managed (13) or simulated-device (12) memory",
                                  file, static_cast<int>(table->device.device_type)));
  }
  if (table->destroy == nullptr) throw LoadError(fmt::format("{}: table field destroy is NULL, but it is required", file));
  Backend backend(table, file, library);  // from here on, destroy() runs on every exit
  const char* missing = table->name == nullptr          ? "name"
                        : table->get_profile == nullptr ? "get_profile"
                        : table->supports == nullptr    ? "supports"
                        : table->forward == nullptr     ? "forward"
                        : table->last_error == nullptr  ? "last_error"
                                                        : nullptr;
  if (missing != nullptr) throw LoadError(fmt::format("{}: table field {} is NULL, but it is required", file, missing));
  return backend;
}

}  // namespace attncheck
