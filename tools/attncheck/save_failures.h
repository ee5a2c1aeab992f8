/// \file save_failures.h
/// \brief `attncheck run --save-failures DIR`: each finding's minimal failing case written as a
/// regression fixture (fixtures/include/attncheck/regression.h) for `attncheck verify`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "attncheck/engine.h"

namespace attncheck::cli {

class FailureSaver {
 public:
  /// Creates `dir` (and its parents) when missing and checks that it can be written, before the
  /// run starts: UsageError "--save-failures 'DIR': <what>: <errno text>" otherwise.
  explicit FailureSaver(const std::string& dir);

  /// Writes every finding of `outcome` that why_not_saved() admits as
  /// "<property>-<dtype>-<n>.safetensors", n counting the unit's findings from 1. A file of that
  /// name holding the same bytes is left as it is (a rerun of the same run); one holding other
  /// bytes is never overwritten: the fixture takes the next free n. Returns one line per finding
  /// for the console: what was written, left unchanged, not saved (and why), or could not be written.
  std::vector<std::string> save(const PropertyOutcome& outcome, const std::string& backend_spec);

  int written() const { return written_; }
  int unchanged() const { return unchanged_; }
  /// Files that could not be written, each "<path>: <why>"; the run ends in a usage error then.
  const std::vector<std::string>& errors() const { return errors_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  int written_ = 0;
  int unchanged_ = 0;
  std::vector<std::string> errors_;
};

}  // namespace attncheck::cli
