// libFuzzer target: read_toy_case on arbitrary bytes.
//
// read_toy_case takes a path, so each input is written to an in-memory file (memfd) and read back
// through /proc/self/fd: no disk traffic, nothing left behind, and the reader is exercised exactly
// as the tests call it. It may refuse an input with FixtureError and nothing else.
//
// A toy case it accepts is what the reference is checked against first, so the harness then runs
// the reference on its inputs, which may refuse them with ProblemError (validate_inputs) and
// nothing else. The work is bounded by the input: every tensor's shape must match the problem.

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "attncheck/fixture.h"
#include "attncheck/reference.h"
#include "attncheck/toy_case.h"

namespace {

[[noreturn]] void harness_error(const char* what) {
  std::fprintf(stderr, "fuzz_toy_json: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

// One memfd for the whole run, rewritten per input: creating a file per input would dominate the
// time of a small parse.
int toy_file() {
  static const int fd = [] {
    const int created = ::memfd_create("attncheck-toy-case.json", MFD_CLOEXEC);
    if (created < 0) harness_error("memfd_create");
    return created;
  }();
  return fd;
}

void write_input(int fd, const std::uint8_t* data, std::size_t size) {
  if (::ftruncate(fd, 0) != 0) harness_error("ftruncate");
  std::size_t written = 0;
  while (written < size) {
    const ssize_t n = ::pwrite(fd, data + written, size - written, static_cast<off_t>(written));
    if (n < 0) {
      if (errno == EINTR) continue;
      harness_error("pwrite");
    }
    written += static_cast<std::size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = toy_file();
  write_input(fd, data, size);
  std::optional<attncheck::ToyCase> toy;
  try {
    toy = attncheck::read_toy_case("/proc/self/fd/" + std::to_string(fd));
  } catch (const attncheck::FixtureError&) {
    return 0;  // the documented refusal
  }
  try {
    // One thread: the toy problems are tiny, and thread start-up would dominate every run.
    attncheck::ReferenceOptions options;
    options.threads = 1;
    options.row_statistics = true;
    (void)attncheck::reference_attention(toy->problem, toy->inputs(), options);
  } catch (const attncheck::ProblemError&) {
  }
  return 0;
}
