"""The NumPy example kernel: correct, it passes the quick profile (one pytest item per unit);
with its planted causal off-by-one, reference-agreement fails with a shrunk causal case."""

import pytest

import attncheck
import attncheck.pytest
from numpy_kernel import NumpyAttention

# The correct kernel under the quick profile, every property and dtype.
test_numpy_kernel = attncheck.pytest.conformance(NumpyAttention(), profile="quick")


def test_planted_bug_fails_reference_agreement():
    report = attncheck.run(NumpyAttention(planted_bug="causal-off-by-one"), properties=["reference-agreement"],
                           dtypes=["f32"])
    unit = report.unit("reference-agreement", "f32")
    assert unit.status == "failed", unit.message
    assert unit.failure_kind == "conformance"
    # A key past the diagonal is visible only with a causal mask, so the minimal case keeps it.
    assert "causal=1" in unit.shrunk_case
    assert unit.shrunk_verdict is not None and unit.reproduce.startswith("reproduce=")
    assert unit.reproduce_command.startswith("attncheck run --backend numpy-attention-causal-off-by-one "
                                             "--property '^reference-agreement$' --dtype f32 --seed 24301")
    assert not report.ok


def test_planted_bug_passes_where_no_causal_mask_is_drawn():
    # The planted bug touches causal masks only; a run restricted to problems without one is clean,
    # so the failure above is the bug's and not the kernel's arithmetic.
    report = attncheck.run(NumpyAttention(planted_bug="causal-off-by-one"), properties=["reference-agreement"],
                           dtypes=["f32"], problem=r"^(?!.*causal=)")
    unit = report.unit("reference-agreement", "f32")
    assert unit.status == "passed", unit.message
    assert unit.cases > 0


def test_planted_cu_seqlens_bug_fails_varlen_equals_per_sequence():
    # The example declares options = ("varlen",): packed batches reach it, and the planted bug,
    # sequence b's key count read as cu_seqlens_k[b + 1] (an offset), fails the varlen family's
    # first property with a packed minimal case.
    report = attncheck.run(NumpyAttention(planted_bug="cu-seqlens-as-lengths"), properties=["varlen-equals-per-sequence"],
                           dtypes=["f32"])
    unit = report.unit("varlen-equals-per-sequence", "f32")
    assert unit.status == "failed", unit.message
    assert "varlen=1" in unit.shrunk_case
    correct = attncheck.run(NumpyAttention(), properties=["varlen-equals-per-sequence", "varlen-packing-order"],
                            dtypes=["f32"])
    assert all(u.status == "passed" and u.cases > 0 for u in correct.units), [u.message for u in correct.units]


def test_an_unknown_option_name_is_refused():
    class Fp8Kernel(NumpyAttention):
        options = ("varlen", "fp8")

    with pytest.raises(ValueError, match="options: 'fp8' is not one of alibi, sinks, paged, varlen"):
        attncheck.run(Fp8Kernel(), properties=["reference-agreement"], dtypes=["f32"])
