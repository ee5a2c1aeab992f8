/// \file shard.h
/// \brief The units of work of a run and how they are split across shards.
///
/// A run is the list of (property × dtype) units in a fixed order: properties in registration
/// order (all_properties()), each with the requested dtypes in the order given. Shard i of n runs
/// the units whose index % n == i, so the n shards of one run partition it exactly, whatever n is,
/// and every unit keeps the index it has in the unsplit run (which is how `attncheck merge`
/// checks that nothing is lost or run twice). The split follows GoogleTest's sharding protocol:
/// --shard i/n, or GTEST_TOTAL_SHARDS and GTEST_SHARD_INDEX in the environment.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace attncheck {

struct Shard {
  int index = 0;  ///< 0 <= index < count
  int count = 1;  ///< >= 1
  bool operator==(const Shard&) const = default;
};

/// A command-line or environment value that cannot be used; the message names it.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses "i/n" (0-based i). Throws UsageError for anything else or i >= n.
Shard parse_shard(std::string_view text);

/// The GoogleTest sharding variables, given their values (nullptr when unset): nullopt when
/// neither is set; throws UsageError when only one is set or either is malformed.
std::optional<Shard> shard_from_gtest_variables(const char* total_shards, const char* shard_index);

inline bool in_shard(std::size_t unit_index, const Shard& shard) {
  return unit_index % static_cast<std::size_t>(shard.count) == static_cast<std::size_t>(shard.index);
}

/// "i/n" as the user wrote it.
std::string shard_name(const Shard& shard);

struct PlannedUnit {
  std::size_t index = 0;  ///< position in the unsplit run
  std::string property;
  std::string dtype;
  bool operator==(const PlannedUnit&) const = default;
};

/// Every unit of an unsplit run: each property whose name matches `property_regex` (a
/// std::regex search; empty = all), in the order given, times each dtype in the order given,
/// leaving out the pairs `applies` (when given) rejects. Throws UsageError for an invalid regex.
std::vector<PlannedUnit> plan_units(const std::vector<std::string>& property_names, const std::string& property_regex,
                                    const std::vector<std::string>& dtypes,
                                    const std::function<bool(const std::string& property, const std::string& dtype)>& applies = {});

/// The units of `plan` that belong to `shard`, in order.
std::vector<PlannedUnit> select_shard(const std::vector<PlannedUnit>& plan, const Shard& shard);

}  // namespace attncheck
