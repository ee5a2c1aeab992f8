#!/usr/bin/env bash
# Builds attncheck with AddressSanitizer + UndefinedBehaviorSanitizer (the Sanitize build type of
# cmake/AttncheckCompilerOptions.cmake) in build-sanitize/ and runs the whole test suite under
# them: every gtest program, the command-line checks and the interoperability test. Any sanitizer
# report aborts its program, so a report is a failure and a non-zero exit.
#
#   scripts/sanitize.sh [/path/to/python]     # or ATTNCHECK_PYTHON=/path/to/python
#
# The Python interpreter (scripts/python-env.sh prints one) registers the interoperability test;
# without it that one test is not registered. CUDA is off: the sanitizers do not see device code,
# and the CUDA runtime's own allocations make LeakSanitizer noisy for no finding of ours.
# ATTNCHECK_SANITIZE_BUILD_DIR overrides the build directory; CC/CXX pick the compiler (default:
# Clang where installed, else what CMake finds).
#
# Clang and -DATTNCHECK_NATIVE=ON are deliberate: the main build uses GCC for the compiler's
# default target, so the golden-set checks here show that another compiler, and backends built
# for this machine, leave the reference's bytes as they are (reference/README.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ATTNCHECK_SANITIZE_BUILD_DIR:-$root/build-sanitize}
python=${1:-${ATTNCHECK_PYTHON:-}}

# The third-party libraries are not instrumented: their adapters are checked in the main build.
configure=(-DCMAKE_BUILD_TYPE=Sanitize -DATTNCHECK_CUDA=OFF -DATTNCHECK_BUILD_TESTS=ON -DATTNCHECK_NATIVE=ON
           -DATTNCHECK_THIRD_PARTY=OFF)
if [[ -z ${CXX:-} ]] && command -v clang++ >/dev/null && command -v clang >/dev/null; then
  export CC=clang CXX=clang++
fi
if [[ -n $python ]]; then
  configure+=(-DATTNCHECK_PYTHON="$python")
fi

start=$SECONDS
cmake -S "$root" -B "$build" -G Ninja "${configure[@]}"
cmake --build "$build" --parallel "$(nproc)"
built=$SECONDS

# detect_leaks: a leak is a finding. abort_on_error: a core-dump style exit that ctest reports as a
# failure even where a test harness would swallow a plain non-zero exit. halt_on_error for UBSan:
# the build already uses -fno-sanitize-recover=undefined; this keeps it true for code built
# without it (a -DCMAKE_CXX_FLAGS override).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
# Each gtest program runs once, whole, rather than once per test as ctest's discovered tests do:
# a sanitized process is slow to start, and the same tests run either way. Two at a time on two
# cores; a program's full log is printed only when it fails.
logs=$build/sanitize-logs
mkdir -p "$logs"
mapfile -t programs < <(find "$build" -type f -executable -name '*_tests' | sort)
((${#programs[@]} > 0)) || { echo "sanitize: no test programs were built in $build" >&2; exit 1; }
run_program() {
  local program=$1 log=$2/$(basename "$1").log
  if "$program" >"$log" 2>&1; then
    echo "sanitize: ok      $(basename "$program")  $(grep -E '^\[  PASSED  \]' "$log" | tail -n 1)"
  else
    echo "sanitize: FAILED  $(basename "$program") (log: $log)"
    tail -n 80 "$log"
    return 1
  fi
}
export -f run_program
printf '%s\n' "${programs[@]}" | xargs -P "$(nproc)" -I{} bash -c 'run_program "$1" "$2"' _ {} "$logs" || status=1
# The tests that are not gtest programs: the command line end to end and Python interoperability.
# Sanitized code runs several times slower, hence the longer per-test timeout than scripts/test.sh.
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" --timeout 1800 \
      -R '^(attncheck[.]cli[.]|FixturesInterop[.])' || status=$?
done_at=$SECONDS

echo "sanitize: build $((built - start)) s, tests $((done_at - built)) s, total $((done_at - start)) s" \
     "on $(nproc) cores"
exit "$status"
