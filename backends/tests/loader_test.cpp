// The plug-in loader: each failure is one line naming the file; a real plug-in loads by path.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "attncheck/backend_handle.h"

namespace attncheck {
namespace {

std::string load_error(const std::filesystem::path& path) {
  try {
    (void)load_backend_library(path);
  } catch (const LoadError& e) {
    return e.what();
  }
  return "(loaded)";
}

bool one_line_starting_with(const std::string& message, const std::string& prefix) {
  return message.rfind(prefix, 0) == 0 && message.find('\n') == std::string::npos;
}

TEST(Loader, MissingFile) {
  const std::string path = "/nonexistent/attncheck-nothing.so";
  EXPECT_EQ(load_error(path), path + ": no such file");
}

TEST(Loader, TextFileIsNotALibrary) {
  const auto path = std::filesystem::temp_directory_path() / "attncheck_loader_test_not_a_library.so";
  std::ofstream(path) << "this is a text file, not an ELF shared object\n";
  const std::string message = load_error(path);
  EXPECT_TRUE(one_line_starting_with(message, path.string() + ": cannot be loaded as a shared library: ")) << message;
  std::filesystem::remove(path);
}

TEST(Loader, LibraryWithoutTheEntrySymbol) {
  const std::string path = ATTNCHECK_PLUGIN_NO_ENTRY;
  EXPECT_EQ(load_error(path), path + ": does not export attncheck_backend_entry() (not an attncheck backend)");
}

TEST(Loader, EntryReturningNull) {
  const std::string path = ATTNCHECK_PLUGIN_NULL_ENTRY;
  EXPECT_EQ(load_error(path), path + ": attncheck_backend_entry() returned NULL");
}

TEST(Loader, WrongMajorVersion) {
  const std::string path = ATTNCHECK_PLUGIN_WRONG_MAJOR;
  // plugins.c declares major = ATTNCHECK_ABI_VERSION_MAJOR + 1, minor 0.
  EXPECT_EQ(load_error(path), path + ": built for attncheck ABI 3.0, but this attncheck speaks ABI 2." +
                                  std::to_string(ATTNCHECK_ABI_VERSION_MINOR) + " (major versions must match)");
}

TEST(Loader, Abi1PluginIsRefusedWithWhatToChange) {
  const std::string path = ATTNCHECK_PLUGIN_ABI_1;
  const std::string message = load_error(path);
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(message.rfind(path + ": built for attncheck ABI 1.0, but this attncheck speaks ABI 2." +
                              std::to_string(ATTNCHECK_ABI_VERSION_MINOR) + ": rebuild it against",
                          0),
            0u)
      << message;
  EXPECT_NE(message.find("`device`"), std::string::npos) << message;
}

TEST(Loader, PluginLoadsByPathAndKeepsItsOrigin) {
  Backend b = load_backend_library(ATTNCHECK_PLUGIN_CPU_NAIVE);
  EXPECT_EQ(b.name(), "cpu-naive");
  EXPECT_EQ(b.origin(), ATTNCHECK_PLUGIN_CPU_NAIVE);
  EXPECT_TRUE(b.profile(DType::F32).has_value());
  // A path given to open_backend goes to the loader too.
  EXPECT_EQ(open_backend(ATTNCHECK_PLUGIN_CPU_NAIVE).origin(), ATTNCHECK_PLUGIN_CPU_NAIVE);
}

TEST(Registry, BuiltinsInRegistrationOrder) {
  // backends/CMakeLists.txt registers cpu-naive, then cpu-flash, then the rest.
  const auto names = builtin_backend_names();
  ASSERT_GE(names.size(), 2u);
  EXPECT_EQ(names[0], "cpu-naive");
  EXPECT_EQ(names[1], "cpu-flash");
  for (const std::string& n : names) {
    Backend b = open_backend(n);
    EXPECT_EQ(b.name(), n);
    EXPECT_EQ(b.origin(), "built-in");
  }
}

TEST(Registry, UnknownNameListsTheBuiltins) {
  try {
    (void)open_backend("gpu-magic");
    FAIL();
  } catch (const LoadError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("unknown backend 'gpu-magic'; built-in backends are: cpu-naive, cpu-flash", 0), 0u)
        << e.what();
  }
}

}  // namespace
}  // namespace attncheck
