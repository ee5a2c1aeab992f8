#include "attncheck/evidence.h"

#include <array>
#include <utility>

namespace attncheck {
namespace {

constexpr std::array<std::pair<FailureKind, std::string_view>, 10> kKindNames = {{
    {FailureKind::Output, "output"},
    {FailureKind::Lse, "lse"},
    {FailureKind::NanPlacement, "nan-placement"},
    {FailureKind::Probe, "probe"},
    {FailureKind::Memory, "memory"},
    {FailureKind::Crash, "crash"},
    {FailureKind::Timeout, "timeout"},
    {FailureKind::Status, "status"},
    {FailureKind::Accuracy, "accuracy"},
    {FailureKind::Gradient, "gradient"},
}};

}  // namespace

std::string_view failure_kind_name(FailureKind kind) {
  for (const auto& [k, name] : kKindNames)
    if (k == kind) return name;
  return "?";
}

std::optional<FailureKind> parse_failure_kind(std::string_view name) {
  for (const auto& [k, n] : kKindNames)
    if (n == name) return k;
  return std::nullopt;
}

}  // namespace attncheck
