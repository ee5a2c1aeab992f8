#!/usr/bin/env bash
# Builds and installs the Python module (pyproject.toml: the engine as attncheck._engine) into
# the venv whose python is given (scripts/python-env.sh prints it). The build directory persists
# in build/python, so a second run rebuilds only what changed.
#   scripts/python-module.sh /path/to/.venv/bin/python
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${1:?usage: scripts/python-module.sh /path/to/python}
settings=()
if command -v ccache >/dev/null; then
  settings+=(-C cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache -C cmake.define.CMAKE_C_COMPILER_LAUNCHER=ccache)
fi
# No build isolation: scikit-build-core and nanobind come pinned with hashes from
# python/requirements-test.txt (scripts/python-env.sh), and the persistent build directory keeps
# pointing at the same nanobind.
"$python" -m pip install --quiet --disable-pip-version-check --no-input --no-build-isolation --no-deps \
  "${settings[@]}" "$root" >&2
"$python" -c 'import attncheck' >&2
