"""ONNX Runtime's attention operators (python/examples/onnxruntime/ort_backends.py): each adapter
first passes the hand-derived closed-form toy cases (fixtures/toy), so that an adapter bug is never
reported as a library finding; then the quick profile, gated by the backend's expectation file in
python/examples/onnxruntime/expect/, writes its report where scripts/third-party-report.py
reads the third-party results (build/third-party/<name>.json)."""

import sys

import pytest

from conftest import ROOT, build_dir

sys.path.insert(0, str(ROOT / "python" / "examples" / "onnxruntime"))
import ort_backends  # noqa: E402

import attncheck  # noqa: E402

pytestmark = pytest.mark.skipif(ort_backends.MISSING is not None, reason=str(ort_backends.MISSING))

NAMES = ["ort-attention-23", "ort-attention-24", "ort-mha", "ort-gqa"]
EXPECT = ROOT / "python" / "examples" / "onnxruntime" / "expect"


def backend(name):
    return ort_backends.backends()[name]


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_toy_cases(name):
    results = attncheck.verify(backend(name), ROOT / "fixtures" / "toy")
    failed = [r for r in results if r.status not in ("passed", "skipped")]
    assert not failed, "\n".join(f"{r.label}: {r.status} {r.message}" for r in failed)
    assert any(r.status == "passed" for r in results), results


@pytest.mark.parametrize("name", NAMES)
def test_quick_profile_matches_its_expectation_file(name):
    # The closed-form cases come first: a quick-profile verdict on an adapter that fails them
    # would say nothing about the library.
    test_closed_form_toy_cases(name)
    report = attncheck.run(backend(name), profile="quick", expect=EXPECT / f"{name}.json")
    out = build_dir() / "third-party"
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / f"{name}.json")
    assert report.expectations is not None
    assert report.ok, "\n".join(report.expectations.mismatches)
