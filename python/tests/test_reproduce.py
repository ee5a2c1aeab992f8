"""A failure found from Python reproduces bit for bit from the command line, and the other way
round, on one kernel available both ways: the mutant plug-in attncheck-mutant-gqa-modulo (query
head h reads kv head h % Hkv instead of h / (Hq / Hkv)), wrapped as a Python backend by
attncheck.Backend.load, and given to `attncheck run --backend <the .so>` as it is."""

import json
import shlex
import subprocess

import pytest

import attncheck
from conftest import require_build_file

PROPERTY = "head-independence"


@pytest.fixture
def cli():
    return require_build_file("tools/attncheck/attncheck")


@pytest.fixture
def plugin():
    return require_build_file("backends/attncheck-mutant-gqa-modulo.so")


def cli_run(cli, arguments, tmp_path):
    out = tmp_path / "cli.json"
    result = subprocess.run([str(cli), "run", *arguments, "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return json.loads(out.read_text())


def failure_of(units):
    failed = [u for u in units if u["status"] == "failed"]
    assert len(failed) == 1, units
    return failed[0]


def same_failure(a, b):
    for key in ("property", "dtype", "status", "failure_kind", "shrunk_case", "shrunk_verdict", "reproduce"):
        assert a[key] == b[key], f"{key}: {a[key]!r} != {b[key]!r}"


def test_python_failure_replays_from_the_cli(cli, plugin, tmp_path):
    kernel = attncheck.Backend.load(str(plugin))
    report = attncheck.run(kernel, properties=[PROPERTY], dtypes=["f32"])
    found = failure_of(report.units)
    assert "Hkv=" in found["shrunk_case"] and found["reproduce"].startswith("reproduce=")
    # The reproduce command as printed, run with this build's executable.
    command = shlex.split(found["reproduce_command"])
    assert command[:3] == ["attncheck", "run", "--backend"] and command[3] == str(plugin)
    replayed = cli_run(cli, command[2:], tmp_path)
    same_failure(found, failure_of(replayed["units"]))


def test_cli_failure_replays_from_python(cli, plugin, tmp_path):
    from_cli = failure_of(cli_run(cli, ["--backend", str(plugin), "--property", f"^{PROPERTY}$", "--dtype", "f32",
                                        "--profile", "quick"], tmp_path)["units"])
    replayed = attncheck.run(attncheck.Backend.load(str(plugin)), properties=[PROPERTY], dtypes=["f32"],
                             reproduce=from_cli["reproduce"])
    same_failure(from_cli, failure_of(replayed.units))


def test_a_whole_python_run_equals_the_cli_run(cli, plugin, tmp_path):
    # Not only the replay: the search itself (cases drawn, shrinking) is the same engine.
    from_cli = cli_run(cli, ["--backend", str(plugin), "--property", f"^{PROPERTY}$|^reference-agreement$",
                             "--dtype", "f32,f16", "--profile", "quick"], tmp_path)
    from_python = attncheck.run(attncheck.Backend.load(str(plugin)), properties=f"^{PROPERTY}$|^reference-agreement$",
                                dtypes=["f32", "f16"])
    assert len(from_cli["units"]) == len(from_python.units) == 4
    for a, b in zip(from_cli["units"], from_python.units):
        for key in ("property", "dtype", "status", "cases", "skipped", "worst_ratio", "worst_case", "shrunk_case",
                    "shrunk_verdict", "reproduce", "coverage"):
            assert a[key] == b[key], f"{a['property']} {a['dtype']} {key}: {a[key]!r} != {b[key]!r}"
