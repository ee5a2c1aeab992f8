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


def same_failure(a, b, keys=("property", "dtype", "status", "failure_kind", "shrunk_case", "shrunk_verdict", "reproduce")):
    for key in keys:
        assert a[key] == b[key], f"{key}: {a[key]!r} != {b[key]!r}"
    # The first finding: its minimal case, how it failed and what explains it.
    fa, fb = a["findings"][0], b["findings"][0]
    for key in ("kind", "minimal_case", "pinned_case", "message", "diagnoses"):
        assert fa[key] == fb[key], f"findings[0].{key}: {fa[key]!r} != {fb[key]!r}"


def test_python_failure_replays_from_the_cli(cli, plugin, tmp_path):
    kernel = attncheck.Backend.load(str(plugin))
    report = attncheck.run(kernel, properties=[PROPERTY], dtypes=["f32"])
    found = failure_of(report.units)
    assert "Hkv=" in found["shrunk_case"] and found["reproduce"].startswith("reproduce=")
    # The reproduce command as printed (it pins the minimal case with --case), run with this
    # build's executable. RapidCheck's string belongs to the search, not to the pinned replay.
    command = shlex.split(found["reproduce_command"])
    assert command[:3] == ["attncheck", "run", "--backend"] and command[3] == str(plugin) and "--case" in command
    replayed = cli_run(cli, command[2:], tmp_path)
    same_failure(found, failure_of(replayed["units"]),
                 keys=("property", "dtype", "status", "failure_kind", "shrunk_case", "shrunk_verdict"))


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


def test_save_failures_writes_fixtures_that_verify_fails_on_the_kernel_and_passes_on_cpu_flash(plugin, tmp_path):
    kernel = attncheck.Backend.load(str(plugin))
    report = attncheck.run(kernel, properties=["reference-agreement"], dtypes=["f32"], save_failures=tmp_path / "saved")
    written = sorted((tmp_path / "saved").glob("*.safetensors"))
    assert written, report.saved
    assert any("saved:" in line for line in report.saved), report.saved
    # The planted bug (h % Hkv) is named by the diagnosis of the finding.
    finding = failure_of(report.units)["findings"][0]
    assert any(d["hypothesis"] == "gqa-modulo" for d in finding["diagnoses"]), finding["diagnoses"]
    on_kernel = attncheck.verify(kernel, [str(p) for p in written])
    on_healthy = attncheck.verify("cpu-flash", [str(p) for p in written])
    assert on_kernel and all(r.status == "failed" for r in on_kernel), on_kernel
    assert on_healthy and all(r.status == "passed" for r in on_healthy), on_healthy
