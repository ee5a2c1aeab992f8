#!/usr/bin/env python3
"""Renders the HTML report of a failing run in headless Chromium and checks that it displays.

A run of a mutant backend (which fails) writes `--html`; Chromium must parse the page (its DOM
dump holds the report's sections), log no console error or uncaught exception, and paint a
screenshot that is not blank (more than a handful of distinct pixel values: a page that failed to
render is one colour). The PNG is decoded with zlib and struct only.

Exit status: 0 the page rendered, 1 it did not, 77 no Chromium on this machine (ctest SKIP).
With --keep-html and --keep-png the page and its screenshot are also copied there: that is how
docs/examples/failure-report.{html,png} are regenerated (see docs/examples/README.md).
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import zlib

SKIP = 77
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def png_pixels(path):
    """The rows of an 8-bit non-interlaced PNG (grey, RGB, grey+alpha or RGBA) as byte strings."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace != 0:
        raise ValueError(f"{path}: PNG depth {depth}, colour type {colour}, interlace {interlace} not handled")
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        # PNG filters (ISO/IEC 15948 §9.2): each byte is predicted from its left (a), up (b) and
        # upper-left (c) neighbours.
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            elif kind != 0:
                raise ValueError(f"{path}: row {y} has filter type {kind}")
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def distinct_pixels(path):
    _, _, channels, rows = png_pixels(path)
    values = set()
    for row in rows:
        for i in range(0, len(row), channels):
            values.add(row[i:i + channels])
    return len(values)


def run_browser(browser, args, workdir):
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            f"--user-data-dir={os.path.join(workdir, 'chromium-profile')}"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=180)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attncheck", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--backend", default="mutant-window-exclusive")
    parser.add_argument("--property", default="reference-agreement|robustness")
    parser.add_argument("--keep-html")
    parser.add_argument("--keep-png")
    options = parser.parse_args()

    browser = find_browser()
    if browser is None:
        print("SKIP: no Chromium (looked for " + ", ".join(BROWSERS) + "); install Debian's 'chromium' package "
              "(scripts/setup.sh does) to run this check")
        return SKIP

    os.makedirs(options.workdir, exist_ok=True)
    page = os.path.join(options.workdir, "failure-report.html")
    shot = os.path.join(options.workdir, "failure-report.png")
    for stale in (page, shot):
        if os.path.exists(stale):
            os.remove(stale)
    run = subprocess.run([options.attncheck, "run", "--backend", options.backend, "--profile", "quick",
                          "--property", options.property, "--dtype", "f32", "--html", page],
                         capture_output=True, text=True, timeout=900)
    if run.returncode != 1:
        print(f"FAIL: attncheck run of {options.backend} exited {run.returncode}, expected 1 (a failure)\n"
              f"{run.stdout}\n{run.stderr}")
        return 1

    problems = []
    dom = run_browser(browser, ["--dump-dom", "file://" + os.path.abspath(page)], options.workdir)
    for marker in ("<h2>Units</h2>", "<h2>Failures</h2>", "<h2>Coverage</h2>", "</table>"):
        if marker not in dom.stdout:
            problems.append(f"the parsed page lacks {marker!r} (dump-dom exit {dom.returncode})")
    shot_run = run_browser(browser, [f"--screenshot={shot}", "--window-size=1280,2000", "file://" + os.path.abspath(page)],
                           options.workdir)
    for log in (dom.stderr, shot_run.stderr):
        for line in log.splitlines():
            if "CONSOLE" in line or "Uncaught" in line:
                problems.append("console: " + line.strip())
    if not os.path.exists(shot):
        problems.append(f"no screenshot written (exit {shot_run.returncode}): {shot_run.stderr[-2000:]}")
    else:
        colours = distinct_pixels(shot)
        print(f"screenshot {shot}: {colours} distinct pixel values")
        # A blank page is one colour; text in dark-on-light with anti-aliasing gives hundreds.
        if colours < 16:
            problems.append(f"the screenshot has only {colours} distinct pixel values: the page looks blank")

    if problems:
        print("FAIL:\n  " + "\n  ".join(problems))
        return 1
    for source, target in ((page, options.keep_html), (shot, options.keep_png)):
        if target:
            shutil.copyfile(source, target)
            print(f"wrote {target}")
    print("PASS: the HTML report renders in Chromium with no console error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
