#!/usr/bin/env bash
# The GPU check: the device backends (cuda-naive, cuda-flash, cuda-cublas) on a real GPU, through
# the same engine as everything else. Meant for one NVIDIA H100/H200 machine, under 8 minutes.
#
#   scripts/gpu-check.sh --prepare [BUNDLE]   # here (Debian, dev packages): build with CUDA and
#                                             # put the binary, the shared libraries it needs
#                                             # beyond the CUDA toolkit and libc, and the golden
#                                             # fixtures in BUNDLE (default gpu-bundle/, < 64 MiB)
#   scripts/gpu-check.sh --run [BUNDLE]       # there (nvcc, compute-sanitizer, no dev packages):
#                                             # run the checks and print one summary table
#   scripts/gpu-check.sh                      # both, on a machine that has everything
#
# The run: the quick profile on each device backend in every dtype; `verify` of the golden set on
# each; cuda-flash's backward pass over the CUDA tests' grid (cuda_device_backward_tests, every
# dtype, with and without dLSE), also under compute-sanitizer memcheck; one quick unit per
# backend under compute-sanitizer memcheck (and racecheck for cuda-flash); `attncheck bench` at
# B1 H8 L4096 D128 bf16 for cuda-flash and cuda-cublas. Each
# step has its own time limit, so one stuck step cannot eat the machine's time. Logs land in
# BUNDLE/logs/. The exit status is 1 if any step failed, 0 otherwise; a step in which the backend
# declined everything (no usable GPU) counts as failed, since the device was never exercised.
#
# Through the device tool: prepare here, then run there with the bundle carried (it is git-ignored
# and a few MiB):  carry ["gpu-bundle"], command "bash gpu-bundle/gpu-check.sh --run gpu-bundle".
# The binary needs the GPU machine's glibc >= 2.34 and libstdc++ with GLIBCXX_3.4.30 (GCC 12).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=all
case ${1:-} in
  --prepare) mode=prepare; shift ;;
  --run) mode=run; shift ;;
  -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
esac
bundle=$(realpath -m "${1:-$root/gpu-bundle}")

prepare() {
  set -e
  local build=${ATTNCHECK_GPU_BUILD_DIR:-$root/build-gpu}
  [[ -x /usr/local/cuda/bin/nvcc ]] || { echo "gpu-check: --prepare needs the CUDA toolkit in /usr/local/cuda" >&2; exit 2; }
  # The bundle must run on another machine: no -march=native, Release, CUDA on; of the tests only
  # the backward device test, which the engine does not run yet (GoogleTest links statically).
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTNCHECK_CUDA=ON -DATTNCHECK_NATIVE=OFF \
    -DATTNCHECK_BUILD_TESTS=ON -DATTNCHECK_BUILD_BENCHMARKS=OFF -DATTNCHECK_INSTALL=OFF -DATTNCHECK_THIRD_PARTY=OFF >/dev/null
  cmake --build "$build" --target attncheck cuda_device_backward_tests --parallel "$(nproc)"
  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib"
  cp "$build/tools/attncheck/attncheck" "$build/backends/cuda/tests/cuda_device_backward_tests" "$bundle/bin/"
  cp -r "$root/fixtures/golden" "$bundle/golden"
  # Shared libraries from Debian packages (fmt, …) are not on the GPU machine; the CUDA ones and
  # libc are, and must come from there (the driver's libcuda above all).
  ldd "$bundle/bin/attncheck" "$bundle/bin/cuda_device_backward_tests" | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
    case $lib in
      */cuda*|*/libcuda*|*/libcudart*|*/libcublas*|*/libc.so*|*/libm.so*|*/libpthread*|*/libdl*|*/librt*|*/ld-linux*|*/libgcc_s*|*/libstdc++*) ;;
      *) cp -L "$lib" "$bundle/lib/" ;;
    esac
  done
  cp "$0" "$bundle/gpu-check.sh"
  du -sh "$bundle"
}

declare -a rows=()
failed=0
# step NAME LIMIT_SECONDS COMMAND...: runs it with a limit, keeps its log, records a table row
# whose detail is the log's last meaningful line.
step() {
  local name=$1 limit=$2
  shift 2
  local log="$bundle/logs/${name//[^A-Za-z0-9._-]/_}.log"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  local status=ok
  if ((rc == 124 || rc == 137)); then status="timeout"; failed=1
  elif ((rc != 0)); then status="FAIL($rc)"; failed=1
  # verify and bench exit 0 when the backend declined everything: on a GPU machine that is a
  # failure of the check (the device was not used), not a pass.
  # Likewise a gtest program whose cases all skipped ("no CUDA device: …").
  elif grep -qE '^0 passed|skipped: |^\[  PASSED  \] 0 tests' "$log"; then status="SKIPPED"; failed=1; fi
  local detail
  detail=$(grep -E 'units:|passed, [0-9]+ failed|ERROR SUMMARY|RACECHECK SUMMARY|^ *[0-9]+,[0-9]+,[0-9]+,[0-9]+ |skipped: |declined|error|No such file|^\[  (PASSED|FAILED) ' \
    "$log" | tail -n 1 | sed 's/^ *//' | cut -c1-110)
  rows+=("$(printf '%-40s %-9s %5ss  %s' "$name" "$status" "$took" "$detail")")
}

run_checks() {
  local bin="$bundle/bin/attncheck"
  [[ -x $bin ]] || { echo "gpu-check: $bin is missing; run --prepare first" >&2; exit 2; }
  export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  mkdir -p "$bundle/logs"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  for backend in cuda-naive cuda-flash cuda-cublas; do
    step "run quick $backend" 150 "$bin" run --backend "$backend" --profile quick --dtype f32,f16,bf16 --require-backend \
      --json "$bundle/logs/$backend.json"
    step "verify golden $backend" 60 "$bin" verify --backend "$backend" "$bundle/golden"
  done
  local sanitizer=compute-sanitizer
  command -v "$sanitizer" >/dev/null || sanitizer=/usr/local/cuda/bin/compute-sanitizer
  step "backward cuda-flash grid" 120 "$bundle/bin/cuda_device_backward_tests"
  step "memcheck backward cuda-flash" 120 "$sanitizer" --tool memcheck --error-exitcode 3 \
    "$bundle/bin/cuda_device_backward_tests" --gtest_filter='*FlashDeviceBackward.*F16'
  for backend in cuda-naive cuda-flash cuda-cublas; do
    step "memcheck $backend" 90 "$sanitizer" --tool memcheck --error-exitcode 3 \
      "$bin" run --backend "$backend" --profile quick --cases 10 --property '^reference-agreement$' --dtype f16 --require-backend
  done
  step "racecheck cuda-flash" 120 "$sanitizer" --tool racecheck --error-exitcode 3 \
    "$bin" run --backend cuda-flash --profile quick --cases 5 --property '^reference-agreement$' --dtype bf16 --require-backend
  for backend in cuda-flash cuda-cublas; do
    step "bench $backend B1 H8 L4096 D128 bf16" 60 "$bin" bench --backend "$backend" --shape 1,8,4096,128 --dtype bf16
  done
  printf '\n%-40s %-9s %6s  %s\n' "step" "status" "time" "what its log says last"
  printf '%s\n' "${rows[@]}"
  return $failed
}

case $mode in
  prepare) prepare ;;
  run) run_checks ;;
  all) (prepare) || exit 2; run_checks ;;
esac
