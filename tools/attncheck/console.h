/// \file console.h
/// \brief What a person or a CI log sees: per-unit lines, a transient progress line on a
/// terminal only (CI logs get plain lines, no carriage returns), colour on a terminal unless
/// NO_COLOR, and the final summary with everything needed to act on a failure.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "attncheck/report.h"

namespace attncheck::cli {

class Console {
 public:
  Console(std::ostream& out, bool tty, bool color) : out_(out), tty_(tty), color_(color) {}

  /// Replaces the progress line (terminal only; a no-op in CI).
  void progress(std::string_view text);
  /// A permanent line, after clearing any progress line.
  void line(std::string_view text);

  /// "[ 3/19] PASS  reference-agreement f32  30 cases  worst r=0.213  0.41 s" (+ the reason).
  void unit_line(const UnitResult& unit, std::size_t position, std::size_t count);
  /// The property × dtype table, every failure's verdict, shrunk case and reproduce command, and
  /// the totals.
  void summary(const RunReport& report);
  /// The dtypes whose every unit was skipped because the backend declines those inputs:
  /// one line for them instead of a line per unit.
  static std::vector<std::string> declined_dtypes(const RunReport& report);

 private:
  std::string label(UnitStatus status) const;                       ///< "PASS", coloured
  std::string paint(std::string_view text, UnitStatus status) const;  ///< in the status colour

  std::ostream& out_;
  bool tty_;
  bool color_;
  bool progress_shown_ = false;
};

}  // namespace attncheck::cli
