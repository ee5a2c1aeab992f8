/// \file commands.h
/// \brief The subcommands of `attncheck`, separated from argument parsing (main.cpp) so that
/// each takes plain options and an environment snapshot and returns an exit code.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace attncheck::cli {

/// The exit codes are the CI contract (tools/README.md): 0 all passed (skips allowed),
/// 1 a conformance failure, 2 a usage or environment error.
enum ExitCode : int { kExitPassed = 0, kExitFailed = 1, kExitUsage = 2 };

/// Seed of a run without --seed or ATTNCHECK_SEED: fixed, so that two runs of one build check the
/// same cases and a CI failure reproduces from the log alone.
inline constexpr std::uint64_t kDefaultSeed = 0x5EED;

/// What the process was started with beyond its arguments, read once in main() so that the
/// commands read no global state.
struct Environment {
  std::optional<std::string> gtest_total_shards;
  std::optional<std::string> gtest_shard_index;
  std::optional<std::string> gtest_shard_status_file;  ///< touched to say "this binary shards", as gtest does
  std::optional<std::string> seed;                     ///< ATTNCHECK_SEED
  bool stdout_is_tty = false;
  bool no_color = false;                               ///< NO_COLOR set and not empty
  std::string version;
};

/// Which pass of attention a command checks or times (`--direction forward|backward|both`).
enum class Direction : std::uint8_t { Forward, Backward, Both };
/// "forward", "backward", "both"; the inverse accepts exactly these.
std::string_view direction_name(Direction direction);
std::optional<Direction> parse_direction(std::string_view text);
inline bool includes_forward(Direction d) { return d != Direction::Backward; }
inline bool includes_backward(Direction d) { return d != Direction::Forward; }

struct RunOptions {
  std::string backend;
  /// Properties of this direction (PropertyDef::needs_backward); default both: everything.
  Direction direction = Direction::Both;
  std::string profile = "standard";
  /// small, medium, long or all: the size mix of size-agnostic properties; unset: the profile's.
  std::optional<std::string> size_class;
  std::string property_regex;
  std::string problem_regex;
  std::string dtypes = "f32,f16,bf16";
  std::optional<std::uint64_t> seed;
  std::optional<int> cases;
  std::optional<std::string> shard;
  std::string junit_path, json_path, markdown_path, html_path;
  std::string reproduce;
  /// A case text (AttentionCase::describe(), as a failure prints it): every property runs on this
  /// case only (RunSettings::pinned_case).
  std::string pinned_case;
  /// At most this many distinct failures per unit (RunSettings::max_findings).
  int max_findings = 3;
  bool no_simplify = false;
  /// --save-failures: the directory each finding's minimal failing case is written to as a
  /// regression fixture (save_failures.h); empty: none is written.
  std::string save_failures_dir;
  /// Expectation file (attncheck/expectations.h): the exit status says whether the run matches it.
  std::string expect_path;
  bool require_backend = false;
  /// Each backend call in a forked child (a crash or hang fails its case; the run goes on).
  /// Unset: on for plug-ins loaded by path, off for built-ins.
  std::optional<bool> isolate;
  double timeout_seconds = 30;
  /// The accuracy verdict (numerics/README.md §4.5): unset, off; 0, reported; F > 0, a case whose
  /// error exceeds F times the fp32 baseline kernel's fails as an accuracy failure.
  std::optional<double> accuracy_factor;
};

struct GenerateOptions {
  std::string suite = "golden";
  std::string out_dir;
  std::uint64_t seed = 2026;
  std::string reference_isa = "auto";  ///< which build of the reference computes (same bytes whichever)
};

struct VerifyOptions {
  std::string backend;
  /// Which of a fixture's passes are judged: forward (out, lse), backward (dq, dk, dv of a format
  /// version 4 file or a toy case with a backward section), or both (default).
  Direction direction = Direction::Both;
  std::vector<std::string> paths;  ///< fixture files or directories of them
  std::string html_path;           ///< --html: one unit per fixture (and dtype, for a toy case)
};

struct ReferenceCommandOptions {
  std::string input;
  std::string output;
};

struct BenchOptions {
  std::vector<std::string> backends;  ///< timed in this order; ratios are against the first
  std::vector<std::string> shapes;  ///< "B,H,L,D" each; empty: the default set
  std::string dtype = "f32";  ///< comma-separated
  int repeats = 3;
  /// forward (default) times forward; backward times backward, each on cases whose gradients it
  /// has just passed; both times the two side by side. The reference is timed in the same passes.
  Direction direction = Direction::Forward;
  std::string json_path;  ///< --json: every row as JSON (tools/README.md)
};

/// `attncheck characterize`: the grid of Lq × Lk × head dim × value class (tools/README.md).
struct CharacterizeOptions {
  std::string backend;
  std::string dtype = "f16";
  std::vector<std::int64_t> q_lengths = {1, 2, 128};
  std::vector<std::int64_t> k_lengths = {64, 512, 4096, 8192};
  std::vector<std::int64_t> head_dims = {64, 128};
  /// FlashAttention's rule (numerics/README.md §4.5); 0: report the ratios only.
  double accuracy_factor = 2;
  std::string json_path;
  bool ladder = true;  ///< the profile ladder section
  bool grid = true;    ///< the accuracy grid section
};

struct MergeOptions {
  std::string output;
  std::vector<std::string> inputs;
  std::string junit_path, markdown_path;
  bool allow_missing = false;
};

int run_command(const RunOptions& options, const Environment& env, std::ostream& out, std::ostream& err);
/// `what`: backends | properties | profiles. `plugins`: extra plug-in paths to describe.
int list_command(const std::string& what, const std::vector<std::string>& plugins, std::ostream& out, std::ostream& err);
int merge_command(const MergeOptions& options, const Environment& env, std::ostream& out, std::ostream& err);
int generate_command(const GenerateOptions& options, std::ostream& out, std::ostream& err);
int verify_command(const VerifyOptions& options, std::ostream& out, std::ostream& err);
int reference_command(const ReferenceCommandOptions& options, std::ostream& out, std::ostream& err);
int bench_command(const BenchOptions& options, std::ostream& out, std::ostream& err);
int characterize_command(const CharacterizeOptions& options, std::ostream& out, std::ostream& err);

}  // namespace attncheck::cli
