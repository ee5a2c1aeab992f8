#!/usr/bin/env bash
# Configures and builds attncheck in build/ (or $ATTNCHECK_BUILD_DIR). Extra arguments go to
# CMake's configure step, e.g. -DCMAKE_BUILD_TYPE=Sanitize.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ATTNCHECK_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -G Ninja -DATTNCHECK_WERROR=ON "$@"
cmake --build "$build" --parallel "$(nproc)"
