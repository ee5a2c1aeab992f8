#include "attncheck/shard.h"

#include <charconv>
#include <regex>

#include <fmt/format.h>

namespace attncheck {

namespace {

// A whole non-negative decimal integer, nothing before or after it.
std::optional<int> parse_count(std::string_view text) {
  int value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < 0) return std::nullopt;
  return value;
}

}  // namespace

Shard parse_shard(std::string_view text) {
  const auto slash = text.find('/');
  const auto index = slash == std::string_view::npos ? std::nullopt : parse_count(text.substr(0, slash));
  const auto count = slash == std::string_view::npos ? std::nullopt : parse_count(text.substr(slash + 1));
  if (!index || !count || *count < 1)
    throw UsageError(fmt::format("--shard '{}': expected i/n with 0 <= i < n, e.g. 0/4", text));
  if (*index >= *count)
    throw UsageError(fmt::format("--shard '{}': the shard index {} must be below the shard count {} (indices are 0-based)",
                                 text, *index, *count));
  return Shard{*index, *count};
}

std::optional<Shard> shard_from_gtest_variables(const char* total_shards, const char* shard_index) {
  if (total_shards == nullptr && shard_index == nullptr) return std::nullopt;
  if (total_shards == nullptr || shard_index == nullptr)
    throw UsageError(fmt::format("GTEST_TOTAL_SHARDS and GTEST_SHARD_INDEX must be set together (only {} is set)",
                                 total_shards != nullptr ? "GTEST_TOTAL_SHARDS" : "GTEST_SHARD_INDEX"));
  const auto count = parse_count(total_shards);
  const auto index = parse_count(shard_index);
  if (!count || *count < 1) throw UsageError(fmt::format("GTEST_TOTAL_SHARDS='{}': expected a positive integer", total_shards));
  if (!index || *index >= *count)
    throw UsageError(fmt::format("GTEST_SHARD_INDEX='{}': expected an integer in [0, {})", shard_index, *count));
  return Shard{*index, *count};
}

std::string shard_name(const Shard& shard) { return fmt::format("{}/{}", shard.index, shard.count); }

std::vector<PlannedUnit> plan_units(const std::vector<std::string>& property_names, const std::string& property_regex,
                                    const std::vector<std::string>& dtypes,
                                    const std::function<bool(const std::string& property, const std::string& dtype)>& applies) {
  std::optional<std::regex> filter;
  if (!property_regex.empty()) {
    try {
      filter.emplace(property_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw UsageError(fmt::format("--property '{}': not a valid regular expression ({})", property_regex, e.what()));
    }
  }
  std::vector<PlannedUnit> plan;
  for (const std::string& property : property_names) {
    if (filter && !std::regex_search(property, *filter)) continue;
    for (const std::string& dtype : dtypes)
      if (!applies || applies(property, dtype)) plan.push_back({plan.size(), property, dtype});
  }
  return plan;
}

std::vector<PlannedUnit> select_shard(const std::vector<PlannedUnit>& plan, const Shard& shard) {
  std::vector<PlannedUnit> selected;
  for (const PlannedUnit& unit : plan)
    if (in_shard(unit.index, shard)) selected.push_back(unit);
  return selected;
}

}  // namespace attncheck
