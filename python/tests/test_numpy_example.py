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
    class Fp4Kernel(NumpyAttention):
        options = ("varlen", "fp4")

    with pytest.raises(ValueError, match="options: 'fp4' is not one of alibi, sinks, paged, varlen, fp8"):
        attncheck.run(Fp4Kernel(), properties=["reference-agreement"], dtypes=["f32"])


def test_fp8_inputs_reach_a_python_kernel():
    # options = ("fp8",) and an e4m3 / e5m2 profile: the fp8 family runs on the kernel with its
    # codes and descales (the quick profile draws per-tensor and per-head descales).
    report = attncheck.run(NumpyAttention(), properties=["fp8-reference-agreement", "fp8-descale-exchange"],
                           dtypes=["e4m3", "e5m2"])
    assert len(report.units) == 4
    assert all(u.status == "passed" and u.cases > 0 for u in report.units), [u.message for u in report.units]


def test_planted_fp8_descale_bug_fails_fp8_reference_agreement():
    report = attncheck.run(NumpyAttention(planted_bug="fp8-descale-twice"), properties=["fp8-reference-agreement"],
                           dtypes=["e4m3"])
    unit = report.unit("fp8-reference-agreement", "e4m3")
    assert unit.status == "failed", unit.message
    assert "descale=" in unit.shrunk_case


def test_fp8_properties_take_fp8_dtypes_only():
    takes = {p[0]: p[5] for p in attncheck.properties()}
    assert takes["fp8-reference-agreement"] == ["e4m3", "e5m2"]
    assert takes["reference-agreement"] == ["f32", "f16", "bf16"]
    with pytest.raises(ValueError, match="match none"):
        attncheck.run(NumpyAttention(), properties=["fp8-reference-agreement"], dtypes=["f32"])


def test_reference_dequantizes_fp8_codes():
    # A per-tensor descaled problem: the reference of (codes, descales) equals the reference of the
    # dequantized values (problem.h: Q = q * dq), which fp8_values decodes exactly.
    import numpy as np

    problem = attncheck.Problem(batch=1, q_heads=2, kv_heads=1, q_len=2, k_len=3, qk_dim=4, v_dim=2, descale="tensor")
    rng = np.random.default_rng(7)
    codes = [rng.integers(0, 0x7E, size=s, dtype=np.uint8) for s in ((1, 2, 2, 4), (1, 1, 3, 4), (1, 1, 3, 2))]
    q, k, v = (attncheck.fp8_values(c, "e4m3") for c in codes)
    dq, dk, dv = [0.5], [0.25], [3.0]
    out, lse = attncheck.reference(problem, q, k, v, q_descale=dq, k_descale=dk, v_descale=dv)
    plain = attncheck.Problem(batch=1, q_heads=2, kv_heads=1, q_len=2, k_len=3, qk_dim=4, v_dim=2)
    want, want_lse = attncheck.reference(plain, q * 0.5, k * 0.25, v * 3.0)
    np.testing.assert_array_equal(out, want)  # scaling by powers of two and 3 is exact in double
    np.testing.assert_array_equal(lse, want_lse)
    with pytest.raises(ValueError, match="pass all three"):
        attncheck.reference(problem, q, k, v, q_descale=dq)
    with pytest.raises(ValueError, match="the problem has none"):
        attncheck.reference(plain, q * 0.5, k * 0.25, v * 3.0, q_descale=dq, k_descale=dk, v_descale=dv)


def test_fp8_values_decode_the_ocp_formats():
    # OCP 8-bit floating point (2023): e4m3fn max 448 (0x7E), its NaN 0x7F, min subnormal 2^-9;
    # e5m2 max 57344 (0x7B), +inf 0x7C, min subnormal 2^-16.
    import math

    e4m3 = attncheck.fp8_values(range(256), "e4m3")
    assert e4m3[0x7E] == 448 and math.isnan(e4m3[0x7F]) and e4m3[0x01] == 2.0 ** -9 and e4m3[0x38] == 1.0
    assert e4m3[0xFE] == -448 and e4m3[0x80] == 0 and math.isnan(e4m3[0xFF])
    e5m2 = attncheck.fp8_values(range(256), "e5m2")
    assert e5m2[0x7B] == 57344 and e5m2[0x7C] == math.inf and e5m2[0x01] == 2.0 ** -16 and e5m2[0x3C] == 1.0
