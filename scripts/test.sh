#!/usr/bin/env bash
# Installs what is missing, builds with warnings as errors, and runs the whole test suite.
# This is what CI runs (.ci/run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
python=$("$root/scripts/python-env.sh")
# The Python module into that venv, before the build: CMake registers its pytest suite only when
# `import attncheck` works there.
"$root/scripts/python-module.sh" "$python"
# The third-party kernels under test (backends/third-party/): pinned downloads, cached between
# runs; ATTNCHECK_THIRD_PARTY=OFF skips them.
third_party=()
if [[ ${ATTNCHECK_THIRD_PARTY:-AUTO} != OFF ]]; then
  third_party=(-DATTNCHECK_THIRD_PARTY=ON -DATTNCHECK_THIRD_PARTY_DIR="$("$root/scripts/third-party.sh")")
else
  third_party=(-DATTNCHECK_THIRD_PARTY=OFF)
fi
"$root/scripts/build.sh" -DATTNCHECK_PYTHON="$python" "${third_party[@]}"
build=${ATTNCHECK_BUILD_DIR:-$root/build}
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" --timeout 900
# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, then every parser of
# untrusted input under libFuzzer for a fixed budget.
"$root/scripts/sanitize.sh" "$python"
"$root/scripts/fuzz.sh"
