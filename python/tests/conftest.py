"""Shared set-up of the Python module's tests: the example kernels on the path, and where the
C++ build (the `attncheck` command line, the plug-in modules) lives."""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python" / "examples"))


def build_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ATTNCHECK_BUILD_DIR", ROOT / "build"))


def require_build_file(relative: str) -> pathlib.Path:
    """A file of the C++ build. Missing: a failure when CTest runs the suite (it sets
    ATTNCHECK_BUILD_DIR and builds the file first), a skip in a bare `pytest python/tests`."""
    path = build_dir() / relative
    if not path.exists():
        if "ATTNCHECK_BUILD_DIR" in os.environ:
            pytest.fail(f"{path} is missing: the build should have made it")
        pytest.skip(f"{path} is not built (ninja -C build attncheck and the plug-in target)")
    return path


@pytest.fixture
def repo_root() -> pathlib.Path:
    return ROOT
