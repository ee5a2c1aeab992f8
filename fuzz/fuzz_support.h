/// \file fuzz_support.h
/// \brief What the fuzz targets share: how a broken invariant is reported.
///
/// A harness stops the process on the first broken invariant so that libFuzzer saves the input as
/// a crash artifact. Exceptions the parser is not documented to throw are left to escape: the
/// uncaught exception ends in std::terminate, which libFuzzer reports as a crash with the
/// exception's type and message, and that is exactly the bug report we want.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace attncheck::fuzz {

/// Prints the broken invariant with the strings that show it, then aborts.
[[noreturn]] inline void invariant_broken(std::string_view what, std::string_view first = {},
                                          std::string_view second = {}) {
  std::fprintf(stderr, "attncheck fuzz: %.*s\n", static_cast<int>(what.size()), what.data());
  if (!first.empty()) std::fprintf(stderr, "  first:  %.*s\n", static_cast<int>(first.size()), first.data());
  if (!second.empty()) std::fprintf(stderr, "  second: %.*s\n", static_cast<int>(second.size()), second.data());
  std::abort();
}

}  // namespace attncheck::fuzz
