"""README.md's pytest example, run verbatim: the block after the marker is written to a file
and run by pytest in a child process, where it must collect and pass."""

import re
import subprocess
import sys

MARKER = "<!-- attncheck-pytest-example -->"


def readme_example(root) -> str:
    text = (root / "README.md").read_text(encoding="utf-8")
    assert MARKER in text, "README.md lost its pytest example marker"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block, "no ```python block after the marker"
    return block.group(1)


def test_readme_example_is_ten_lines_or_so(repo_root):
    lines = [line for line in readme_example(repo_root).splitlines() if line.strip()]
    assert len(lines) <= 12, f"the example grew to {len(lines)} lines"
    assert lines[-1].startswith("test_my_kernel = attncheck.pytest.conformance(")


def test_readme_example_passes_under_pytest(repo_root, tmp_path):
    (tmp_path / "test_readme_example.py").write_text(readme_example(repo_root), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(tmp_path / "test_readme_example.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Every property x (f32, f16, bf16) collected; f16, bf16 and what the plain kernel declines are skips.
    counts = re.search(r"(\d+) passed(?:, (\d+) skipped)?", output)
    assert counts, output
    passed, skipped = int(counts.group(1)), int(counts.group(2) or 0)
    takes = [set(p[5]) & {"f32", "f16", "bf16"} for p in __import__("attncheck").properties()]
    assert passed + skipped == sum(len(t) for t in takes), output
    assert passed >= 10, output
