#include "save_failures.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "attncheck/regression.h"
#include "attncheck/shard.h"

namespace attncheck::cli {
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

}  // namespace

FailureSaver::FailureSaver(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw UsageError(fmt::format("--save-failures '{}': cannot create the directory: {}", dir, ec.message()));
  if (!fs::is_directory(dir_, ec)) throw UsageError(fmt::format("--save-failures '{}': not a directory", dir));
  // Checked now so that an hour of checking never ends in a directory that cannot take the files.
  if (access(dir_.c_str(), W_OK | X_OK) != 0)
    throw UsageError(fmt::format("--save-failures '{}': cannot write there: {}", dir, std::strerror(errno)));
}

std::vector<std::string> FailureSaver::save(const PropertyOutcome& outcome, const std::string& backend_spec) {
  std::vector<std::string> lines;
  if (outcome.status == OutcomeStatus::Failed && outcome.failures.empty())
    lines.push_back(fmt::format("  not saved: {} {}: the failure came with no finding (no evidence of the inputs)",
                                outcome.property, dtype_name(outcome.dtype)));
  int n = 0;
  for (const FailureFinding& finding : outcome.failures) {
    ++n;
    if (auto reason = why_not_saved(finding)) {
      lines.push_back(fmt::format("  not saved: {} {} finding {} ({}): {}", outcome.property, dtype_name(outcome.dtype), n,
                                  failure_kind_name(finding.kind), *reason));
      continue;
    }
    try {
      const Fixture fixture = regression_fixture(outcome, finding, backend_spec);
      const std::vector<std::byte> bytes = encode_fixture(fixture);
      // Never overwrite: the same bytes are this finding saved before; other bytes are another
      // finding (another backend, seed or release), which keeps its file.
      int number = n;
      fs::path path = dir_ / regression_file_name(outcome.property, outcome.dtype, number);
      while (fs::exists(path) && file_bytes(path) != bytes)
        path = dir_ / regression_file_name(outcome.property, outcome.dtype, ++number);
      if (fs::exists(path)) {
        ++unchanged_;
        lines.push_back(fmt::format("  unchanged: {} (already holds this {} finding)", path.string(), failure_kind_name(finding.kind)));
        continue;
      }
      write_fixture(path, fixture);
      ++written_;
      lines.push_back(fmt::format("  saved: {} ({}: {})", path.string(), failure_kind_name(finding.kind), finding.minimal_case));
    } catch (const std::exception& e) {  // FixtureError, or the filesystem's
      errors_.push_back(fmt::format("{} {} finding {}: {}", outcome.property, dtype_name(outcome.dtype), n, e.what()));
      lines.push_back(fmt::format("  could not save {} {} finding {}: {}", outcome.property, dtype_name(outcome.dtype), n, e.what()));
    }
  }
  return lines;
}

}  // namespace attncheck::cli
