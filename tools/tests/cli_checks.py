#!/usr/bin/env python3
"""End-to-end checks of the `attncheck` binary, one CTest test per check.

Standard library only (xml.etree for the JUnit schema check), so CI needs no pip install.

    cli_checks.py --attncheck build/tools/attncheck/attncheck --workdir /tmp/x CHECK

Checks: exit-pass, exit-fail, exit-usage, expectations, bench, characterize-ladder, require-backend, junit-schema, sharding, list-and-help,
fixtures (generate/verify/reference and hostile files), save-failures (regression fixtures of three
mutants' findings), isolation (a crashing and a hanging plug-in;
needs --plugin CRASHING.so --plugin HANGING.so).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

# Units of a small, fast, deterministic run used by the sharding check: a few properties of
# different families times the three dtypes, on the backend that takes all three.
SHARD_PROPERTIES = "two-token|permutation|shift-invariance|linearity"
SHARD_ARGS = ["--backend", "cpu-flash", "--profile", "quick", "--cases", "5", "--property", SHARD_PROPERTIES]


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


class Runner:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir

    def path(self, name):
        return os.path.join(self.workdir, name)

    def run(self, args, env_extra=None, expect_code=None):
        env = dict(os.environ)
        for name in ("GTEST_TOTAL_SHARDS", "GTEST_SHARD_INDEX", "GTEST_SHARD_STATUS_FILE", "ATTNCHECK_SEED"):
            env.pop(name, None)  # a check sets what it needs; the caller's CTest sharding must not leak in
        env.update(env_extra or {})
        proc = subprocess.run([self.binary] + args, env=env, capture_output=True, text=True, timeout=900)
        shown = " ".join(shlex.quote(a) for a in args)
        if expect_code is not None and proc.returncode != expect_code:
            raise CheckFailed(f"`attncheck {shown}` exited {proc.returncode}, expected {expect_code}\n"
                              f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        print(f"ok: attncheck {shown} -> {proc.returncode}")
        return proc


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- JUnit schema -----------------------------------------------------------------------------------
# The constraints of the Jenkins/Surefire junit-10.xsd that dashboards rely on: element nesting,
# required attributes and their types, and counts that agree with the children.

DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$")  # ISO 8601, no zone (XSD)


def check_int(element, attribute):
    value = element.get(attribute)
    expect(value is not None, f"<{element.tag}> lacks the required attribute {attribute}")
    expect(re.fullmatch(r"[0-9]+", value) is not None, f"<{element.tag} {attribute}='{value}'> is not a count")
    return int(value)


def validate_junit(path):
    """Validates a JUnit file; returns (tests, failures, skipped) of the whole file."""
    root = ET.parse(path).getroot()
    expect(root.tag == "testsuites", f"{path}: root is <{root.tag}>, expected <testsuites>")
    totals = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
    for suite in root:
        expect(suite.tag == "testsuite", f"{path}: <testsuites> holds <{suite.tag}>")
        for attribute in ("name", "timestamp", "hostname", "id", "package", "time"):
            expect(suite.get(attribute) is not None, f"{path}: <testsuite> lacks {attribute}")
        expect(TIMESTAMP.match(suite.get("timestamp")), f"{path}: bad timestamp {suite.get('timestamp')}")
        expect(DECIMAL.match(suite.get("time")), f"{path}: bad time {suite.get('time')}")
        counted = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
        order = [child.tag for child in suite]
        expect(order[:1] == ["properties"], f"{path}: <testsuite> must start with <properties>, has {order[:1]}")
        expect(order[-2:] == ["system-out", "system-err"], f"{path}: <testsuite> must end with system-out, system-err")
        for prop in suite.find("properties"):
            expect(prop.tag == "property" and prop.get("name") is not None and prop.get("value") is not None,
                   f"{path}: malformed <property>")
        for case in suite.findall("testcase"):
            counted["tests"] += 1
            for attribute in ("name", "classname", "time"):
                expect(case.get(attribute) is not None, f"{path}: <testcase> lacks {attribute}")
            expect(case.get("classname") == suite.get("name"),
                   f"{path}: classname {case.get('classname')} is not its suite's name {suite.get('name')}")
            expect(DECIMAL.match(case.get("time")), f"{path}: bad testcase time {case.get('time')}")
            kinds = [child.tag for child in case]
            expect(len(kinds) <= 1 and set(kinds) <= {"failure", "skipped", "error"},
                   f"{path}: <testcase {case.get('name')}> holds {kinds}")
            for child in case:
                if child.tag == "failure":
                    counted["failures"] += 1
                    expect(child.get("message") is not None and child.get("type") is not None,
                           f"{path}: <failure> lacks message or type")
                elif child.tag == "skipped":
                    counted["skipped"] += 1
        for key in counted:
            expect(check_int(suite, key) == counted[key],
                   f"{path}: testsuite {suite.get('name')} says {key}={suite.get(key)}, children say {counted[key]}")
            totals[key] += counted[key]
    for key in totals:
        expect(check_int(root, key) == totals[key], f"{path}: testsuites says {key}={root.get(key)}, sum is {totals[key]}")
    return totals["tests"], totals["failures"], totals["skipped"]


# --- checks -------------------------------------------------------------------------------------------

def check_exit_pass(r):
    proc = r.run(["run", "--backend", "cpu-naive", "--profile", "quick", "--property", "two-token", "--dtype", "f32"],
                 expect_code=0)
    expect(proc.stdout.startswith("Using seed="), f"the first line is not the seed: {proc.stdout[:80]!r}")
    expect("\r" not in proc.stdout and "\x1b[" not in proc.stdout, "progress or colour codes in a non-TTY log")


def check_exit_fail(r):
    report = r.path("fail.json")
    # head-independence catches this mutant with the default seed in the quick profile (a kv head
    # read through h % Hkv belongs to another group); gqa-equivalence draws too few grouped
    # problems with Hkv >= 2 in 30 cases to catch it at this seed.
    proc = r.run(["run", "--backend", "mutant-gqa-modulo", "--profile", "quick", "--property", "head-independence",
                  "--dtype", "f32", "--json", report], expect_code=1)
    units = load(report)["units"]
    failed = [u for u in units if u["status"] == "failed"]
    expect(len(failed) == 1, f"expected one failed unit, report has {[u['status'] for u in units]}")
    unit = failed[0]
    expect(unit["shrunk_case"], "the failure has no shrunk case")
    expect(unit["reproduce_command"].startswith("attncheck run --backend mutant-gqa-modulo"),
           f"unexpected reproduce command: {unit['reproduce_command']}")
    expect(unit["reproduce_command"] in proc.stdout, "the console does not print the reproduce command")
    expect(unit["shrunk_case"] in proc.stdout, "the console does not print the shrunk case")
    # The printed command must replay the failure by itself, down to the same shrunk case.
    args = shlex.split(unit["reproduce_command"])[1:] + ["--json", r.path("replay.json")]
    r.run(args, expect_code=1)
    replay = [u for u in load(r.path("replay.json"))["units"] if u["status"] == "failed"]
    expect(len(replay) == 1 and replay[0]["shrunk_case"] == unit["shrunk_case"],
           f"the replay did not reproduce the shrunk case {unit['shrunk_case']!r}")
    # The same command on a correct kernel replays the same case, which passes there (exit 0): how
    # a finding is confirmed to be the kernel's and not the suite's.
    on_flash = [a if a != "mutant-gqa-modulo" else "cpu-flash" for a in shlex.split(unit["reproduce_command"])[1:]]
    r.run(on_flash + ["--json", r.path("replay-cpu-flash.json")], expect_code=0)
    passed = [u for u in load(r.path("replay-cpu-flash.json"))["units"] if u["status"] == "passed"]
    expect(len(passed) == 1, "the replay on cpu-flash did not pass its one unit")


def check_accuracy(r):
    # --accuracy-factor 0 measures and reports without gating: the JSON carries the factor and
    # every judged unit its worst accuracy ratio; the console names the ratio.
    report = r.path("accuracy.json")
    proc = r.run(["run", "--backend", "cpu-naive", "--profile", "quick", "--property", "^reference-agreement$",
                  "--dtype", "f32", "--cases", "5", "--accuracy-factor", "0", "--json", report], expect_code=0)
    data = load(report)
    expect(data["run"]["accuracy_factor"] == 0, f"run.accuracy_factor is {data['run'].get('accuracy_factor')!r}")
    unit = data["units"][0]
    expect(isinstance(unit["worst_accuracy_ratio"], (int, float)), f"worst_accuracy_ratio: {unit['worst_accuracy_ratio']!r}")
    expect(unit["worst_guaranteed_relative_accuracy"] > 0, "no guaranteed relative accuracy in the report")
    expect("accuracy ratio" in proc.stdout, "the console does not show the accuracy ratio")
    # Without the option nothing is measured: the field is null.
    r.run(["run", "--backend", "cpu-naive", "--profile", "quick", "--property", "^reference-agreement$",
           "--dtype", "f32", "--cases", "5", "--json", report], expect_code=0)
    expect(load(report)["units"][0]["worst_accuracy_ratio"] is None, "accuracy measured without --accuracy-factor")
    # A factor no real kernel meets (its fp32 error is not a millionth of the baseline's) fails the
    # unit as an accuracy failure, told apart from a conformance one in JSON, JUnit and text.
    junit = r.path("accuracy.xml")
    proc = r.run(["run", "--backend", "cpu-naive", "--profile", "quick", "--property", "^reference-agreement$",
                  "--dtype", "f32", "--cases", "5", "--accuracy-factor", "1e-6", "--json", report, "--junit", junit],
                 expect_code=1)
    unit = load(report)["units"][0]
    expect(unit["status"] == "failed" and unit["failure_kind"] == "accuracy",
           f"expected an accuracy failure, got {unit['status']} / {unit.get('failure_kind')!r}")
    expect("accuracy (not conformance)" in proc.stdout, "the console does not say it is an accuracy failure")
    failure = ET.parse(junit).getroot().find(".//failure")
    expect(failure is not None and failure.get("type") == "accuracy", "JUnit failure type is not 'accuracy'")
    # characterize: a small grid passes with the default factor 2; its JSON lists every case.
    grid = r.path("grid.json")
    proc = r.run(["characterize", "--backend", "cpu-flash", "--dtype", "f32", "--lq", "2", "--lk", "64",
                  "--head-dim", "16", "--json", grid, "--only", "grid"], expect_code=0)
    cases = load(grid)["cases"]
    expect(len(cases) == 4 and all(c["passed"] for c in cases), f"characterize cases: {cases}")
    expect(all(c["accuracy_max_ratio"] <= 2 for c in cases), "a healthy kernel above the accuracy factor")
    expect(load(grid)["accuracy_factor"] == 2, "characterize's default factor is not 2")
    r.run(["characterize", "--backend", "cpu-flash", "--dtype", "f32", "--lq", "2", "--lk", "64", "--head-dim", "16",
           "--accuracy-factor", "1e-6", "--only", "grid"], expect_code=1)
    r.run(["characterize", "--backend", "cpu-flash", "--dtype", "f8"], expect_code=2)
    r.run(["run", "--backend", "cpu-naive", "--accuracy-factor", "-1"], expect_code=2)


def check_characterize_ladder(r):
    # The profile ladder names the stages a kernel rounds at. The emulated kernels round at
    # exactly the stages they are built with (backends/emulated/README.md), so the expected rung
    # of each comes from its construction: emu-fp32 rounds in fp32 only (rung 1); emu-bf16-p
    # rounds P to bf16 (rung 4, and it must break rung 3, fp16 P); emu-ggml's short-query path
    # rounds Q, K, V and P to fp16 and sums P·V in fp16 (rung 5, breaking rung 4). The P·V-in-half
    # mutant declares fp32 (so its declared row fails, exit 1) and behaves like rung 5.
    for backend, satisfied, code in [("emu-fp32", 0, 0), ("emu-bf16-p", 3, 0), ("emu-ggml", 4, 0),
                                     ("mutant-pv-in-half", 4, 1)]:
        path = r.path(f"ladder-{backend}.json")
        proc = r.run(["characterize", "--backend", backend, "--dtype", "f32", "--only", "ladder", "--json", path],
                     expect_code=code)
        ladder = load(path)["ladder"]
        expect(ladder["ran"] == 60 and ladder["errors"] == 0, f"{backend}: not every ladder case ran: {ladder}")
        expect(ladder["satisfied"] == satisfied,
               f"{backend}: satisfies rung {ladder['satisfied']}, expected {satisfied}: {ladder['rungs']}")
        rungs = ladder["rungs"]
        expect(all(g["passed"] == g["judged"] for g in rungs[satisfied:]), f"{backend}: a looser rung fails: {rungs}")
        if satisfied > 0:
            expect(ladder["breaks"] == satisfied - 1 and rungs[satisfied - 1]["passed"] < rungs[satisfied - 1]["judged"],
                   f"{backend}: the next tighter rung is not broken: {rungs}")
            expect(f"breaks {satisfied}. {rungs[satisfied - 1]['name']}" in proc.stdout,
                   f"{backend}: the console does not name the broken rung:\n{proc.stdout}")
        expect(f"behaves like: {satisfied + 1}. {rungs[satisfied]['name']}" in proc.stdout,
               f"{backend}: the console does not name the rung:\n{proc.stdout}")
        declared = ladder["declared"]
        expect((declared["passed"] == declared["judged"]) == (code == 0),
               f"{backend}: the declared row disagrees with the exit status: {declared}")


def check_bench(r):
    # Several backends side by side on the same validated inputs: a row per backend and dtype, the
    # first backend's ratio 1.00x, a dtype a backend lacks skipped, and a wrong kernel gets no
    # time (the scale mutant fails validation, exit 1).
    proc = r.run(["bench", "--backend", "cpu-flash", "--backend", "cpu-naive", "--dtype", "f32,bf16",
                  "--shape", "1,2,64,16", "--repeats", "1"], expect_code=0)
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    expect(any(row[:3] == ["f32", "1,2,64,16", "cpu-flash"] and row[5] == "1.00x" for row in rows),
           f"no cpu-flash row with ratio 1.00x:\n{proc.stdout}")
    expect(any(row[:3] == ["f32", "1,2,64,16", "cpu-naive"] and row[5].endswith("x") for row in rows),
           f"no cpu-naive row with a ratio:\n{proc.stdout}")
    expect("cpu-naive              skipped: no bf16 inputs" in proc.stdout, f"bf16 on cpu-naive not skipped:\n{proc.stdout}")
    proc = r.run(["bench", "--backend", "cpu-flash", "--backend", "mutant-scale-one-over-d", "--dtype", "f32",
                  "--shape", "1,2,64,16", "--repeats", "1"], expect_code=1)
    expect("mutant-scale-one-over-d FAILED: validation" in re.sub(" +", " ", proc.stdout),
           f"the wrong kernel was timed:\n{proc.stdout}")
    r.run(["bench", "--backend", "cpu-flash", "--dtype", "f32,f8"], expect_code=2)


def check_expectations(r):
    # A kernel with a known bug gates CI through an expectation file: the window-exclusive mutant
    # fails a known set of properties (measured by the first run, not assumed); a file listing
    # exactly those exits 0; a file missing one (a new failure) or listing a passing property (a
    # fixed bug) exits 1 and names the unit; a malformed file is a usage error.
    base = ["run", "--backend", "mutant-window-exclusive", "--profile", "quick", "--dtype", "f32,f16",
            "--property", "identity-values|convexity|two-token|permutation"]
    r.run(base + ["--json", r.path("measured.json")], expect_code=1)
    units = load(r.path("measured.json"))["units"]
    failing = sorted({u["property"] for u in units if u["status"] == "failed"})
    passing = sorted({u["property"] for u in units if u["status"] == "passed"} - set(failing))
    expect(failing and passing, f"the check needs failing and passing properties, got {failing} / {passing}")

    def write(name, entries, backend="mutant-window-exclusive"):
        path = r.path(name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"format": "attncheck-expectations", "version": 1, "backend": backend, "units": entries}, f)
        return path

    def verdicts(proc):  # the expectation lines only: unit lines above them name every unit too
        return proc.stdout[proc.stdout.rindex("\nexpectations "):]

    def failure(prop, dtype="*"):
        return {"property": prop, "dtype": dtype, "expect": "fail", "reason": "window bounds exclusive",
                "link": "backends/mutants/README.md"}

    skip_f16 = {"property": "*", "dtype": "f16", "expect": "skip", "reason": "the mutant is f32 only"}
    exact = write("exact.json", [failure(p, "f32") for p in failing] + [skip_f16])
    proc = r.run(base + ["--expect", exact], expect_code=0)
    f16_units = sum(1 for u in units if u["dtype"] == "f16")
    expect(f"({len(failing)} expected failures, {f16_units} expected skips)" in verdicts(proc),
           f"the expected failures and skips are not counted:\n{proc.stdout}")

    missing = write("missing.json", [failure(p, "f32") for p in failing[1:]] + [skip_f16])
    proc = r.run(base + ["--expect", missing], expect_code=1)
    expect(f"{failing[0]} f32: expected to pass, but it failed" in verdicts(proc),
           f"the new failure is not named:\n{proc.stdout}")

    fixed = write("fixed.json", [failure(p, "f32") for p in failing] + [skip_f16, failure(passing[0], "f32")])
    proc = r.run(base + ["--expect", fixed], expect_code=1)
    expect(f"{passing[0]} f32: expected to fail (window bounds exclusive), but it passed: if the bug is fixed, "
           "remove the entry" in verdicts(proc), f"the passing expected failure is not named:\n{proc.stdout}")

    # The most specific entry wins: a property's own entry over the blanket "*" "*" one.
    specific = write("specific.json", [{"property": "*", "dtype": "*", "expect": "skip", "reason": "blanket"},
                                       {"property": passing[0], "dtype": "f32", "expect": "pass"}] +
                     [failure(p, "*") for p in failing])
    proc = r.run(base + ["--expect", specific], expect_code=1)
    expect(f"{passing[0]} f32" not in verdicts(proc), "the property's own entry did not win over the blanket one")
    expect(f"{failing[0]} f32" not in verdicts(proc), "the property-wide failure entry did not decide the f32 unit")
    expect(f"{failing[0]} f16: expected to fail (window bounds exclusive), but it was skipped" in verdicts(proc),
           f"a property-wide entry did not decide the f16 unit:\n{proc.stdout}")
    for other in passing[1:]:
        expect(f"{other} f32: expected to be skipped (blanket), but it passed" in verdicts(proc),
               f"the blanket entry did not decide {other}:\n{proc.stdout}")

    for name, entries, backend, message in [
        ("unknown.json", [failure("no-such-property")], "mutant-window-exclusive", "property 'no-such-property' does not exist"),
        ("nolink.json", [{"property": failing[0], "dtype": "*", "expect": "fail", "reason": "x"}],
         "mutant-window-exclusive", "needs a 'link'"),
        ("twice.json", [failure(failing[0]), failure(failing[0])], "mutant-window-exclusive", "a second entry"),
        ("other.json", [], "cpu-flash", "is for backend cpu-flash"),
    ]:
        proc = r.run(base + ["--expect", write(name, entries, backend)], expect_code=2)
        expect(message in proc.stderr, f"{name}: the error does not say '{message}':\n{proc.stderr}")


def check_exit_usage(r):
    base = ["run", "--profile", "quick", "--property", "two-token", "--dtype", "f32"]
    cases = {
        "unknown backend": ["run", "--backend", "no-such-backend"],
        "missing plug-in": ["run", "--backend", r.path("missing/libnothing.so")],
        "bad property regex": ["run", "--backend", "cpu-naive", "--property", "("],
        "property regex matching nothing": ["run", "--backend", "cpu-naive", "--property", "^no-such-property$"],
        "bad problem regex": base + ["--backend", "cpu-naive", "--problem", "[unclosed"],
        "unwritable junit path": base + ["--backend", "cpu-naive", "--junit", r.path("no/such/dir/out.xml")],
        "unwritable json path": base + ["--backend", "cpu-naive", "--json", "/proc/attncheck.json"],
        "bad shard": base + ["--backend", "cpu-naive", "--shard", "4/4"],
        "bad dtype": base + ["--backend", "cpu-naive", "--dtype", "f8"],
        "unknown profile": ["run", "--backend", "cpu-naive", "--profile", "slow"],
        "missing backend flag": ["run"],
        "unknown subcommand": ["frobnicate"],
        "bad list target": ["list", "widgets"],
    }
    for name, args in cases.items():
        proc = r.run(args, expect_code=2)
        expect(proc.stderr.strip(), f"{name}: exit 2 without a message on stderr")
    proc = r.run(["run", "--backend", "cpu-naive"], env_extra={"GTEST_TOTAL_SHARDS": "2"}, expect_code=2)
    expect("GTEST_SHARD_INDEX" in proc.stderr, f"half-set gtest sharding not explained: {proc.stderr}")


def check_require_backend(r):
    # f64 inputs: no built-in CPU backend declares them, so every unit is skipped, exactly like a
    # GPU backend on a machine without a GPU.
    args = ["run", "--backend", "cpu-naive", "--profile", "quick", "--property", "two-token", "--dtype", "f64",
            "--json", r.path("skipped.json")]
    r.run(args, expect_code=0)
    units = load(r.path("skipped.json"))["units"]
    expect(units and all(u["status"] == "skipped" for u in units), f"expected only skips: {units}")
    proc = r.run(args + ["--require-backend"], expect_code=2)
    expect("skipped" in proc.stderr, f"--require-backend failure not explained: {proc.stderr}")

    # A filter that admits nothing is said to be the filter's doing, not the backend's.
    proc = r.run(["run", "--backend", "cpu-naive", "--profile", "quick", "--property", "^reference-agreement$",
                  "--dtype", "f32", "--problem", "Hq=12345 "], expect_code=0)
    unit_line = next((line for line in proc.stdout.splitlines() if line.startswith("[1/1]")), "")
    expect("matched none" in unit_line and "declined" not in unit_line,
           f"an empty --problem filter was not explained: {proc.stdout}")

    # A GPU backend on a machine without a GPU: every case declined with the backend's own reason,
    # nothing counted as covered, one closing line saying so; --require-backend makes it exit 2.
    listed = r.run(["list", "backends"], expect_code=0).stdout
    if "cuda-flash " in listed and not os.path.exists("/dev/nvidia0"):
        args = ["run", "--backend", "cuda-flash", "--profile", "quick", "--property", "^reference-agreement$"]
        proc = r.run(args, expect_code=0)
        expect("no CUDA device: " in proc.stdout, f"the backend's own reason is missing: {proc.stdout}")
        expect(".cpp:" not in proc.stdout, f"a source location leaked into the output: {proc.stdout}")
        expect("coverage: 0 of " in proc.stdout, f"coverage claimed cells nothing reached: {proc.stdout}")
        expect("declined every drawn case" in proc.stdout, f"no closing line about the declines: {proc.stdout}")
        r.run(args + ["--require-backend"], expect_code=2)


def check_junit_schema(r):
    # A real run with passes, a failure and skips (f64 is declined by every built-in backend), on
    # small problems: the quick profile's 30 cases catch this mutant by case 12 (the first cases
    # are steered through the coverage cells, MHA among them), drawn without a size class.
    junit = r.path("mixed.xml")
    r.run(["run", "--backend", "mutant-gqa-modulo", "--profile", "quick", "--size-class", "small", "--cases", "30", "--property",
           "head-independence|two-token", "--dtype", "f32,f64", "--junit", junit, "--json", r.path("mixed.json")],
          expect_code=1)
    tests, failures, skipped = validate_junit(junit)
    report = load(r.path("mixed.json"))
    statuses = [u["status"] for u in report["units"]]
    expect((tests, failures, skipped) == (len(statuses), statuses.count("failed"), statuses.count("skipped")),
           f"JUnit counts {(tests, failures, skipped)} disagree with the JSON statuses {statuses}")
    expect(failures >= 1 and skipped >= 1, f"the mixed run should fail and skip something: {statuses}")

    # Hostile text through the writer: markup, quotes, "]]>", control characters, non-ASCII and
    # invalid UTF-8 must come out as well-formed XML that reads back as the same text.
    report["units"][0]["status"] = "failed"
    nasty = "a<b>&c \"q\" 'p' ]]> τ≤1\nnext line\ttab"
    report["units"][0]["message"] = nasty + "\x01"
    report["units"][0]["property"] = "prop<&>\"'"
    with open(r.path("nasty.json"), "w", encoding="utf-8") as f:
        json.dump(report, f)
    r.run(["merge", r.path("nasty-merged.json"), r.path("nasty.json"), "--junit", r.path("nasty.xml")], expect_code=1)
    validate_junit(r.path("nasty.xml"))
    root = ET.parse(r.path("nasty.xml")).getroot()
    case = next(c for c in root.iter("testcase") if c.get("name") == "prop<&>\"'")
    failure = case.find("failure")
    expect(failure.get("message") == "a<b>&c \"q\" 'p' ]]> τ≤1", f"message attribute: {failure.get('message')!r}")
    expect(nasty + "\ufffd" in failure.text, f"failure text lost characters: {failure.text!r}")


def unit_key(unit):
    return (unit["index"], unit["property"], unit["dtype"])


def comparable(unit):
    # Everything a shard must reproduce exactly; wall time naturally differs.
    return {k: v for k, v in unit.items() if k != "seconds"}


def check_sharding(r):
    whole = r.path("whole.json")
    r.run(["run"] + SHARD_ARGS + ["--json", whole], expect_code=0)
    whole_units = load(whole)["units"]
    expect(len(whole_units) >= 8, f"the unsplit run has only {len(whole_units)} units; the check needs several per shard")

    shard_files = []
    for i in range(4):
        path = r.path(f"shard{i}.json")
        shard_files.append(path)
        if i < 2:  # half through the flag, half through GoogleTest's variables
            r.run(["run"] + SHARD_ARGS + ["--shard", f"{i}/4", "--json", path], expect_code=0)
        else:
            status = r.path(f"shard{i}.status")
            r.run(["run"] + SHARD_ARGS + ["--json", path],
                  env_extra={"GTEST_TOTAL_SHARDS": "4", "GTEST_SHARD_INDEX": str(i), "GTEST_SHARD_STATUS_FILE": status},
                  expect_code=0)
            expect(os.path.exists(status), "GTEST_SHARD_STATUS_FILE was not created")

    seen = {}
    for i, path in enumerate(shard_files):
        report = load(path)
        expect(report["run"]["shard"] == {"index": i, "count": 4}, f"{path}: shard metadata {report['run']['shard']}")
        for unit in report["units"]:
            key = unit_key(unit)
            expect(key not in seen, f"unit {key} ran in shard {seen.get(key)} and shard {i}")
            seen[key] = i
    expect(set(seen) == {unit_key(u) for u in whole_units},
           f"shards cover {sorted(seen)}, the unsplit run {sorted(unit_key(u) for u in whole_units)}")

    merged = r.path("merged.json")
    r.run(["merge", merged] + list(reversed(shard_files)) + ["--junit", r.path("merged.xml")], expect_code=0)
    merged_units = load(merged)["units"]
    expect([comparable(u) for u in merged_units] == [comparable(u) for u in whole_units],
           "the merged shards differ from the unsplit run")
    validate_junit(r.path("merged.xml"))

    # Overlapping and inconsistent shards are refused.
    r.run(["merge", r.path("bad.json"), shard_files[0], shard_files[0]], expect_code=2)
    r.run(["merge", r.path("bad.json"), shard_files[0], shard_files[1]], expect_code=2)  # shards 2, 3 missing
    other = load(shard_files[1])
    other["run"]["seed"] += 1
    with open(r.path("other-seed.json"), "w", encoding="utf-8") as f:
        json.dump(other, f)
    r.run(["merge", r.path("bad.json"), shard_files[0], r.path("other-seed.json"), shard_files[2], shard_files[3]],
          expect_code=2)


def check_list_and_help(r):
    backends = r.run(["list", "backends"], expect_code=0).stdout
    expect(re.search(r"^cpu-naive\s+built-in\s+CPU\s", backends, re.M), f"cpu-naive missing from:\n{backends}")
    expect(re.search(r"^cuda-flash@host\s+built-in\s+simulated-device:0\s", backends, re.M),
           f"cuda-flash@host is not listed on the simulated device:\n{backends}")
    props = r.run(["list", "properties"], expect_code=0).stdout
    expect(re.search(r"^gqa-equivalence\s+independence\s+\S", props, re.M), f"gqa-equivalence missing from:\n{props}")
    profiles = r.run(["list", "profiles"], expect_code=0).stdout
    for name in ("quick", "standard", "exhaustive"):
        expect(re.search(rf"^{name}\s+\d+\s+\d+$", profiles, re.M), f"profile {name} missing from:\n{profiles}")
    for sub in ([], ["run"], ["merge"], ["list"]):
        text = r.run(sub + ["--help"], expect_code=0).stdout
        expect("Examples:" in text, f"`attncheck {' '.join(sub)} --help` has no examples")
    expect(r.run(["--version"], expect_code=0).stdout.startswith("attncheck "), "--version")


def check_fixtures(r):
    gen_a, gen_b = r.path("golden-a"), r.path("golden-b")
    r.run(["generate", "--suite", "golden", "--out", gen_a], expect_code=0)
    r.run(["generate", "--suite", "golden", "--out", gen_b], expect_code=0)
    names = sorted(os.listdir(gen_a))
    expect(names and names == sorted(os.listdir(gen_b)), "two generate runs wrote different file sets")
    for name in names:
        with open(os.path.join(gen_a, name), "rb") as a, open(os.path.join(gen_b, name), "rb") as b:
            expect(a.read() == b.read(), f"generate is not deterministic: {name} differs between two runs")
    expect(not any(n.startswith(".") or n.endswith(".tmp") for n in names), f"temporary files left behind: {names}")
    # The specification's bytes do not depend on the machine (reference/README.md): the baseline
    # build of the reference's kernels writes exactly the committed golden set, and an ISA name
    # the tool does not know is a usage error naming the choices.
    golden = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "golden")
    gen_base = r.path("golden-baseline")
    r.run(["generate", "--suite", "golden", "--reference-isa", "baseline", "--out", gen_base], expect_code=0)
    for name in names:
        with open(os.path.join(gen_base, name), "rb") as a, open(os.path.join(golden, name), "rb") as b:
            expect(a.read() == b.read(), f"generate --reference-isa baseline: {name} differs from fixtures/golden")
    err = r.run(["generate", "--reference-isa", "sse9", "--out", r.path("golden-none")], expect_code=2).stderr
    expect("auto, baseline, avx2, avx512" in err, f"an unknown ISA was not refused with the choices:\n{err}")
    out = r.run(["verify", "--backend", "cpu-flash", "--direction", "forward", gen_a], expect_code=0).stdout
    # Every fixture's forward passes but the layer with torch's kdim/vdim, which the layer ABI
    # cannot take: that one is a skip that says why.
    expect(f"{len(names) - 1} passed, 0 failed, 1 skipped" in out, f"verify did not pass every fixture:\n{out}")
    expect(re.search(r"^SKIP layer_cross_kdim_vdim_f32\.safetensors .*kdim/vdim", out, re.M),
           f"the kdim/vdim layer was not skipped with its reason:\n{out}")

    # The hand-derived toy cases verify from the command line too, in every dtype, by directory
    # or by file, judged against the values the files state.
    toy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "toy")
    toys = sorted(n for n in os.listdir(toy) if n.endswith(".json"))
    out = r.run(["verify", "--backend", "cpu-flash", "--direction", "forward", toy], expect_code=0).stdout
    expect(f"{3 * len(toys)} passed, 0 failed" in out, f"verify did not pass every toy case in 3 dtypes:\n{out}")
    out = r.run(["verify", "--backend", "mutant-transposed-axes", os.path.join(toy, "layout_trap.json")], expect_code=1).stdout
    expect("FAIL layout_trap.json (f32)" in out, f"the layout trap did not catch the transposed-axes mutant:\n{out}")

    # verify hands each tensor over in the layout the fixture records (layout_blhd_f32: [B, L, H, D]),
    # so a kernel that assumes compact [B, H, L, D] fails that file while it passes a compact one.
    blhd, compact = os.path.join(gen_a, "layout_blhd_f32.safetensors"), os.path.join(gen_a, "mha_f32.safetensors")
    out = r.run(["verify", "--backend", "mutant-ignores-strides", blhd], expect_code=1).stdout
    expect("FAIL layout_blhd_f32.safetensors" in out, f"verify did not hand over the recorded [B, L, H, D] layout:\n{out}")
    out = r.run(["verify", "--backend", "mutant-ignores-strides", compact], expect_code=0).stdout
    expect("PASS mha_f32.safetensors" in out, f"the strides mutant should pass a compact fixture:\n{out}")

    source = os.path.join(gen_a, "mha_f32.safetensors")
    with open(source, "rb") as f:
        good = f.read()
    header_len = int.from_bytes(good[:8], "little")
    header = json.loads(good[8:8 + header_len])
    lying = dict(header)
    lying["q"] = dict(header["q"], data_offsets=[0, len(good) * 4])  # past the end of the data
    lying_json = json.dumps(lying).encode()
    lying_json += b" " * (-len(lying_json) % 8)
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    hostile = {
        "truncated": good[: len(good) // 2],
        "lying-header": len(lying_json).to_bytes(8, "little") + lying_json + good[8 + header_len:],
        "huge-header-length": (1 << 63).to_bytes(8, "little") + good[8:],
        "flipped-byte": bytes(flipped),
    }
    for kind, data in hostile.items():
        path = r.path(f"{kind}.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        proc = r.run(["verify", "--backend", "cpu-flash", path], expect_code=2)
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        expect(len(lines) == 1 and path in lines[0], f"{kind}: expected one error line naming the file, got {lines}")
        print(f"   {kind}: {lines[0]}")

    regression = r.path("regression.safetensors")
    r.run(["reference", source, "-o", regression], expect_code=0)
    out = r.run(["verify", "--backend", "cpu-naive", regression], expect_code=0).stdout
    expect("1 passed" in out, f"the regression fixture written by `reference` did not verify:\n{out}")


# Mutants whose findings disagree with the reference: a regression fixture's stored outputs alone
# fail each of them.
SAVE_FAILURE_MUTANTS = ["mutant-window-exclusive", "mutant-causal-off-by-one", "mutant-gqa-modulo"]


def check_save_failures(r):
    for mutant in SAVE_FAILURE_MUTANTS:
        saved = r.path(os.path.join("saved", mutant))  # two levels that do not exist yet
        args = ["run", "--backend", mutant, "--profile", "quick", "--save-failures", saved]
        out = r.run(args, expect_code=1).stdout
        files = sorted(os.listdir(saved))
        expect(files, f"{mutant}: the failing run wrote no regression fixture:\n{out}")
        for name in files:
            expect(re.fullmatch(r"[a-z0-9-]+-f32-[0-9]+\.safetensors", name), f"{mutant}: {name} is not <property>-<dtype>-<n>")
            expect(f"saved: {os.path.join(saved, name)} (" in out, f"{mutant}: the run did not say it wrote {name}:\n{out}")
        expect(f"{len(files)} regression fixture(s) written to {saved}" in out, f"{mutant}: no summary of the files:\n{out}")
        # The same run again finds the same failures: the files are left as they are, none added.
        again = r.run(args, expect_code=1).stdout
        expect(sorted(os.listdir(saved)) == files, f"{mutant}: a rerun changed the file set: {os.listdir(saved)}")
        expect(f"0 regression fixture(s) written to {saved} ({len(files)} already there, unchanged)" in again,
               f"{mutant}: a rerun did not leave the files unchanged:\n{again}")
        out = r.run(["verify", "--backend", mutant, saved], expect_code=1).stdout
        expect(f"0 passed, {len(files)} failed" in out, f"{mutant}: not every saved fixture fails the mutant:\n{out}")
        out = r.run(["verify", "--backend", "cpu-flash", saved], expect_code=0).stdout
        expect(f"{len(files)} passed, 0 failed" in out, f"{mutant}: cpu-flash does not pass every saved fixture:\n{out}")
    # Another backend's finding of the same property never overwrites a kept file: it takes the next number.
    shared = r.path(os.path.join("saved", SAVE_FAILURE_MUTANTS[2]))
    kept = os.path.join(shared, "reference-agreement-f32-1.safetensors")
    with open(kept, "rb") as f:
        kept_bytes = f.read()
    before = set(os.listdir(shared))
    r.run(["run", "--backend", SAVE_FAILURE_MUTANTS[0], "--profile", "quick", "--property", "^reference-agreement$",
           "--save-failures", shared], expect_code=1)
    added = set(os.listdir(shared)) - before
    expect(len(added) == 1 and re.fullmatch(r"reference-agreement-f32-([2-9]|[1-9][0-9]+)\.safetensors", next(iter(added))),
           f"the other backend's finding was not written under the next free number: {sorted(added)}")
    with open(kept, "rb") as f:
        expect(f.read() == kept_bytes, "a kept regression fixture was overwritten")

    # A directory that cannot be made is a usage error before anything runs, naming the path and why.
    blocker = r.path("a-file")
    with open(blocker, "w", encoding="utf-8") as f:
        f.write("not a directory\n")
    target = os.path.join(blocker, "sub")
    proc = r.run(["run", "--backend", "cpu-flash", "--property", "^two-token", "--save-failures", target], expect_code=2)
    expect(f"--save-failures '{target}'" in proc.stderr and "Not a directory" in proc.stderr,
           f"an impossible directory was not refused with its path and the system's reason:\n{proc.stderr}")
    expect("running" not in proc.stdout, f"the run started before the directory was checked:\n{proc.stdout}")


def check_isolation(r):
    expect(len(r.plugins) == 2, "the isolation check needs --plugin CRASHING.so --plugin HANGING.so")
    crashing, hanging = r.plugins
    report = r.path("crash.json")
    proc = r.run(["run", "--backend", crashing, "--profile", "quick", "--dtype", "f32", "--timeout", "2",
                  "--json", report], expect_code=1)
    units = load(report)["units"]
    names = [u["property"] for u in units]
    listing = r.run(["list", "properties"], expect_code=0).stdout.splitlines()[1:]
    f32_properties = [line for line in listing if not line.endswith("(fp8 inputs: --dtype e4m3,e5m2)")]
    expect(len(units) == len(f32_properties), f"the report lost units: {names}")
    crashed = [u for u in units if u["status"] == "failed" and "SIGSEGV" in u["message"]]
    passed = [u for u in units if u["status"] == "passed"]
    expect(crashed, "no unit reports the plug-in's SIGSEGV")
    expect(passed, "no unit passed: the crash was not confined to its cases")
    expect(all(u["shrunk_case"] and "Lk=1" in u["shrunk_case"] for u in crashed),
           f"a crash did not shrink to its trigger (Lk = 1): {[u['shrunk_case'] for u in crashed]}")
    expect("SIGSEGV" in proc.stdout, "the console does not name the signal")

    proc = r.run(["run", "--backend", hanging, "--profile", "quick", "--dtype", "f32", "--property", "reference-agreement",
                  "--timeout", "1"], expect_code=1)
    expect("did not return within 1 s" in proc.stdout, f"the hang is not reported as one:\n{proc.stdout}")


def check_direction(r):
    # --direction on verify, run and bench (tools/README.md): which passes are judged or timed.
    here = os.path.dirname(os.path.abspath(__file__))
    golden = os.path.join(here, "..", "..", "fixtures", "golden")
    toy = os.path.join(here, "..", "..", "fixtures", "toy")
    backward_file, forward_file = (os.path.join(golden, n) for n in ("backward_mha_f32.safetensors", "mha_f32.safetensors"))
    # verify, default both: a backward fixture gets a forward and a backward verdict; cpu-naive's
    # fp32 backward passes it.
    out = r.run(["verify", "--backend", "cpu-naive", backward_file], expect_code=0).stdout
    expect(re.search(r"^PASS backward_mha_f32\.safetensors  ", out, re.M) and
           re.search(r"^PASS backward_mha_f32\.safetensors \(backward\)  passed", out, re.M),
           f"verify did not judge both passes of a backward fixture:\n{out}")
    expect("2 passed, 0 failed, 0 skipped" in out, f"verify's count is not one per pass:\n{out}")
    out = r.run(["verify", "--backend", "cpu-naive", "--direction", "forward", backward_file], expect_code=0).stdout
    expect("(backward)" not in out and "1 passed, 0 failed, 0 skipped" in out, f"--direction forward judged the backward:\n{out}")
    out = r.run(["verify", "--backend", "cpu-naive", "--direction", "backward", backward_file, forward_file],
                expect_code=0).stdout
    expect(re.search(r"^PASS backward_mha_f32\.safetensors \(backward\)", out, re.M) and
           re.search(r"^SKIP mha_f32\.safetensors \(backward\)  holds no backward tensors", out, re.M) and
           "1 passed, 0 failed, 1 skipped" in out, f"--direction backward did not account for every file:\n{out}")
    # A backend without a backward pass skips the backward with the reason; its forward is judged.
    out = r.run(["verify", "--backend", "emu-ggml", backward_file], expect_code=0).stdout
    expect(re.search(r"^SKIP backward_mha_f32\.safetensors \(backward\)  emu-ggml has no backward pass", out, re.M),
           f"a backend without backward was not skipped with the reason:\n{out}")
    # The backward toy cases, by file: judged in each dtype cpu-naive takes (f32), against the
    # hand-derived gradients.
    out = r.run(["verify", "--backend", "cpu-naive", "--direction", "backward",
                 os.path.join(toy, "backward_two_keys_d2.json")], expect_code=0).stdout
    expect("PASS backward_two_keys_d2.json (f32, backward)" in out, f"the backward toy case was not judged:\n{out}")
    r.run(["verify", "--backend", "cpu-naive", "--direction", "sideways", backward_file], expect_code=2)

    # run: the forward and the backward properties partition all of them (PropertyDef::needs_backward,
    # shown by `list properties` as "(needs a backward pass)").
    listing = r.run(["list", "properties"], expect_code=0).stdout.splitlines()[1:]
    every = {line.split()[0] for line in listing}
    backward = {line.split()[0] for line in listing if line.endswith("(needs a backward pass)")}
    # The fp8 family runs on e4m3 and e5m2 inputs only: an f32 run plans none of it.
    fp8 = {line.split()[0] for line in listing if line.endswith("(fp8 inputs: --dtype e4m3,e5m2)")}
    expect(fp8 == {"fp8-reference-agreement", "fp8-descale-exchange"}, f"list properties marks {fp8} as fp8-only")
    every -= fp8

    def planned(direction):
        path = r.path(f"run-{direction}.json")
        proc = r.run(["run", "--backend", "cpu-naive", "--direction", direction, "--profile", "quick", "--cases", "1",
                      "--dtype", "f32", "--json", path], expect_code=None)
        if proc.returncode == 2:
            return None, proc.stderr
        return {u["property"] for u in load(path)["units"]}, proc.stderr

    forward_units, stderr = planned("forward")
    expect(forward_units is not None, f"--direction forward was refused:\n{stderr}")
    expect(forward_units == every - backward, f"--direction forward ran {sorted(forward_units ^ (every - backward))} wrongly")
    backward_units, stderr = planned("backward")
    if backward:
        expect(backward_units == backward, f"--direction backward ran {backward_units}, not {backward}")
    else:
        expect(backward_units is None and "--direction backward: none of the" in stderr,
               f"--direction backward with no backward property was not a usage error:\n{stderr}")

    # bench: the backward beside the forward, both in the text table and in the JSON rows.
    json_path = r.path("bench.json")
    proc = r.run(["bench", "--backend", "cpu-naive", "--backend", "emu-ggml", "--direction", "both", "--dtype", "f32",
                  "--shape", "1,2,64,16", "--repeats", "1", "--json", json_path], expect_code=0)
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    expect(proc.stdout.splitlines()[0].split()[2] == "pass", f"no pass column:\n{proc.stdout}")
    for pass_ in ("forward", "backward"):
        expect(any(row[:4] == ["f32", "1,2,64,16", pass_, "cpu-naive"] and row[6] == "1.00x" for row in rows),
               f"no timed {pass_} row for cpu-naive:\n{proc.stdout}")
        expect(any(row[:4] == ["f32", "1,2,64,16", pass_, "(double"] for row in rows),
               f"no {pass_} row for the reference:\n{proc.stdout}")
    expect(re.search(r"backward\s+emu-ggml\s+skipped: no backward pass", proc.stdout),
           f"a backend without backward was not skipped:\n{proc.stdout}")
    report = load(json_path)
    expect(report["format"] == "attncheck-bench" and report["direction"] == "both", f"bench JSON header: {report}")
    timed = {(row["backend"], row["pass"]) for row in report["rows"] if row["status"] == "timed"}
    expect({("cpu-naive", "forward"), ("cpu-naive", "backward"), ("(double reference)", "forward"),
            ("(double reference)", "backward")} <= timed, f"bench JSON rows timed: {sorted(timed)}")
    expect(all(row["ms"] > 0 and row["max_ratio"] <= 1 for row in report["rows"]
               if row["status"] == "timed" and not row["reference"]), f"bench JSON rows: {report['rows']}")
    # The default times the forward alone, with the table's columns as they always were.
    proc = r.run(["bench", "--backend", "cpu-naive", "--dtype", "f32", "--shape", "1,2,64,16", "--repeats", "1"],
                 expect_code=0)
    expect("backward" not in proc.stdout and proc.stdout.splitlines()[0].split()[2] == "backend",
           f"bench's default is not the forward alone:\n{proc.stdout}")


CHECKS = {
    "exit-pass": check_exit_pass,
    "exit-fail": check_exit_fail,
    "exit-usage": check_exit_usage,
    "expectations": check_expectations,
    "bench": check_bench,
    "characterize-ladder": check_characterize_ladder,
    "accuracy": check_accuracy,
    "require-backend": check_require_backend,
    "junit-schema": check_junit_schema,
    "sharding": check_sharding,
    "list-and-help": check_list_and_help,
    "fixtures": check_fixtures,
    "direction": check_direction,
    "save-failures": check_save_failures,
    "isolation": check_isolation,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attncheck", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--validate-junit", action="store_true", help="treat CHECK as a JUnit file and validate it")
    parser.add_argument("--plugin", action="append", default=[], help="plug-in library for the isolation check")
    parser.add_argument("check")
    args = parser.parse_args()
    if args.validate_junit:
        print(validate_junit(args.check))
        return 0
    if args.check not in CHECKS:
        parser.error(f"unknown check {args.check}; known: {', '.join(CHECKS)}")
    workdir = os.path.join(args.workdir, args.check)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    try:
        runner = Runner(args.attncheck, workdir)
        runner.plugins = args.plugin
        CHECKS[args.check](runner)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"{args.check}: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
