#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang in build-fuzz/ and, for each target:
#   1. replays the committed corpus (fuzz/corpus/<target>), the inputs of past bugs
#      (fuzz/regressions/<target>) and the seeds (the golden fixtures, the toy cases, the problem
#      texts) once each, at full length;
#   2. fuzzes for a fixed time budget, starting from all of them.
# Fails on any crash, uncaught exception, sanitizer report, leak, timeout or out-of-memory.
#
#   scripts/fuzz.sh [target...]            # CI (scripts/test.sh): replay, then ATTNCHECK_FUZZ_SECONDS each
#   scripts/fuzz.sh --long [target...]     # not in CI: replay, then ATTNCHECK_FUZZ_RUNS executions each
#   scripts/fuzz.sh --merge [target...]    # minimise what the runs found into fuzz/corpus/<target>
#
# --long stops each target after a number of executions (libFuzzer -runs=, default 10,000,000),
# not after a time, so its table is comparable between machines; fuzz/README.md records one.
# --merge rewrites fuzz/corpus/<target> as the smallest set of inputs (libFuzzer -merge=1) that
# keeps the coverage of the committed corpus and of build-fuzz/fuzz/corpus/<target>; commit it
# when it is worth keeping, and keep the total small (fuzz/README.md says how small).
#
# Environment:
#   ATTNCHECK_FUZZ_SECONDS     budget per target in the default mode (default 60)
#   ATTNCHECK_FUZZ_RUNS        executions per target with --long (default 10000000)
#   ATTNCHECK_FUZZ_MAX_LEN     longest input the fuzzer makes (default 4096; see below)
#   ATTNCHECK_FUZZ_BUILD_DIR   build directory (default build-fuzz)
#   ATTNCHECK_FUZZ_ARGS        extra libFuzzer flags, e.g. "-seed=1"
#
# What a run finds goes to build-fuzz/fuzz/corpus/<target>, never to the repository (the
# committed corpus, the seeds and fuzz/regressions are only read), so a later run starts where
# the previous one stopped. A crashing input is saved as build-fuzz/fuzz/artifacts/<target>-crash-<sha1>;
# reproduce with
#   build-fuzz/fuzz/<target> build-fuzz/fuzz/artifacts/<target>-crash-<sha1>
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=ci
case ${1:-} in
  --long) mode=long; shift ;;
  --merge) mode=merge; shift ;;
  -*) echo "fuzz: unknown option '$1' (usage: scripts/fuzz.sh [--long | --merge] [target...])" >&2; exit 2 ;;
esac
build=${ATTNCHECK_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${ATTNCHECK_FUZZ_SECONDS:-60}
runs=${ATTNCHECK_FUZZ_RUNS:-10000000}
# The parsers' decisions all lie in an input's first few hundred bytes (a fixture's header, a
# JSON document's structure, a problem line); longer inputs only repeat the loops over tensor
# data and cost time in proportion. The replay step runs every committed and seed input at full
# length, so the golden fixtures (up to 89 KB) are still read whole on every run.
max_len=${ATTNCHECK_FUZZ_MAX_LEN:-4096}
targets=("$@")
((${#targets[@]})) || targets=(fuzz_fixture_reader fuzz_problem_text fuzz_toy_json)
for value in "$seconds" "$runs" "$max_len"; do
  [[ $value =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: ATTNCHECK_FUZZ_SECONDS, _RUNS and _MAX_LEN must be positive integers, not '$value'" >&2; exit 2; }
done

# fuzz/CMakeLists.txt itself puts ASan, UBSan and -O2 -g on every attncheck library a target
# reaches, so a report's stack has line numbers all the way down: the Sanitize build type's own
# flags never apply (CMake creates an empty cache entry for them; fuzz/README.md).
CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Sanitize -DATTNCHECK_FUZZ=ON -DATTNCHECK_CUDA=OFF \
  -DATTNCHECK_BUILD_TESTS=OFF -DATTNCHECK_BUILD_BENCHMARKS=OFF -DATTNCHECK_THIRD_PARTY=OFF
cmake --build "$build" --parallel "$(nproc)" --target "${targets[@]}"

fuzz_dir=$build/fuzz
mkdir -p "$fuzz_dir/artifacts" "$fuzz_dir/logs"
# libFuzzer handles ASan's and UBSan's deaths itself; halt_on_error keeps a UBSan report fatal
# even for code built without -fno-sanitize-recover. The quarantine (freed memory ASan keeps
# poisoned to catch a use after free) is 32 MB instead of 256: the targets keep no state between
# inputs, so a dangling pointer can only be used within the execution that freed its memory, and
# one execution frees far less than 32 MB (at most a few copies of a 4 KB input, or of an 89 KB
# golden fixture during the replay). The default let every target's resident memory climb to
# about 470 MB.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=32}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
read -r -a extra <<<"${ATTNCHECK_FUZZ_ARGS:-}"

declare -A dictionary=([fuzz_fixture_reader]=fixture.dict [fuzz_problem_text]=problem_text.dict
                       [fuzz_toy_json]=toy_json.dict)

# A sanitizer report that did not end the process (a recoverable check in an uninstrumented
# library) still counts.
sanitizer_lines() { grep -cE '^(==[0-9]+==ERROR: |SUMMARY: (Address|Undefined|Leak)Sanitizer|.*: runtime error: )' "$1" || true; }

if [[ $mode == merge ]]; then
  for target in "${targets[@]}"; do
    committed=$root/fuzz/corpus/$target
    merged=$fuzz_dir/merged/$target
    rm -rf "$merged"
    mkdir -p "$merged" "$committed" "$fuzz_dir/corpus/$target"
    # The output directory must start empty for -merge=1 to minimise; it takes inputs smallest first.
    "$fuzz_dir/$target" -merge=1 -max_len="$max_len" -rss_limit_mb=2048 "$merged" "$committed" \
      "$fuzz_dir/corpus/$target" >"$fuzz_dir/logs/$target.merge.log" 2>&1 ||
      { tail -n 30 "$fuzz_dir/logs/$target.merge.log" >&2; echo "fuzz: merge of $target failed" >&2; exit 1; }
    rm -rf "$committed"
    cp -r "$merged" "$committed"
    echo "fuzz: $target: $(find "$committed" -type f | wc -l) inputs, $(du -sb "$committed" | cut -f1) bytes in fuzz/corpus/$target"
  done
  exit 0
fi

summary=()
failed=()
for target in "${targets[@]}"; do
  corpus=$fuzz_dir/corpus/$target
  log=$fuzz_dir/logs/$target.log
  mkdir -p "$corpus"
  common=(-rss_limit_mb=2048 -timeout=25 -artifact_prefix="$fuzz_dir/artifacts/$target-")
  # A single input running 25 s is a hang for these parsers; 2 GiB is far above any real file.
  read_only=()
  for dir in "$root/fuzz/corpus/$target" "$root/fuzz/regressions/$target" "$fuzz_dir/seeds/$target"; do
    [[ -d $dir ]] && read_only+=("$dir")
  done

  # 1. Replay: files, not directories, so libFuzzer runs each once, whole, without mutating.
  mapfile -t inputs < <(find "${read_only[@]}" -type f ! -name '*.md' | sort)
  replay_log=$fuzz_dir/logs/$target.replay.log
  status=0
  echo "fuzz: $target: replaying ${#inputs[@]} inputs (log: $replay_log)"
  "$fuzz_dir/$target" "${common[@]}" "${extra[@]}" "${inputs[@]}" >"$replay_log" 2>&1 || status=$?
  replayed=$(grep -c '^Executed ' "$replay_log" || true)
  reports=$(sanitizer_lines "$replay_log")
  if ((status != 0 || reports != 0 || replayed != ${#inputs[@]})); then
    echo "fuzz: $target: the replay failed (exit $status, $reports sanitizer lines, $replayed of ${#inputs[@]} inputs run); the end of its log:" >&2
    tail -n 60 "$replay_log" >&2
    failed+=("$target")
    summary+=("$(printf '%-22s replay FAILED' "$target")")
    continue
  fi

  # 2. Fuzz. The first directory receives new inputs; the others are only read.
  args=(-max_len="$max_len" -detect_leaks=1 -print_final_stats=1 "${common[@]}")
  if [[ $mode == long ]]; then args+=(-runs="$runs"); else args+=(-max_total_time="$seconds"); fi
  dict=${dictionary[$target]:-}
  [[ -n $dict ]] && args+=(-dict="$root/fuzz/$dict")
  budget=$([[ $mode == long ]] && echo "$runs executions" || echo "$seconds s")
  echo "fuzz: $target for $budget (log: $log)"
  status=0
  "$fuzz_dir/$target" "${args[@]}" "${extra[@]}" "$corpus" "${read_only[@]}" >"$log" 2>&1 || status=$?

  # libFuzzer's -print_final_stats lines and its last status line, printed on a clean finish and
  # on a crash alike.
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  reports=$(sanitizer_lines "$log")
  verdict=ok
  if ((status != 0 || reports != 0)); then
    verdict="FAILED (exit $status, $reports sanitizer lines)"
    failed+=("$target")
    echo "fuzz: $target failed; the end of its log:" >&2
    tail -n 60 "$log" >&2
    ls "$fuzz_dir/artifacts/$target-"* 2>/dev/null | sed 's/^/fuzz: artifact /' >&2 || true
  fi
  summary+=("$(printf '%-22s %8s %12s %8s %6s %7s %12s %8s  %s' "$target" "${#inputs[@]}" "${executions:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$verdict")")
done

echo
printf '%-22s %8s %12s %8s %6s %7s %12s %8s  %s\n' target replayed executions "exec/s" cov ft corpus "rss MB" verdict
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
