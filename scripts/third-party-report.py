#!/usr/bin/env python3
"""Regenerates docs/third-party.md: what attncheck finds in the third-party kernels.

    third-party-report.py --build build [--out docs/third-party.md] [--check]

Reads, for each adapter (backends/third-party/<library>/expect/<backend>.json, and the Python
backends of python/examples/<library>/expect/<backend>.json):
  - the quick-profile report the CTest test third-party.<backend>.quick wrote
    (build/third-party/<backend>.json),
  - its expectation file (the reason and link of each expected failure),
and runs itself, for each adapter and dtype, `attncheck characterize --only ladder` (the profile the
kernel behaves like) and, for each failure, the failure's reproduce command against cpu-flash: a
finding is published only with a minimal case that fails on the library and passes on our kernel.

--check writes nothing: it regenerates the report and exits 1, with a diff, when the committed one
differs. The worst-ratio column is measured, not compared (it moves with the CPU's vector units,
while pass or fail, the shrunk cases and the characterized profiles must not).

Standard library only.
"""
import argparse
import concurrent.futures
import difflib
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIRD_PARTY = os.path.join(ROOT, "backends", "third-party")
PYTHON_EXAMPLES = os.path.join(ROOT, "python", "examples")
DTYPES = ("f32", "f16", "bf16")
MEASURED = "measured"  # the column excluded from --check


def read_lock():
    """{folder: (package, version)} from packages.lock's 'used by' column ("torch/ (...)")."""
    packages = {}
    with open(os.path.join(THIRD_PARTY, "packages.lock"), encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            name, version, used_by = fields[0], fields[1], fields[4]
            folder = used_by.rstrip("/")
            # The first package named for a folder is its library; the others are its runtime
            # (libcudart for torch), listed in the lock but not in the report's headings.
            packages.setdefault(folder, (name, version))
    # Libraries checked through the Python module (python/examples/<folder>/) are pinned in
    # python/requirements-test.txt instead.
    with open(os.path.join(ROOT, "python", "requirements-test.txt"), encoding="utf-8") as f:
        for line in f:
            if "==" in line and not line.startswith("#"):
                name, version = line.split()[0].split("==")
                packages.setdefault(name, (name, version))
    return packages


def adapters():
    """[(library folder, backend name, expectation path)] in a stable order: the plug-in adapters
    (backends/third-party/<library>/expect/), then the libraries checked through the Python module
    (python/examples/<library>/expect/, run by the CTest test python.pytest)."""
    found = []
    for root in (THIRD_PARTY, PYTHON_EXAMPLES):
        for library in sorted(os.listdir(root)):
            expect_dir = os.path.join(root, library, "expect")
            if not os.path.isdir(expect_dir):
                continue
            for name in sorted(os.listdir(expect_dir)):
                # <backend>.json, as attncheck_third_party_tests names them; nothing else is an adapter's.
                if name.endswith(".json") and "." not in name[:-5]:
                    found.append((library, name[:-5], os.path.join(expect_dir, name)))
    return found


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run(args, timeout=1800):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def relative_command(command, plugin, attncheck):
    """The reproduce command as a reader runs it from the repository root after the README's build."""
    words = shlex.split(command)
    words[0] = os.path.relpath(attncheck, ROOT)
    words = [os.path.relpath(w, ROOT) if w == plugin else w for w in words]
    return " ".join(shlex.quote(w) for w in words)


def on_backend(command, backend):
    """The reproduce command's words with `--backend` replaced; words[0] is still the program's name."""
    words = shlex.split(command)
    i = words.index("--backend")
    words[i + 1] = backend
    return words


def case_size(text):
    """Elements a shrunk case touches, B·Hq·Lq·Lk·(Dk + Dv), from its description."""
    fields = dict(re.findall(r"(\w+)=(\d+)(?=\s|$)", text))
    size = 1
    for name in ("B", "Hq", "Lq", "Lk"):
        size *= int(fields.get(name, 1))
    return size * (int(fields.get("Dk", 1)) + int(fields.get("Dv", 1)))


def anchor(backend, prop):
    return f"{backend}-{prop}"


def fmt_ratio(r):
    if r is None:
        return "–"
    if r != r or r == float("inf"):
        return str(r)
    if r == 0:
        return "0"
    return f"{r:.2g}"


def ladder(attncheck, plugin, dtype, workdir, backend):
    path = os.path.join(workdir, f"{backend}.{dtype}.ladder.json")
    proc = run([attncheck, "characterize", "--backend", plugin, "--dtype", dtype, "--only", "ladder", "--json", path])
    if proc.returncode not in (0, 1) or not os.path.exists(path):
        if "does not take" in proc.stderr:
            return {"dtype_unsupported": True}
        raise SystemExit(f"third-party-report: characterize {backend} {dtype} failed ({proc.returncode}):\n{proc.stderr}")
    return load(path)["ladder"]


def describe_ladder(section):
    if section is not None and section.get("python"):
        return "– (Python backend: no plug-in to characterize)"
    if section is None or section.get("dtype_unsupported") or not section.get("ran"):
        return "–"
    rungs = section["rungs"]
    if section["satisfied"] is None:
        return f"none (even “{rungs[-1]['name']}” fails)"
    text = f"{section['satisfied'] + 1}. {rungs[section['satisfied']]['name']}"
    if section.get("breaks") is not None:
        # The broken rung's ratio is measured (it moves with the CPU); which rung breaks is not.
        text += f" (breaks {section['breaks'] + 1})"
    return text


def generate(build, attncheck):
    workdir = os.path.join(build, "third-party")
    plugins = os.path.join(build, "plugins")
    lock = read_lock()
    rows = []
    findings = []
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for library, backend, expect_path in adapters():
            report_path = os.path.join(workdir, f"{backend}.json")
            plugin = os.path.join(plugins, f"attncheck-{backend}.so")
            report = load(report_path) if os.path.exists(report_path) else None
            # A Python backend (python/examples/, run by the python.pytest test) has no plug-in for
            # `attncheck characterize`; its report is all there is.
            python_backend = report is not None and report["run"]["backend_origin"] == "python"
            if report is None or not (python_backend or os.path.exists(plugin)):
                raise SystemExit(f"third-party-report: {report_path} or {plugin} is missing: run "
                                 f"`ctest -R third-party.{backend}.quick` (or python.pytest) first")
            for dtype in DTYPES:
                if python_backend:
                    jobs[(backend, dtype)] = pool.submit(dict, python=True)
                else:
                    jobs[(backend, dtype)] = pool.submit(ladder, attncheck, plugin, dtype, workdir, backend)
            expectations = load(expect_path)
            rows.append((library, backend, plugin, report, expectations))
            for unit in report["units"]:
                if unit["status"] == "failed":
                    command = unit["reproduce_command"]
                    jobs[(backend, unit["property"], unit["dtype"])] = pool.submit(
                        run, [attncheck] + on_backend(command, "cpu-flash")[1:] if command else ["false"])
        results = {key: job.result() for key, job in jobs.items()}

    out = ["# What attncheck finds in third-party attention kernels", "",
           "Generated by `scripts/third-party-report.py` from the CTest run of the adapters in",
           "`backends/third-party/` (quick profile, seed 24301, every dtype); CI regenerates it and fails",
           "when it differs from this file, except for the worst-ratio column, which is measured on the",
           "machine that ran it. Each adapter passed the hand-derived closed-form cases",
           "(`fixtures/toy/`) before anything here was said about its library.", "",
           "## Libraries", "", "| Library | Version (PyPI, SHA-256 in packages.lock) | Adapters |", "|---|---|---|"]
    by_library = {}
    for library, backend, *_ in rows:
        by_library.setdefault(library, []).append(backend)
    for library, backends in by_library.items():
        package, version = lock.get(library, ("?", "?"))
        out.append(f"| {library} | `{package}=={version}` | {', '.join(f'`{b}`' for b in backends)} |")

    out += ["", "## Results", "",
            "Per backend and dtype: the quick profile's units (passed / failed / skipped), the failing",
            "properties (each a finding below), the worst ratio r = |error| / τ over the judged cases",
            f"({MEASURED}), and the profile the kernel behaves like (`attncheck characterize --only",
            "ladder`, numerics/README.md §2.13).", "",
            f"| Backend | dtype | passed | failed | varies | skipped | failing properties | worst r ({MEASURED}) | "
            "behaves like |",
            "|---|---|---:|---:|---:|---:|---|---:|---|"]
    for library, backend, plugin, report, expectations in rows:
        for dtype in DTYPES:
            units = [u for u in report["units"] if u["dtype"] == dtype]
            if not units:
                continue
            # A pass-or-fail unit's outcome depends on the machine (its expectation says so): it is
            # counted apart, so that this report is the same on every machine.
            steady = [u for u in units if not varies(expectations, u)]
            count = {s: sum(1 for u in steady if u["status"] == s) for s in ("passed", "failed", "skipped")}
            count["varies"] = len(units) - len(steady)
            failing = [u["property"] for u in steady if u["status"] == "failed"]
            # The report writes a non-finite ratio as a string ("inf", "nan"); float() reads both.
            judged = [float(u["worst_ratio"]) for u in units
                      if u["status"] != "skipped" and u.get("worst_ratio") is not None]
            worst = max(judged) if judged else None
            failing_text = ", ".join(f"[{p}](#{anchor(backend, p)})" for p in failing) or "–"
            out.append(f"| `{backend}` | {dtype} | {count['passed']} | {count['failed']} | {count['varies']} | "
                       f"{count['skipped']} | "
                       f"{failing_text} | {fmt_ratio(worst)} | {describe_ladder(results[(backend, dtype)])} |")

    out += ["", "## Findings", "",
            "A finding is a cause that makes properties fail on the library under the adapter's declared",
            "profile, grouped by the reason its expectation file gives. Each shows its smallest shrunk case",
            "with the verdict, then every failing unit's reproduce command (from the repository root after",
            "the README's build). Each command was also run with `--backend cpu-flash` when this file was",
            "generated, and passes there unless it says otherwise."]
    any_finding = False
    for library, backend, plugin, report, expectations in rows:
        entries = {(e["property"], e["dtype"]): e for e in expectations.get("units", [])}
        groups = {}
        for unit in report["units"]:
            if unit["status"] != "failed" or varies(expectations, unit):
                continue
            entry = entries.get((unit["property"], unit["dtype"])) or entries.get((unit["property"], "*")) or {}
            groups.setdefault(entry.get("reason", "(no reason in the expectation file)"), []).append(unit)
        for reason, units in groups.items():
            any_finding = True
            properties = list(dict.fromkeys(u["property"] for u in units))
            dtypes = list(dict.fromkeys(u["dtype"] for u in units))
            smallest = min(units, key=lambda u: case_size(u["shrunk_case"] or u["worst_case"]))
            out += [""] + [f'<a id="{anchor(backend, p)}"></a>' for p in properties]
            out += [f"### `{backend}`: {', '.join(properties)} ({', '.join(dtypes)})", "", reason, "",
                    f"Smallest case ({smallest['property']}, {smallest['dtype']}): "
                    f"`{smallest['shrunk_case'] or smallest['worst_case']}`", "",
                    f"> {smallest['message'].splitlines()[0]}", "",
                    "| property | dtype | reproduce |", "|---|---|---|"]
            for unit in units:
                check = results[(backend, unit["property"], unit["dtype"])]
                note = "" if check.returncode == 0 else \
                    f" **(also fails on cpu-flash, exit {check.returncode}: not a finding about the library)**"
                command = relative_command(unit["reproduce_command"], plugin, attncheck)
                out.append(f"| {unit['property']} | {unit['dtype']} | `{command}`{note} |")
    if not any_finding:
        out += ["", "None: every adapter passes every property it runs."]
    out += ["", "## Outcomes that vary by machine", "",
            "Units whose expectation is `pass-or-fail` (tools/README.md): measured to pass on some machines and",
            "fail on others with the same pinned library. They are not counted above; each expectation says",
            "what was measured where."]
    any_varying = False
    for library, backend, plugin, report, expectations in rows:
        for entry in expectations.get("units", []):
            if entry.get("expect") != "pass-or-fail":
                continue
            any_varying = True
            out += ["", f'<a id="{anchor(backend, entry["property"])}"></a>', "",
                    f"### `{backend}`: {entry['property']} ({entry['dtype']})", "", entry["reason"]]
    if not any_varying:
        out += ["", "None."]
    out.append("")
    return "\n".join(out)


def varies(expectations, unit):
    """Whether the unit's expectation is pass-or-fail (the most specific entry decides, as attncheck's)."""
    entries = {(e["property"], e["dtype"]): e for e in expectations.get("units", [])}
    for key in ((unit["property"], unit["dtype"]), (unit["property"], "*"), ("*", unit["dtype"]), ("*", "*")):
        if key in entries:
            return entries[key].get("expect") == "pass-or-fail"
    return False


def comparable(text):
    """The report without the measured column (the 7th of the results table)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = line.split(" | ")
            if len(cells) == 9:
                cells[7] = "(measured)"
            line = " | ".join(cells)
        lines.append(line)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--attncheck", help="default: BUILD/tools/attncheck/attncheck")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "third-party.md"))
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    attncheck = os.path.abspath(args.attncheck or os.path.join(build, "tools", "attncheck", "attncheck"))
    text = generate(build, attncheck)
    if not args.check:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"third-party-report: wrote {os.path.relpath(args.out, ROOT)}")
        return 0
    committed = open(args.out, encoding="utf-8").read() if os.path.exists(args.out) else ""
    if comparable(committed) == comparable(text):
        print(f"third-party-report: {os.path.relpath(args.out, ROOT)} is current")
        return 0
    sys.stdout.writelines(difflib.unified_diff([l + "\n" for l in comparable(committed)],
                                               [l + "\n" for l in comparable(text)],
                                               "committed", "regenerated"))
    print(f"third-party-report: {os.path.relpath(args.out, ROOT)} differs from what this run finds: rerun "
          "scripts/third-party-report.py and commit it with the change that moved it", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
