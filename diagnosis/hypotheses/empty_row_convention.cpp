// The empty-row convention (problem.h, EmptyRowConvention): a row with no allowed key is 0/0,
// and what a kernel writes there is its declaration. The bug: the other convention, exactly in
// those rows, with every other row right.
#include <cmath>

#include "../src/alternatives.h"

namespace attncheck::diagnosis {
namespace {

// Holds iff every element of an empty row satisfies `in_empty_row`, at least one empty row
// exists, and every other element is within τ of the reference.
std::optional<std::string> empty_rows_written(const FailureEvidence& e, EmptyRowConvention declared,
                                              bool (*in_empty_row)(double), const std::string& statement) {
  if (!has_output(e) || e.profile.empty_row != declared) return std::nullopt;
  const HostTensor& allowed = e.reference.stats->allowed_keys;
  const Shape4& s = e.run_out.shape;
  bool any_empty = false;
  for (std::int64_t b = 0; b < s[0]; ++b)
    for (std::int64_t h = 0; h < s[1]; ++h)
      for (std::int64_t i = 0; i < s[2]; ++i) {
        const bool empty = allowed(0, b, h, i) == 0;
        any_empty = any_empty || empty;
        for (std::int64_t d = 0; d < s[3]; ++d) {
          const double x = e.run_out(b, h, i, d);
          if (empty ? !in_empty_row(x) : !(std::fabs(x - e.reference.out(b, h, i, d)) <= e.tau(b, h, i, d)))
            return std::nullopt;
        }
      }
  if (!any_empty) return std::nullopt;
  return statement;
}

}  // namespace

std::vector<Hypothesis> empty_row_convention_hypotheses() {
  const std::string nan_statement = "rows with no allowed key give NaN while zeros are declared";
  const std::string zeros_statement = "rows with no allowed key give zeros while NaN is declared";
  return {
      {"empty-row-nan", nan_statement,
       [nan_statement](const FailureEvidence& e) {
         return empty_rows_written(e, EmptyRowConvention::Zeros, [](double x) { return std::isnan(x); }, nan_statement);
       }},
      {"empty-row-zeros", zeros_statement,
       [zeros_statement](const FailureEvidence& e) {
         return empty_rows_written(e, EmptyRowConvention::NaN, [](double x) { return x == 0.0; }, zeros_statement);
       }},
  };
}

}  // namespace attncheck::diagnosis
