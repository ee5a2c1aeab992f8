#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang in build-fuzz/ and runs each for a fixed time
# budget from its seed corpus (the golden fixtures, the toy cases, the problem texts) and the
# inputs of past bugs (fuzz/regressions). Fails on any crash, uncaught exception, sanitizer report,
# leak, timeout or out-of-memory.
#
#   scripts/fuzz.sh [target...]      # default: every target
#
# Environment:
#   ATTNCHECK_FUZZ_SECONDS     budget per target (default 60)
#   ATTNCHECK_FUZZ_BUILD_DIR   build directory (default build-fuzz)
#   ATTNCHECK_FUZZ_ARGS        extra libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-seed=1"
#
# Each target keeps what it learns in build-fuzz/fuzz/corpus/<target> (the seeds stay untouched),
# so a later run starts where the previous one stopped. A crashing input is saved as
# build-fuzz/fuzz/artifacts/<target>-crash-<sha1>; reproduce with
#   build-fuzz/fuzz/<target> build-fuzz/fuzz/artifacts/<target>-crash-<sha1>
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ATTNCHECK_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${ATTNCHECK_FUZZ_SECONDS:-60}
targets=("$@")
((${#targets[@]})) || targets=(fuzz_fixture_reader fuzz_problem_text fuzz_toy_json)
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: ATTNCHECK_FUZZ_SECONDS must be a positive integer, not '$seconds'" >&2; exit 2; }

# Sanitize: -O1 -g with ASan and UBSan on every library, not only where fuzz/ adds them, so a
# report's stack has line numbers all the way down.
CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Sanitize -DATTNCHECK_FUZZ=ON -DATTNCHECK_CUDA=OFF \
  -DATTNCHECK_BUILD_TESTS=OFF -DATTNCHECK_BUILD_BENCHMARKS=OFF
cmake --build "$build" --parallel "$(nproc)" --target "${targets[@]}"

fuzz_dir=$build/fuzz
mkdir -p "$fuzz_dir/artifacts" "$fuzz_dir/logs"
# libFuzzer handles ASan's and UBSan's deaths itself; halt_on_error keeps a UBSan report fatal
# even for code built without -fno-sanitize-recover.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
read -r -a extra <<<"${ATTNCHECK_FUZZ_ARGS:-}"

declare -A dictionary=([fuzz_fixture_reader]=fixture.dict [fuzz_problem_text]=problem_text.dict
                       [fuzz_toy_json]=toy_json.dict)
summary=()
failed=()
for target in "${targets[@]}"; do
  corpus=$fuzz_dir/corpus/$target
  log=$fuzz_dir/logs/$target.log
  mkdir -p "$corpus"
  args=(-max_total_time="$seconds" -detect_leaks=1 -print_final_stats=1
        # A single input running 25 s is a hang for these parsers; 2 GiB is far above any real file.
        -timeout=25 -rss_limit_mb=2048
        -artifact_prefix="$fuzz_dir/artifacts/$target-")
  dict=${dictionary[$target]:-}
  [[ -n $dict ]] && args+=(-dict="$root/fuzz/$dict")
  echo "fuzz: $target for ${seconds} s (log: $log)"
  status=0
  # The first directory receives new inputs; the seeds and fuzz/regressions are only read.
  dirs=("$corpus" "$fuzz_dir/seeds/$target")
  [[ -d $root/fuzz/regressions/$target ]] && dirs+=("$root/fuzz/regressions/$target")
  "$fuzz_dir/$target" "${args[@]}" "${extra[@]}" "${dirs[@]}" >"$log" 2>&1 || status=$?

  # libFuzzer's -print_final_stats lines, printed on a clean finish and on a crash alike.
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  # A sanitizer report that did not end the process (a recoverable check in an uninstrumented
  # library) still counts.
  reports=$(grep -cE '^(==[0-9]+==ERROR: |SUMMARY: (Address|Undefined|Leak)Sanitizer|.*: runtime error: )' "$log" || true)
  verdict=ok
  if ((status != 0 || reports != 0)); then
    verdict="FAILED (exit $status, $reports sanitizer lines)"
    failed+=("$target")
    echo "fuzz: $target failed; the end of its log:" >&2
    tail -n 60 "$log" >&2
    ls "$fuzz_dir/artifacts/$target-"* 2>/dev/null | sed 's/^/fuzz: artifact /' >&2 || true
  fi
  summary+=("$(printf '%-22s %12s %12s %8s %8s  %s' "$target" "${runs:-?}" "${rate:-?}" "${units:-?}" "${rss:-?}" "$verdict")")
done

echo
printf '%-22s %12s %12s %8s %8s  %s\n' target executions "exec/s" "new" "rss MB" verdict
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
