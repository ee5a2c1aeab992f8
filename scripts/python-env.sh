#!/usr/bin/env bash
# Creates .venv with the packages the Python tests use and prints its python: numpy and
# safetensors (the interoperability tests), and python/requirements-test.txt, pinned with hashes
# (the Python module's build: scikit-build-core, nanobind; its tests: pytest, pytest-xdist, onnx,
# onnxruntime). Python is a test dependency only: the C++ build never runs it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.venv
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import numpy, safetensors, pytest, xdist, onnx, onnxruntime, nanobind, scikit_build_core' 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --require-hashes \
    -r "$root/python/requirements-test.txt" >&2
fi
echo "$venv/bin/python"
