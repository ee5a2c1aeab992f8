"""The module's contract: Python backends through the ABI bridge, DLPack tensors, errors that fail
a case without ending the run, the reference, verification, presets and fixtures."""

import json

import numpy as np
import pytest

import attncheck
import attncheck.fixtures
from numpy_kernel import NumpyAttention


class Recording(NumpyAttention):
    """The NumPy kernel, remembering what forward saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, problem, t):
        self.seen.append({
            "tensors": t,
            "q_shares_memory": np.from_dlpack(t.q).ctypes.data == t.q.data_ptr,
            "q_writeable": np.from_dlpack(t.q).flags.writeable,
            "out_writeable": np.from_dlpack(t.out).flags.writeable,
            "q_shape": np.from_dlpack(t.q).shape,
            "device": t.q.__dlpack_device__(),
        })
        super().forward(problem, t)


def test_tensors_are_zero_copy_views_read_only_for_inputs_and_expire_after_the_call():
    kernel = Recording()
    report = attncheck.run(kernel, properties=["reference-agreement"], dtypes=["f32"], cases=3)
    assert report.unit("reference-agreement", "f32").status == "passed"
    assert kernel.seen
    for call in kernel.seen:
        assert call["q_shares_memory"]
        assert call["q_writeable"] is False
        assert call["out_writeable"] is True
        assert call["device"] == (1, 0)  # kDLCPU
    stale = kernel.seen[0]["tensors"].q
    assert not stale.alive
    with pytest.raises(ValueError, match="used after its forward call returned"):
        np.from_dlpack(stale)


class Raising(NumpyAttention):
    name = "raising"

    def forward(self, problem, t):
        raise ValueError("boom in the kernel")


def test_an_exception_in_forward_fails_the_case_with_its_last_line_and_the_run_goes_on():
    report = attncheck.run(Raising(), properties=["reference-agreement", "determinism"], dtypes=["f32", "f16"])
    assert [u.status for u in report.units] == ["failed"] * 4  # every unit ran
    for unit in report.units:
        assert "forward() raised ValueError: boom in the kernel" in unit.message
        assert unit.reproduce.startswith("reproduce=")


class Declining(NumpyAttention):
    name = "declining"

    def supports(self, problem, dtype):
        return "no GQA here" if problem.kv_heads != problem.q_heads else None

    def forward(self, problem, t):
        if problem.causal:
            raise attncheck.Unsupported("causal declined in forward")
        super().forward(problem, t)


def test_declines_from_supports_and_forward_are_skips_with_the_backends_reasons():
    report = attncheck.run(Declining(), properties=["reference-agreement"], dtypes=["f32"])
    unit = report.unit("reference-agreement", "f32")
    assert unit.status == "passed", unit.message
    assert unit.decline_reasons.get("no GQA here", 0) > 0
    # A decline from forward is named by the engine as the call that returned it.
    assert any(reason.endswith("forward returned 'not supported': causal declined in forward") and n > 0
               for reason, n in unit.decline_reasons.items()), unit.decline_reasons
    assert unit.skipped == sum(unit.decline_reasons.values())


class WrongProfile(NumpyAttention):
    name = "wrong-profile"

    def profile(self, dtype):
        return {"input": dtype}


def test_a_profile_that_is_not_a_profile_fails_with_a_clear_message():
    unit = attncheck.run(WrongProfile(), properties=["reference-agreement"], dtypes=["f32"]).units[0]
    assert unit.status == "failed"
    assert "profile() returned <class 'dict'>, expected an attncheck.Profile or None" in unit.message


def test_the_report_is_the_command_lines_json_model():
    report = attncheck.run(NumpyAttention(), properties="^identity-values$", dtypes="f32,bf16", seed=7)
    as_written = json.loads(report.json)
    assert as_written["format"] == "attncheck-report" and as_written["schema_version"] == 1
    assert report.run.seed == 7 and report.run.profile == "quick" and report.run.cases == 30
    assert report.run.backend == "numpy-attention" and report.run.backend_origin == "python"
    assert report.run.dtypes == ["f32", "bf16"]
    assert [(u.property, u.dtype) for u in report.units] == [("identity-values", "f32"), ("identity-values", "bf16")]
    assert report.summary == as_written["summary"] and report.ok


def test_bad_arguments_are_value_errors_naming_them():
    with pytest.raises(ValueError, match="not a profile"):
        attncheck.run(NumpyAttention(), profile="fast")
    with pytest.raises(ValueError, match="unknown no-such-property"):
        attncheck.run(NumpyAttention(), properties=["no-such-property"])
    with pytest.raises(ValueError, match="'f8' is not a dtype"):
        attncheck.run(NumpyAttention(), dtypes=["f8"])
    with pytest.raises(ValueError, match="reproduce"):
        attncheck.run(NumpyAttention(), reproduce="not a reproduce string")


def test_problem_is_read_only_and_round_trips_through_its_description():
    p = attncheck.Problem(batch=2, q_heads=4, kv_heads=2, q_len=3, k_len=5, qk_dim=8, v_dim=4, causal=True,
                          alignment="bottom-right", mask="bool", mask_k_len=5)
    assert attncheck.Problem.parse(p.describe()) == p
    assert p.group_size() == 2 and p.kv_head_of(3) == 1 and p.scale == pytest.approx(8 ** -0.5)
    with pytest.raises(AttributeError):
        p.batch = 3
    with pytest.raises(ValueError, match="kv"):
        attncheck.Problem(q_heads=3, kv_heads=2)


def toy(repo_root, name):
    return json.loads((repo_root / "fixtures" / "toy" / f"{name}.json").read_text())


def test_reference_matches_a_hand_derived_toy_case(repo_root):
    # fixtures/toy/causal_two_tokens.json: the closed form out = [10, 10 + 10 sigma(1)],
    # lse = [1, 1 + ln(1 + e)], derived by hand in the file (closed_forms.py prints the digits).
    case = toy(repo_root, "causal_two_tokens")
    problem = attncheck.Problem.parse(case["problem"])
    out, lse = attncheck.reference(problem, case["inputs"]["q"], case["inputs"]["k"], case["inputs"]["v"])
    sigma1 = np.e / (1 + np.e)
    assert out.shape == (1, 1, 2, 1) and lse.shape == (1, 1, 2)
    assert out[0, 0, :, 0] == pytest.approx([10, 10 + 10 * sigma1], rel=1e-15)
    assert lse[0, 0] == pytest.approx([1, 1 + np.log1p(np.e)], rel=1e-15)
    assert out[0, 0, :, 0] == pytest.approx(np.array(case["expected"]["out"]).reshape(-1), rel=1e-15)


def test_reference_takes_alibi_and_sinks():
    # One query, two keys of equal raw score (q = 0), V = [1, 0]. ALiBi slope 1 from the top-left
    # diagonal (key 0) biases them by 0 and -1: out = 1 / (1 + e^-1). A sink of 0 adds e^0 = 1 to
    # the denominator only: out = 1 / (1 + e^-1 + 1), lse = log(2 + e^-1) (hand-derived, problem.h).
    q, k, v = np.zeros((1, 1, 1, 1)), np.ones((1, 1, 2, 1)), np.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    alibi = attncheck.Problem(k_len=2, alibi="head")
    assert alibi.alibi == "head" and "alibi=head" in alibi.describe()
    out, lse = attncheck.reference(alibi, q, k, v, alibi_slopes=[1.0])
    assert out[0, 0, 0, 0] == pytest.approx(1 / (1 + np.exp(-1)), rel=1e-15)
    both = attncheck.Problem(k_len=2, alibi="head", sinks=True)
    out, lse = attncheck.reference(both, q, k, v, alibi_slopes=[1.0], sinks=[0.0])
    assert out[0, 0, 0, 0] == pytest.approx(1 / (2 + np.exp(-1)), rel=1e-15)
    assert lse[0, 0, 0] == pytest.approx(np.log(2 + np.exp(-1)), rel=1e-15)
    assert attncheck.Problem.parse(both.describe()) == both
    with pytest.raises(ValueError, match="sinks: has 0 elements"):
        attncheck.reference(both, q, k, v, alibi_slopes=[1.0])
    with pytest.raises(ValueError, match="alibi 'rows'"):
        attncheck.Problem(alibi="rows")


def test_reference_takes_a_paged_cache():
    # Two pages of one key (page size 1) stored in reverse, table [1, 0]: logical key 0 has K = 0,
    # V = 1, key 1 has K = 1, V = 0; with q = log 3 and scale 1 the scores are 0 and log 3, so
    # out = 1 / (1 + 3) = 1/4 and lse = log 4 (hand-derived). Read in storage order it would be 3/4.
    problem = attncheck.Problem(k_len=2, scale=1.0, has_key_lengths=True, kv_storage="paged", page_size=1)
    assert problem.kv_storage == "paged" and "kv=paged:1" in problem.describe()
    assert attncheck.Problem.parse(problem.describe()) == problem
    q = np.full((1, 1, 1, 1), np.log(3.0))
    k_pages = np.array([1.0, 0.0]).reshape(2, 1, 1, 1)
    v_pages = np.array([0.0, 1.0]).reshape(2, 1, 1, 1)
    out, lse = attncheck.reference(problem, q, k_pages, v_pages, key_lengths=[2], block_table=[[1, 0]])
    assert out[0, 0, 0, 0] == pytest.approx(0.25, rel=1e-15)
    assert lse[0, 0, 0] == pytest.approx(np.log(4.0), rel=1e-15)
    with pytest.raises(ValueError, match="no block table"):
        attncheck.reference(problem, q, k_pages, v_pages, key_lengths=[2])
    with pytest.raises(ValueError, match=r"block_table\[0, 1\]: is 7"):
        attncheck.reference(problem, q, k_pages, v_pages, key_lengths=[2], block_table=[[1, 7]])
    with pytest.raises(ValueError, match="key_lengths: a paged cache needs them"):
        attncheck.Problem(k_len=2, kv_storage="paged", page_size=1)


def test_reference_takes_a_packed_batch():
    # Two sequences packed (FlashAttention's varlen layout), bottom-right causal, scale 1, D = 1.
    # Sequence 0: one query q = 1, keys k = (0, log 3), v = (2, 6): its query sits on diagonal
    # 0 + 2 - 1 = 1 and sees both keys, weights (1/4, 3/4): out = 2/4 + 18/4 = 5, lse = log 4.
    # Sequence 1: two queries, one key k = 0, v = 4: query 0 is on diagonal 0 + 1 - 2 = -1 and
    # sees nothing (out 0, lse -inf); query 1 sees the key alone: out = 4, lse = 0 (hand-derived).
    problem = attncheck.Problem(batch=2, q_len=2, k_len=2, scale=1.0, causal=True, alignment="bottom-right",
                                has_key_lengths=True, varlen=True)
    assert problem.varlen and "varlen=1" in problem.describe()
    assert attncheck.Problem.parse(problem.describe()) == problem
    q = np.ones((3, 1, 1))
    k = np.array([0.0, np.log(3.0), 0.0]).reshape(3, 1, 1)
    v = np.array([2.0, 6.0, 4.0]).reshape(3, 1, 1)
    out, lse = attncheck.reference(problem, q, k, v, cu_seqlens_q=[0, 1, 3], cu_seqlens_k=[0, 2, 3])
    assert out.shape == (3, 1, 1) and lse.shape == (1, 3)
    assert out[0, 0, 0] == pytest.approx(5.0, rel=1e-15)
    assert lse[0, 0] == pytest.approx(np.log(4.0), rel=1e-15)
    assert out[1, 0, 0] == 0.0 and lse[0, 1] == -np.inf
    assert out[2, 0, 0] == pytest.approx(4.0, rel=1e-15) and lse[0, 2] == 0.0
    with pytest.raises(ValueError, match="cu_seqlens_k: the last offset is 2"):
        attncheck.reference(problem, q, k, v, cu_seqlens_q=[0, 1, 3], cu_seqlens_k=[0, 1, 2])
    with pytest.raises(ValueError, match="key_lengths: a packed batch's key counts"):
        attncheck.reference(problem, q, k, v, key_lengths=[2, 1], cu_seqlens_q=[0, 1, 3], cu_seqlens_k=[0, 2, 3])
    with pytest.raises(ValueError, match="key_lengths: a packed batch needs them"):
        attncheck.Problem(batch=2, varlen=True)


def test_verify_runs_the_toy_cases_in_every_dtype(repo_root):
    results = attncheck.verify(NumpyAttention(), repo_root / "fixtures" / "toy")
    # The example declares no sinks (options "varlen", "fp8"): the sink case is declined, every
    # other case passes.
    declined = [r for r in results if r.status == "skipped"]
    assert declined and all(r.label.startswith("sink_two_heads.json") for r in declined), declined
    assert all(r.status == "passed" for r in results if r not in declined), [r for r in results if r.status != "passed"]
    assert {r.label.rsplit("(", 1)[1] for r in results} == {"f32)", "f16)", "bf16)"}
    buggy = attncheck.verify(NumpyAttention(planted_bug="causal-off-by-one"), repo_root / "fixtures" / "toy" / "causal_two_tokens.json")
    assert [r.status for r in buggy] == ["failed"] * 3


def test_presets_declare_what_their_names_say():
    exact = attncheck.fp32_exact()
    assert (exact.input, exact.score, exact.accumulator, exact.output, exact.softmax_block) == ("f32", "f32", "f32", "f32", 0)
    assert attncheck.fp32_flash(block=64).softmax_block == 64
    tc = attncheck.fp16_tensor_core()
    assert (tc.input, tc.probability, tc.accumulator, tc.accumulation_rounding) == ("f16", "f16", "f32", "toward-zero")
    bf = attncheck.bf16_fp32_accum()
    assert (bf.input, bf.probability, bf.output) == ("bf16", "f32", "bf16")
    built = attncheck.profile(input="f16", output="f16", value_rounding="f16", empty_row_lse="zero")
    assert built.value_rounding == "f16" and built.empty_row_lse == "zero" and built.query_rounding is None
    with pytest.raises(TypeError, match="no field 'speed'"):
        attncheck.profile(speed="fast")
    with pytest.raises(ValueError, match="empty_row"):
        attncheck.profile(empty_row="whatever")


def test_fixtures_round_trip_through_the_suites_reader_and_writer(repo_root, tmp_path):
    source = sorted((repo_root / "fixtures" / "golden").glob("*bf16*.safetensors"))[0]
    fixture = attncheck.fixtures.read(source)
    assert fixture.input_dtype == "bf16" and fixture.storage["q"] == "BF16" and fixture.tensors["q"].dtype == np.uint16
    attncheck.fixtures.write(tmp_path / "copy.safetensors", fixture)
    again = attncheck.fixtures.read(tmp_path / "copy.safetensors")
    assert again.problem == fixture.problem and again.storage == fixture.storage
    for name in fixture.tensors:
        np.testing.assert_array_equal(again.tensors[name], fixture.tensors[name])
    # The writer is the C++ one: the same fixture gives the same bytes.
    assert (tmp_path / "copy.safetensors").read_bytes() == source.read_bytes()
    # Its reference outputs are the ones the golden file holds.
    recomputed = attncheck.fixtures.with_reference_outputs(fixture)
    np.testing.assert_array_equal(recomputed.tensors["out"], fixture.tensors["out"])
    # A corrupted file is refused with a message naming it.
    damaged = bytearray(source.read_bytes())
    damaged[-1] ^= 0xFF
    (tmp_path / "damaged.safetensors").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="damaged.safetensors"):
        attncheck.fixtures.read(tmp_path / "damaged.safetensors")
