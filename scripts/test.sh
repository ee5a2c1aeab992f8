#!/usr/bin/env bash
# Installs what is missing, builds with warnings as errors, and runs the whole test suite.
# This is what CI runs (.ci/run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
python=$("$root/scripts/python-env.sh")
"$root/scripts/build.sh" -DATTNCHECK_PYTHON="$python"
build=${ATTNCHECK_BUILD_DIR:-$root/build}
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" --timeout 900
# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, then every parser of
# untrusted input under libFuzzer for a fixed budget.
"$root/scripts/sanitize.sh" "$python"
"$root/scripts/fuzz.sh"
