"""PyTorch's scaled_dot_product_attention through Python, when torch is importable in the venv:
the closed-form toy cases, then reference-agreement under the quick profile."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "python" / "examples" / "onnxruntime"))
import torch_sdpa  # noqa: E402

import attncheck  # noqa: E402

pytestmark = pytest.mark.skipif(torch_sdpa.MISSING is not None, reason=str(torch_sdpa.MISSING))


def test_torch_sdpa_closed_form_then_reference_agreement():
    backend = torch_sdpa.TorchSdpa()
    results = attncheck.verify(backend, ROOT / "fixtures" / "toy")
    assert all(r.status in ("passed", "skipped") for r in results), results
    report = attncheck.run(backend, properties=["reference-agreement"], dtypes=["f32"])
    assert report.ok, report.describe_failure(report.failures[0])
