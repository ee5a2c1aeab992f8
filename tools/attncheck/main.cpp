// attncheck: checks an attention kernel against the suite's properties from the command line.
//
//   attncheck run --backend NAME|PATH [...]   run the properties, gate CI with the exit code
//   attncheck merge OUT.json IN.json...       combine the JSON reports of shards
//   attncheck list backends|properties|profiles
//   attncheck generate / verify / reference      golden fixtures
//   attncheck bench --backend B                  speed beside the reference, on validated cases
//   attncheck characterize --backend B           conformance and accuracy over a grid of sizes
//
// Argument parsing lives here; each subcommand is a function of plain options (commands.h).
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"

#ifndef ATTNCHECK_VERSION
#error "ATTNCHECK_VERSION must be defined by the build (tools/attncheck/CMakeLists.txt)"
#endif

namespace {

std::optional<std::string> environment_variable(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::nullopt : std::optional<std::string>(value);
}

constexpr const char* kRunExamples = R"(
Examples:
  attncheck run --backend cpu-flash
  attncheck run --backend ./build/libmykernel.so --profile quick --junit attncheck.xml
  attncheck run --backend cpu-naive --property 'causal|padding' --dtype f16,bf16 --seed 7
  attncheck run --backend cuda-flash --shard 0/4 --json shard0.json --require-backend
  attncheck run --backend mutant-window-exclusive --profile quick --html report.html
  attncheck run --backend mutant-gqa-modulo --property '^gqa-equivalence$' --dtype f32 \
                --seed 24301 --reproduce '<string printed by a failing run>'
  attncheck run --backend mutant-window-exclusive --property '^reference-agreement$' --dtype f32 \
                --case 'B=1 Hq=1 Hkv=1 Lq=1 Lk=2 Dk=4 Dv=4 window=0,0 dtype=f32 values=gaussian seed=0'

Failures: each failing unit reports every distinct failure it found (up to
--max-findings), each with a 1-minimal case (removing any option or shrinking
any dimension makes it pass), the diagnosis of the likely bug (diagnosis/README.md)
and a --case command that replays it.

Accuracy: --accuracy-factor F also compares each case's error with an fp32
baseline kernel's on the same inputs; a ratio above F fails the case as an
accuracy failure (0 reports the ratios; off by default).
Exit status: 0 all units passed (skips allowed), 1 a conformance or accuracy failure,
2 a usage or environment error (unknown backend, load error, bad regex,
unwritable report). A run in which every unit was skipped exits 0 unless
--require-backend is given (then 2).
With --expect FILE the exit status is 0 when every unit matches the file
(expected failures included) and 1 when one differs, e.g.
  attncheck run --backend ./attncheck-torch-sdpa.so --profile quick --expect torch-sdpa.json
Regression fixtures: --save-failures DIR writes each finding's minimal failing
case as DIR/<property>-<dtype>-<n>.safetensors (never overwriting a file that
holds another finding), to be kept and checked with
  attncheck verify --backend ./build/libmykernel.so DIR
Sharding: --shard i/n, or GTEST_TOTAL_SHARDS and GTEST_SHARD_INDEX, runs the
units whose index % n == i. Seed: --seed, else ATTNCHECK_SEED, else 24301.)";

constexpr const char* kMergeExamples = R"(
Examples:
  attncheck merge all.json shard0.json shard1.json shard2.json shard3.json
  attncheck merge all.json shard*.json --junit all.xml --markdown "$GITHUB_STEP_SUMMARY"

Fails (exit 2) when the reports are not the shards of one run (backend, seed,
profile, filters, dtypes or shard count differ), when two cover the same shard
or unit, or when a shard is missing (unless --allow-missing). Otherwise exits
like `run`: 1 if a merged unit failed, else 0.)";

constexpr const char* kListExamples = R"(
Examples:
  attncheck list backends
  attncheck list backends ./build/libmykernel.so
  attncheck list properties
  attncheck list profiles)";

constexpr const char* kGenerateExamples = R"(
Examples:
  attncheck generate --suite golden --out fixtures/golden
  attncheck generate --suite golden --out /tmp/golden --seed 7

The same suite and seed always give byte-identical files; each file is
written to a temporary name and renamed, so an interrupted run leaves no
half-written fixture.)";

constexpr const char* kVerifyExamples = R"(
Examples:
  attncheck verify --backend cpu-flash fixtures/golden
  attncheck verify --backend cpu-flash fixtures/toy              (hand-derived toy cases, every dtype)
  attncheck verify --backend ./libmykernel.so regression/case_1234.safetensors
  attncheck verify --backend cpu-flash fixtures/golden --html verify.html
  attncheck verify --backend cpu-naive --direction backward fixtures/golden

Each fixture is judged with the tolerance from the backend's declared profile;
a backward fixture (dq, dk, dv) also on the backend's backward pass, unless
--direction forward;
a regression fixture (run --save-failures) also replays its recorded property
pinned to its case.
Exit status: 0 every supported fixture passed, 1 a fixture failed, 2 a file
could not be read (truncated, corrupt, checksum mismatch) or the backend
could not be loaded.)";

constexpr const char* kReferenceExamples = R"(
Examples:
  attncheck reference failing_inputs.safetensors -o regression/case_1234.safetensors

The input holds q, k, v (and mask, key_lengths, or the layer's tensors) and
the problem in its metadata (fixtures/README.md); out and lse are computed by
the double-precision reference and written beside them.)";

constexpr const char* kBenchExamples = R"(
Examples:
  attncheck bench --backend cpu-flash
  attncheck bench --backend cpu-flash --shape 1,8,2048,64 --shape 1,8,2048,128 --dtype f16
  attncheck bench --backend cpu-flash --backend ./attncheck-torch-sdpa.so --dtype f32,bf16 \
                  --shape 1,8,2048,64 --shape 1,8,4096,128
  attncheck bench --backend cpu-naive --direction both --shape 1,4,256,64 --json bench.json

Each shape is first checked against the reference (a wrong kernel has no
speed); then the best of --repeats runs is reported in GF/s
(4·B·H·L²·D flop; the backward's 2.5 times that) beside the reference's time.
--direction backward or both times Backend::backward too, on cases whose
gradients have just passed.)";

constexpr const char* kCharacterizeExamples = R"(
Examples:
  attncheck characterize --backend cpu-flash --dtype f16
  attncheck characterize --backend cpu-naive --dtype bf16 --lq 1 --lk 8192 --json grid.json
  attncheck characterize --backend ./libmykernel.so --accuracy-factor 0      (report only)
  attncheck characterize --backend ./libmykernel.so --dtype f32 --only ladder
Two sections. The profile ladder runs 60 healthy cases once each and judges
the outputs under candidate profiles, tightest first (fp32; fast exp; fp16 P;
bf16 P; fp16 operands and P.V sums; fp16; bf16), and names the tightest the
kernel behaves like and the next tighter one it breaks. The accuracy grid
judges each case (Lq x Lk x head dim x values: diffuse, peaked, constant-v,
non-negative-v) for conformance to the declared profile and for accuracy
beside an fp32 baseline kernel on the same inputs. Exit status: 0 every case
passed, 1 a case failed its declared profile (either section) or the
accuracy factor (grid), 2 a usage error.)";

constexpr const char* kMainExamples = R"(
Examples:
  attncheck list backends
  attncheck run --backend cpu-flash --profile quick --junit attncheck.xml
  attncheck run --help

Documentation: tools/README.md in the attncheck sources.)";

// CLI11's PositiveNumber and NonNegativeNumber name their range as 0 to 1.8e308 in full; these
// say what is wanted in words.
CLI::Validator number_check(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value) || !std::isfinite(value) || value < 0 || (!zero_allowed && value == 0))
          return fmt::format("'{}' is not a {} number", text, zero_allowed ? "non-negative" : "positive");
        return {};
      },
      zero_allowed ? "NUMBER>=0" : "NUMBER>0");
}

// `--direction forward|backward|both` on `subcommand`, into `target` (which holds the default).
void add_direction_option(CLI::App* subcommand, attncheck::cli::Direction& target, const std::string& help) {
  using attncheck::cli::parse_direction;
  subcommand
      ->add_option_function<std::string>(
          "--direction", [&target](const std::string& text) { target = *parse_direction(text); }, help)
      ->check(CLI::IsMember({"forward", "backward", "both"}))
      ->default_str(std::string(attncheck::cli::direction_name(target)));
}

}  // namespace

namespace attncheck::cli {

std::string_view direction_name(Direction direction) {
  switch (direction) {
    case Direction::Forward: return "forward";
    case Direction::Backward: return "backward";
    case Direction::Both: return "both";
  }
  return "?";
}

std::optional<Direction> parse_direction(std::string_view text) {
  for (Direction d : {Direction::Forward, Direction::Backward, Direction::Both})
    if (direction_name(d) == text) return d;
  return std::nullopt;
}

}  // namespace attncheck::cli

int main(int argc, char** argv) {
  using namespace attncheck::cli;
  Environment env;
  env.gtest_total_shards = environment_variable("GTEST_TOTAL_SHARDS");
  env.gtest_shard_index = environment_variable("GTEST_SHARD_INDEX");
  env.gtest_shard_status_file = environment_variable("GTEST_SHARD_STATUS_FILE");
  env.seed = environment_variable("ATTNCHECK_SEED");
  env.stdout_is_tty = isatty(STDOUT_FILENO) == 1;
  // https://no-color.org: present and not empty disables colour.
  const auto no_color = environment_variable("NO_COLOR");
  env.no_color = no_color && !no_color->empty();
  env.version = ATTNCHECK_VERSION;

  CLI::App app{"attncheck: conformance and property-based tests for attention kernels", "attncheck"};
  app.set_version_flag("--version", std::string("attncheck ") + ATTNCHECK_VERSION);
  app.require_subcommand(1);
  app.footer(kMainExamples);

  RunOptions run;
  std::uint64_t seed = 0;
  int cases = 0;
  std::string shard;
  CLI::App* run_app = app.add_subcommand("run", "Run the properties against one backend");
  run_app->footer(kRunExamples);
  run_app->add_option("--backend,-b", run.backend, "Built-in backend name or plug-in library path")->required();
  run_app->add_option("--profile", run.profile, "Effort: quick, standard or exhaustive")
      ->check(CLI::IsMember({"quick", "standard", "exhaustive"}))
      ->capture_default_str();
  run_app->add_option("--size-class", run.size_class,
                      "Problem sizes of size-agnostic properties: small (Lq, Lk <= 96), medium (60 % at 64..513), "
                      "long (60 % decode to Lk 8192, or Lq 128 against 1024 keys) or all (a third each); default: the profile's mix")
      ->check(CLI::IsMember({"small", "medium", "long", "all"}));
  run_app->add_option("--property,-p", run.property_regex, "Only properties whose name matches this regex (search)");
  run_app->add_option("--problem", run.problem_regex,
                      "Only cases whose description (AttentionCase::describe()) matches this regex");
  run_app->add_option("--dtype", run.dtypes, "Comma-separated input dtypes")->capture_default_str();
  add_direction_option(run_app, run.direction,
                       "Properties of the forward pass, of the backward pass (backends with one), or both");
  CLI::Option* seed_option = run_app->add_option("--seed", seed, "Random seed (default: ATTNCHECK_SEED, else 24301)");
  CLI::Option* cases_option = run_app->add_option("--cases", cases, "Cases per unit, overriding the profile");
  CLI::Option* shard_option = run_app->add_option("--shard", shard, "Run shard i of n (0-based): i/n");
  run_app->add_option("--junit", run.junit_path, "Write a JUnit XML report");
  run_app->add_option("--json", run.json_path, "Write a JSON report (tools/README.md documents the schema)");
  run_app->add_option("--markdown", run.markdown_path, "Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)");
  run_app->add_option("--html", run.html_path,
                      "Write a self-contained HTML report: every failure with its minimal case, diagnosis, reproduce "
                      "command and heatmaps of r = |O - O_ref| / tau, and the coverage grid");
  run_app->add_option("--reproduce", run.reproduce, "Replay a failure: the reproduce string a failing run printed");
  run_app->add_option("--case", run.pinned_case,
                      "Run the properties on this case only (the text a failure prints as its minimal case); the "
                      "property's other choices are drawn 10 times from the seed");
  run_app->add_option("--max-findings", run.max_findings,
                      "Distinct failures to look for per unit, each with the earlier ones' causes excluded")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  run_app->add_flag("--no-simplify", run.no_simplify,
                    "Report RapidCheck's shrunk case without making it 1-minimal (faster on a failing run)");
  run_app->add_option("--save-failures", run.save_failures_dir,
                      "Write each finding's minimal failing case to this directory (created if missing) as a "
                      "regression fixture <property>-<dtype>-<n>.safetensors, for `attncheck verify`");
  run_app->add_flag("--require-backend", run.require_backend, "Exit 2 when every unit was skipped");
  run_app->add_option("--expect", run.expect_path,
                      "Expectation file (JSON, tools/README.md): exit 0 when every unit's outcome is the expected one, "
                      "1 when a unit fails unexpectedly or an expected failure passes");
  bool isolate = false, no_isolate = false;
  run_app->add_flag("--isolate", isolate, "Run every backend call in a forked child (default for plug-ins loaded by path)");
  run_app->add_flag("--no-isolate", no_isolate, "Run backend calls in this process, even for a plug-in");
  double accuracy_factor = 0;
  CLI::Option* accuracy_option =
      run_app
          ->add_option("--accuracy-factor", accuracy_factor,
                       "Also judge accuracy: fail a case whose error exceeds F times an fp32 baseline kernel's "
                       "(0: report the ratios only; default: off)")
          ->check(number_check(true));
  run_app->add_option("--timeout", run.timeout_seconds, "Seconds an isolated call may take before it counts as a hang")
      ->check(number_check(false))
      ->capture_default_str();

  GenerateOptions generate;
  CLI::App* generate_app = app.add_subcommand("generate", "Write a suite of golden fixtures (deterministic, atomic)");
  generate_app->footer(kGenerateExamples);
  generate_app->add_option("--suite", generate.suite, "Suite name")->capture_default_str();
  generate_app->add_option("--out,-o", generate.out_dir, "Directory to write the fixtures to")->required();
  generate_app->add_option("--seed", generate.seed, "Seed of the suite's inputs")->capture_default_str();
  generate_app
      ->add_option("--reference-isa", generate.reference_isa,
                   "Build of the reference's kernels to compute with: auto, baseline, avx2 or avx512. Every one "
                   "writes the same bytes (reference/README.md); this exists to show it")
      ->capture_default_str();

  VerifyOptions verify;
  CLI::App* verify_app = app.add_subcommand("verify", "Check a backend against fixture files");
  verify_app->footer(kVerifyExamples);
  verify_app->add_option("--backend,-b", verify.backend, "Built-in backend name or plug-in library path")->required();
  verify_app->add_option("FIXTURES", verify.paths, "Fixture files or directories")->required();
  add_direction_option(verify_app, verify.direction,
                       "Which passes of each fixture to judge: forward (out, lse), backward (dq, dk, dv), or both");
  verify_app->add_option("--html", verify.html_path,
                         "Write a self-contained HTML report: one row per fixture with its verdict");

  ReferenceCommandOptions reference;
  CLI::App* reference_app =
      app.add_subcommand("reference", "Compute the reference outputs of a fixture's inputs (a regression fixture)");
  reference_app->footer(kReferenceExamples);
  reference_app->add_option("IN", reference.input, "Fixture with inputs (expected outputs are optional)")->required();
  reference_app->add_option("-o,--out", reference.output, "Where to write the fixture with out and lse")->required();

  BenchOptions bench;
  CLI::App* bench_app = app.add_subcommand("bench", "Time a backend beside the reference on validated cases");
  bench_app->footer(kBenchExamples);
  bench_app->add_option("--backend,-b", bench.backends,
                        "Built-in backend name or plug-in library path (repeatable: timed side by side, ratios against the first)")
      ->required();
  bench_app->add_option("--shape", bench.shapes, "B,H,L,D (repeatable); default: 1,8,L,64 for L = 512..4096");
  bench_app->add_option("--dtype", bench.dtype, "Input dtypes, comma-separated")->capture_default_str();
  bench_app->add_option("--repeats", bench.repeats, "Timed repetitions per shape (the best is reported)")
      ->check(number_check(false))
      ->capture_default_str();
  add_direction_option(bench_app, bench.direction,
                       "Which pass to time: forward, backward (on cases whose gradients passed), or both side by side");
  bench_app->add_option("--json", bench.json_path, "Write every row as JSON (tools/README.md documents the schema)");

  CharacterizeOptions characterize;
  CLI::App* characterize_app = app.add_subcommand(
      "characterize", "Which profile one backend behaves like, and its accuracy over a grid of sizes and value classes");
  characterize_app->footer(kCharacterizeExamples);
  characterize_app->add_option("--backend,-b", characterize.backend, "Built-in backend name or plug-in library path")
      ->required();
  characterize_app->add_option("--dtype", characterize.dtype, "Input dtype")->capture_default_str();
  characterize_app->add_option("--lq", characterize.q_lengths, "Query lengths of the grid (repeatable or comma-separated)")
      ->delimiter(',')
      ->check(number_check(false))
      ->capture_default_str();
  characterize_app->add_option("--lk", characterize.k_lengths, "Key lengths of the grid (repeatable or comma-separated)")
      ->delimiter(',')
      ->check(number_check(false))
      ->capture_default_str();
  characterize_app->add_option("--head-dim", characterize.head_dims, "Head dims of the grid, Dk = Dv (repeatable or comma-separated)")
      ->delimiter(',')
      ->check(number_check(false))
      ->capture_default_str();
  characterize_app
      ->add_option("--accuracy-factor", characterize.accuracy_factor,
                   "Fail a case whose error exceeds F times the fp32 baseline kernel's (0: report only)")
      ->check(number_check(true))
      ->capture_default_str();
  characterize_app->add_option("--json", characterize.json_path, "Write the table as JSON");
  std::string characterize_only;
  characterize_app->add_option("--only", characterize_only, "One section only: ladder or grid")
      ->check(CLI::IsMember({"ladder", "grid"}));

  MergeOptions merge;
  CLI::App* merge_app = app.add_subcommand("merge", "Combine the JSON reports of the shards of one run");
  merge_app->footer(kMergeExamples);
  merge_app->add_option("OUT", merge.output, "Merged JSON report to write")->required();
  merge_app->add_option("IN", merge.inputs, "Shard JSON reports")->required()->check(CLI::ExistingFile);
  merge_app->add_option("--junit", merge.junit_path, "Also write the merged JUnit XML report");
  merge_app->add_option("--markdown", merge.markdown_path, "Also write the merged Markdown summary");
  merge_app->add_flag("--allow-missing", merge.allow_missing, "Merge even if some shards' reports are absent");

  std::string what;
  std::vector<std::string> plugins;
  CLI::App* list_app = app.add_subcommand("list", "List backends, properties or profiles");
  list_app->footer(kListExamples);
  list_app->add_option("what", what, "backends | properties | profiles")
      ->required()
      ->check(CLI::IsMember({"backends", "properties", "profiles"}));
  list_app->add_option("plugins", plugins, "Plug-in libraries to describe as well (with `list backends`)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and --version exit 0; every parse error is a usage error: 2, whatever CLI11's code.
    return app.exit(e) == 0 ? kExitPassed : kExitUsage;
  }

  if (*run_app) {
    if (seed_option->count() > 0) run.seed = seed;
    if (cases_option->count() > 0) run.cases = cases;
    if (shard_option->count() > 0) run.shard = shard;
    if (accuracy_option->count() > 0) run.accuracy_factor = accuracy_factor;
    if (isolate && no_isolate) {
      std::cerr << "attncheck run: --isolate and --no-isolate contradict each other\n";
      return kExitUsage;
    }
    if (isolate || no_isolate) run.isolate = isolate;
    return run_command(run, env, std::cout, std::cerr);
  }
  if (*merge_app) return merge_command(merge, env, std::cout, std::cerr);
  if (*generate_app) return generate_command(generate, std::cout, std::cerr);
  if (*verify_app) return verify_command(verify, std::cout, std::cerr);
  if (*reference_app) return reference_command(reference, std::cout, std::cerr);
  if (*bench_app) return bench_command(bench, std::cout, std::cerr);
  if (*characterize_app) {
    characterize.ladder = characterize_only != "grid";
    characterize.grid = characterize_only != "ladder";
    return characterize_command(characterize, std::cout, std::cerr);
  }
  return list_command(what, plugins, std::cout, std::cerr);
}
