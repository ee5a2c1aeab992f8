#!/usr/bin/env bash
# Creates .venv with the packages the interoperability tests use (numpy, safetensors) and prints
# its python. Python is a test dependency only: attncheck itself never runs it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.venv
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import numpy, safetensors' 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy safetensors >&2
fi
echo "$venv/bin/python"
