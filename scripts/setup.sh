#!/usr/bin/env bash
# One command from a fresh Debian 12 to a working attncheck: installs what is missing, builds,
# and runs the main job — the quick conformance profile against the built-in cpu-flash backend.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
python=$("$root/scripts/python-env.sh")
# The Python module into that venv, before the build: CMake registers its pytest suite only when
# `import attncheck` works there.
"$root/scripts/python-module.sh" "$python"
"$root/scripts/build.sh" -DATTNCHECK_PYTHON="$python"
build=${ATTNCHECK_BUILD_DIR:-$root/build}
"$build/tools/attncheck/attncheck" run --backend cpu-flash --profile quick
