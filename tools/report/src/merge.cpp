// Merging the JSON reports of the shards of one run back into the report of the unsplit run.
// Every check here guards against a CI mistake that would otherwise pass silently: a shard run
// twice, one forgotten, or reports of two different runs mixed together.
#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "attncheck/report.h"

namespace attncheck {

namespace {

// The fields that must agree for reports to be parts of one run; started_at, hostname, seconds
// and the backend's path may differ between the machines that ran the shards.
void require_same_run(const ShardReport& first, const ShardReport& other) {
  const RunMetadata& a = first.report.run;
  const RunMetadata& b = other.report.run;
  auto check = [&](std::string_view field, const auto& x, const auto& y) {
    if (x != y)
      throw ReportError(fmt::format("{} and {} are not shards of one run: run.{} differs ({} vs {})", first.source,
                                    other.source, field, x, y));
  };
  check("attncheck_version", a.attncheck_version, b.attncheck_version);
  check("backend", a.backend, b.backend);
  check("profile", a.profile, b.profile);
  check("cases", a.cases, b.cases);
  check("max_size", a.max_size, b.max_size);
  check("seed", a.seed, b.seed);
  check("property_filter", a.property_filter, b.property_filter);
  check("problem_filter", a.problem_filter, b.problem_filter);
  check("dtypes", fmt::format("{}", fmt::join(a.dtypes, ",")), fmt::format("{}", fmt::join(b.dtypes, ",")));
  check("reproduce", a.reproduce, b.reproduce);
  check("shard.count", a.shard.count, b.shard.count);
  check("total_units", a.total_units, b.total_units);
}

}  // namespace

RunReport merge_reports(const std::vector<ShardReport>& shards, bool allow_missing) {
  if (shards.empty()) throw ReportError("merge: no shard reports given");
  for (const ShardReport& s : shards) {
    if (s.report.run.merged_shards > 0)
      throw ReportError(fmt::format("{}: already a merged report (of {} shards); merge the shard reports themselves",
                                    s.source, s.report.run.merged_shards));
    require_same_run(shards.front(), s);
  }

  const int count = shards.front().report.run.shard.count;
  const std::size_t total = shards.front().report.run.total_units;
  std::vector<const ShardReport*> by_shard(static_cast<std::size_t>(count), nullptr);
  std::vector<const ShardReport*> by_unit(total, nullptr);
  for (const ShardReport& s : shards) {
    const Shard& shard = s.report.run.shard;
    const ShardReport*& slot = by_shard[static_cast<std::size_t>(shard.index)];
    if (slot != nullptr)
      throw ReportError(
          fmt::format("{} and {} overlap: both are shard {}", slot->source, s.source, shard_name(shard)));
    slot = &s;
    for (const UnitResult& u : s.report.units) {
      if (u.index >= total)
        throw ReportError(fmt::format("{}: unit {} {} has index {}, but the run has {} units", s.source, u.property,
                                      u.dtype, u.index, total));
      if (!in_shard(u.index, shard))
        throw ReportError(fmt::format("{}: unit {} {} (index {}) does not belong to shard {}", s.source, u.property,
                                      u.dtype, u.index, shard_name(shard)));
      if (by_unit[u.index] != nullptr)
        throw ReportError(fmt::format("{} and {} overlap: both hold unit {} {} (index {})", by_unit[u.index]->source,
                                      s.source, u.property, u.dtype, u.index));
      by_unit[u.index] = &s;
    }
  }

  if (!allow_missing) {
    std::vector<std::string> missing_shards;
    for (int i = 0; i < count; ++i)
      if (by_shard[static_cast<std::size_t>(i)] == nullptr) missing_shards.push_back(shard_name({i, count}));
    if (!missing_shards.empty())
      throw ReportError(fmt::format("merge: no report for shard {} (pass every shard's report, or --allow-missing)",
                                    fmt::join(missing_shards, ", ")));
    for (std::size_t i = 0; i < total; ++i)
      if (by_unit[i] == nullptr)
        throw ReportError(fmt::format("merge: unit index {} of {} is in no report (shard {} ran only part of its units)",
                                      i, total, shard_name({static_cast<int>(i % static_cast<std::size_t>(count)), count})));
  }

  // The lowest shard's metadata stands for the run; the rest is what differs between machines.
  const ShardReport* first = nullptr;
  for (const ShardReport* s : by_shard)
    if (s != nullptr && first == nullptr) first = s;
  RunReport merged;
  merged.run = first->report.run;
  merged.run.shard = Shard{0, 1};
  merged.run.merged_shards = static_cast<int>(shards.size());
  merged.run.seconds = 0;
  std::set<std::string> hosts;
  for (const ShardReport& s : shards) {
    merged.run.seconds += s.report.run.seconds;
    merged.run.started_at = std::min(merged.run.started_at, s.report.run.started_at);
    hosts.insert(s.report.run.hostname);
    merged.units.insert(merged.units.end(), s.report.units.begin(), s.report.units.end());
  }
  merged.run.hostname = fmt::format("{}", fmt::join(hosts, ","));
  std::sort(merged.units.begin(), merged.units.end(),
            [](const UnitResult& a, const UnitResult& b) { return a.index < b.index; });
  return merged;
}

}  // namespace attncheck
