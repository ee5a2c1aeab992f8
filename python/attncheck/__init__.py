"""attncheck from Python: check any Python-callable attention kernel with the suite's properties,
tolerance model, shrinking and reports, the C++ engine of the `attncheck` command line itself.

A backend is any object with

    profile(dtype)            -> attncheck.Profile, or None when the dtype ("f32", "f16", "bf16")
                                 is not handled
    supports(problem, dtype)  -> None, or a string saying why the problem is declined
    forward(problem, tensors) -> None; writes tensors.out (and tensors.lse when it is not None)

and optionally `forward_layer(layer_problem, tensors)` and `problem_profile(problem, dtype)` (the
profile of the path forward takes for that problem). `problem` is a read-only attncheck.Problem;
every tensor implements __dlpack__ / __dlpack_device__, so numpy.from_dlpack(t) and
torch.from_dlpack(t) are zero-copy views of the suite's buffers. Those buffers live only for the
duration of the call. See python/README.md.
"""

from __future__ import annotations

import json as _json
import os as _os
import re as _re
from typing import Any, Iterable, Optional, Sequence, Union

from . import _engine
from ._engine import InvalidProblem, LayerProblem, Problem, Profile, Tensor, Unsupported
from . import profiles
from .profiles import bf16_fp32_accum, fp16_tensor_core, fp32_exact, fp32_flash, profile

__version__ = _engine.__version__

__all__ = [
    "Backend", "InvalidProblem", "LayerProblem", "Problem", "Profile", "Report", "Tensor", "Unsupported",
    "as_numpy", "fp8_values", "bf16_fp32_accum", "fp16_tensor_core", "fp32_exact", "fp32_flash", "profile", "profiles", "properties",
    "reference", "run", "verify",
]

#: The seed of a run without seed= or ATTNCHECK_SEED: the command line's (tools/attncheck/commands.h).
DEFAULT_SEED = _engine.default_seed


class Record(dict):
    """A JSON object of the report with attribute access (report.units[0].worst_ratio)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _records(value: Any) -> Any:
    if isinstance(value, dict):
        return Record((k, _records(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_records(v) for v in value]
    return value


class Report(Record):
    """The JSON model of `attncheck run --json` (tools/README.md, "JSON"), as Python objects.

    Besides the report's own keys (format, schema_version, run, summary, units) it offers
    `failures` (the failed units), `ok` (no unit failed, or with an expectation file: every unit
    as expected), `expectations` (None, or the check of the expectation file) and `json` (the
    report exactly as the command line writes it).
    """

    def __init__(self, report_json: str, expectations: Optional[dict]):
        super().__init__(_records(_json.loads(report_json)))
        self.__dict__["json"] = report_json
        self.__dict__["expectations"] = _records(expectations) if expectations is not None else None

    @property
    def failures(self) -> list:
        return [u for u in self["units"] if u["status"] == "failed"]

    @property
    def ok(self) -> bool:
        if self.expectations is not None:
            return bool(self.expectations["ok"])
        return not self.failures

    def unit(self, property: str, dtype: str) -> Record:
        for u in self["units"]:
            if u["property"] == property and u["dtype"] == dtype:
                return u
        raise KeyError(f"no unit {property} {dtype} in this report")

    def write_json(self, path: Union[str, _os.PathLike]) -> None:
        """Writes the report as `attncheck run --json` does (readable by `attncheck merge`)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.json)

    def describe_failure(self, unit: Record) -> str:
        """The failure as the command line prints it: each distinct failure with its minimal case,
        the failure, the diagnosis and the command that replays it."""
        findings = unit.get("findings") or []
        if findings:
            lines = [f"{unit['property']} {unit['dtype']}: {len(findings)} distinct failure(s)" if len(findings) > 1
                     else f"{unit['property']} {unit['dtype']}: {findings[0]['kind']}"]
            for n, f in enumerate(findings, 1):
                indent = "  " if len(findings) > 1 else ""
                if len(findings) > 1:
                    lines.append(f"{n}. {f['kind']}" + (f" (searched with {f['excluded']})" if f.get("excluded") else ""))
                lines.append(f"{indent}case: {f['minimal_case']}")
                lines.append(f"{indent}failure: {f['message']}")
                diagnoses = f.get("diagnoses") or []
                lines.append(f"{indent}diagnosis: " + ("; ".join(d["statement"] for d in diagnoses) if diagnoses
                                                       else "no hypothesis of the catalogue reproduces the output"))
                if f.get("reproduce_command"):
                    lines.append(f"{indent}reproduce: {f['reproduce_command']}")
            return "\n".join(lines)
        lines = [f"{unit['property']} {unit['dtype']}: {unit['message']}"]
        verdict = unit.get("shrunk_verdict")
        if verdict:
            lines.append(f"verdict: {verdict['summary']}")
        if unit.get("shrunk_case"):
            lines.append(f"shrunk case: {unit['shrunk_case']}")
        if unit.get("reproduce_command"):
            lines.append(f"reproduce: {unit['reproduce_command']}")
        return "\n".join(lines)


class Backend:
    """A built-in backend or a C plug-in library as a Python backend object.

    `Backend.load("cpu-flash")` or `Backend.load("build/plugins/attncheck-x.so")` gives an object
    with the backend protocol whose forward hands the suite's tensors to the C table unchanged: a
    run through Python and `attncheck run --backend <the same spec>` check the same kernel on the
    same inputs, so their failures can be compared bit for bit.
    """

    def __init__(self, spec: str):
        self._plugin = _engine.Plugin(spec)
        self.spec = spec
        self.name = self._plugin.name
        self.description = self._plugin.description
        # Optional entry points exist only when the table has them, as the protocol says.
        if self._plugin.has_problem_profiles:
            self.problem_profile = self._plugin.problem_profile
        if self._plugin.has_layer:
            self.forward_layer = self._plugin.forward_layer

    @classmethod
    def load(cls, spec: str) -> "Backend":
        return cls(spec)

    def profile(self, dtype: str) -> Optional[Profile]:
        return self._plugin.profile(dtype)

    def supports(self, problem: Problem, dtype: str) -> Optional[str]:
        return self._plugin.supports(problem, dtype)

    def forward(self, problem: Problem, tensors) -> None:
        self._plugin.forward(problem, tensors)


def properties() -> list:
    """Every property as (name, family, why, needs_layer, needs_backward, dtypes), in the order a run
    takes them; dtypes are the input dtypes it runs on (the fp8 properties take e4m3 and e5m2 only)."""
    return list(_engine.properties())


def builtin_backends() -> list:
    return list(_engine.builtin_backends())


def _backend_name(backend: Any) -> str:
    name = getattr(backend, "name", None)
    return str(name) if name else type(backend).__name__


def _property_regex(properties: Union[None, str, Iterable[str]]) -> str:
    if properties is None:
        return ""
    if isinstance(properties, str):
        return properties
    names = list(properties)
    if not names:
        raise ValueError("properties: an empty list selects nothing")
    known = {p[0] for p in _engine.properties()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"properties: unknown {', '.join(unknown)} (attncheck.properties() lists them)")
    return "^(" + "|".join(_re.escape(n) for n in names) + ")$"


def _dtype_list(dtypes: Union[None, str, Sequence[str]]) -> list:
    if dtypes is None:
        return ["f32", "f16", "bf16"]
    if isinstance(dtypes, str):
        return [d.strip() for d in dtypes.split(",")]
    return list(dtypes)


def resolve_seed(seed: Optional[int]) -> int:
    """seed=, else ATTNCHECK_SEED, else DEFAULT_SEED: the command line's rule."""
    if seed is not None:
        return int(seed)
    text = _os.environ.get("ATTNCHECK_SEED")
    if text is None:
        return DEFAULT_SEED
    if not text.isdigit():
        raise ValueError(f"ATTNCHECK_SEED='{text}': expected an unsigned 64-bit integer")
    return int(text)


def run(backend: Any, profile: str = "quick", properties: Union[None, str, Iterable[str]] = None,
        dtypes: Union[None, str, Sequence[str]] = None, seed: Optional[int] = None,
        expect: Optional[Union[str, _os.PathLike]] = None, *, cases: Optional[int] = None,
        problem: Optional[str] = None, size_class: Optional[str] = None, reproduce: Optional[str] = None,
        accuracy_factor: Optional[float] = None, name: Optional[str] = None,
        backend_spec: Optional[str] = None, save_failures: Optional[Union[str, _os.PathLike]] = None,
        case: Optional[str] = None) -> Report:
    """Runs the suite's properties against `backend`, exactly as `attncheck run` does.

    backend      a Python backend object, an attncheck.Backend, or a string (a built-in name or a
                 plug-in path, run directly as the command line runs it)
    profile      quick | standard | exhaustive
    properties   a regex (as --property) or a list of property names; None: all
    dtypes       a list or "f32,f16"; None: f32, f16, bf16
    seed         None: ATTNCHECK_SEED, else 24301 (the command line's default)
    expect       an expectation file (tools/README.md, "Expectation files"); report.ok says
                 whether the run matched it
    cases, problem, size_class, reproduce, accuracy_factor: as --cases, --problem, --size-class,
                 --reproduce, --accuracy-factor
    name         the backend's name in the report (default: backend.name, else its class name)
    backend_spec what --backend the reproduce commands name (default: the plug-in's spec for an
                 attncheck.Backend, else the name)
    save_failures a directory: each finding's minimal failing case is written there as a
                 regression fixture for `attncheck verify` (as --save-failures); report.saved
                 lists what was written
    case         a case text, as a finding prints it: every property runs on that case only
                 (as --case)
    """
    arguments = dict(
        profile=profile, cases=cases, size_class=size_class, property_regex=_property_regex(properties),
        problem_regex=problem or "", dtypes=_dtype_list(dtypes), seed=resolve_seed(seed), reproduce=reproduce or "",
        accuracy_factor=accuracy_factor, expect_path=_os.fspath(expect) if expect is not None else "",
        save_failures=_os.fspath(save_failures) if save_failures is not None else "", pinned_case=case or "")
    if isinstance(backend, str):
        result = _engine.run_spec(backend, **arguments)
    else:
        table_name = name or _backend_name(backend)
        spec = backend_spec or (backend.spec if isinstance(backend, Backend) else table_name)
        description = getattr(backend, "description", None) or f"Python backend {type(backend).__qualname__}"
        result = _engine.run_python(backend, table_name, str(description), backend_spec=spec, **arguments)
    report = Report(result["report_json"], result["expectations"])
    report.__dict__["saved"] = list(result["saved"])
    return report


class VerifyResult(tuple):
    """(label, status, message) of one fixture or toy case in one dtype; status passed|failed|skipped|error."""

    @property
    def label(self) -> str:
        return self[0]

    @property
    def status(self) -> str:
        return self[1]

    @property
    def message(self) -> str:
        return self[2]


def verify(backend: Any, paths: Union[str, _os.PathLike, Sequence[Union[str, _os.PathLike]]],
           name: Optional[str] = None) -> list:
    """`attncheck verify`: the backend against fixture files and hand-derived toy cases
    (fixtures/toy/*.json, each in f32, f16 and bf16). Returns a VerifyResult per check."""
    if isinstance(paths, (str, _os.PathLike)):
        paths = [paths]
    paths = [_os.fspath(p) for p in paths]
    if isinstance(backend, str):
        rows = _engine.verify_spec(backend, paths)
    else:
        rows = _engine.verify_python(backend, name or _backend_name(backend), paths)
    return [VerifyResult(r) for r in rows]


def reference(problem: Problem, q, k, v, mask=None, key_lengths=None, alibi_slopes=None, sinks=None, block_table=None,
              cu_seqlens_q=None, cu_seqlens_k=None, q_descale=None, k_descale=None, v_descale=None):
    """The suite's double-precision reference (reference/include/attncheck/reference.h).

    q [B, Hq, Lq, Dk], k [B, Hkv, Lk, Dk], v [B, Hkv, Lk, Dv], mask [Bm, Hm, Lqm, Lkm] (boolean:
    nonzero attends; additive: the bias), key_lengths [B], alibi_slopes [Hq] or [B, Hq] (the
    problem's alibi), sinks [Hq] (problem.sinks); anything numpy.asarray accepts, any strides.
    A paged problem (kv_storage 'paged' or 'paged-head') takes k and v as its page pools,
    [pages, page_size, Hkv, D] or [pages, Hkv, page_size, D], and block_table [B, Lk / page_size]:
    the reference is that of the keys the table reaches (reference/include/attncheck/paged.h).
    Returns (out [B, Hq, Lq, Dv], lse [B, Hq, Lq]) as float64 NumPy arrays.
    A packed batch (Problem(varlen=True), FlashAttention's varlen layout) takes q [Tq, Hq, Dk],
    k and v [Tk, Hkv, D] with cu_seqlens_q and cu_seqlens_k ([B + 1] offsets from 0) instead of
    key_lengths, each sequence aligned on its own diagonal (problem.h), and returns
    (out [Tq, Hq, Dv], lse [Hq, Tq]).
    A descaled problem (Problem(descale='tensor' or 'head'), fp8 inputs) takes q, k, v as the
    stored values (fp8 codes decoded to float: attncheck.fp8_values) and q_descale, k_descale,
    v_descale, each [1] or [B, Hkv]; the reference is that of the dequantized inputs
    (Q(b, h) = q(b, h) * q_descale[b, h // group], problem.h).
    """
    import numpy as np

    def f64(x):
        return np.asarray(x, dtype=np.float64)

    def flat(x):
        return None if x is None else [float(e) for e in np.asarray(x, dtype=np.float64).reshape(-1)]

    lengths = None if key_lengths is None else [int(n) for n in np.asarray(key_lengths).reshape(-1)]
    table = None if block_table is None else [int(n) for n in np.asarray(block_table).reshape(-1)]

    def offsets(x):
        return None if x is None else [int(n) for n in np.asarray(x).reshape(-1)]

    return _engine.reference(problem, f64(q), f64(k), f64(v), None if mask is None else f64(mask), lengths,
                             flat(alibi_slopes), flat(sinks), table, offsets(cu_seqlens_q), offsets(cu_seqlens_k),
                             flat(q_descale), flat(k_descale), flat(v_descale))


class _Bits:
    """__array_interface__ of a call tensor, for as_numpy."""

    _TYPESTR = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "float8_e4m3fn": "|u1", "float8_e5m2": "|u1",
                "uint8": "|u1", "int32": "<i4", "int64": "<i8"}

    def __init__(self, tensor: Tensor):
        if tensor.dtype not in self._TYPESTR:
            raise TypeError(f"tensor {tensor.name}: no NumPy type for {tensor.dtype}")
        item = tensor.itemsize
        self.__array_interface__ = {
            "version": 3, "shape": tensor.shape, "typestr": self._TYPESTR[tensor.dtype],
            "strides": tuple(s * item for s in tensor.strides), "data": (tensor.data_ptr, not tensor.writable)}


def as_numpy(tensor: Tensor):
    """A zero-copy NumPy view of a call tensor, read-only for inputs, writable for out and lse.

    Like numpy.from_dlpack(tensor), except that bfloat16 (which NumPy has no type for) comes as
    its uint16 bit patterns: `(bits.astype(np.uint32) << 16).view(np.float32)` gives the values;
    float8_e4m3fn and float8_e5m2 come as their uint8 codes (attncheck.fp8_values decodes them).
    The view is valid only during the call that received the tensor.
    """
    import numpy as np

    return np.asarray(_Bits(tensor))


def _fp8_table(exponent_bits: int, mantissa_bits: int, finite_top: bool):
    """The value of each of the 256 codes of an fp8 format (OCP 8-bit floating point
    specification, 2023): sign, exponent with bias 2^(e-1) - 1, mantissa; exponent 0 is
    subnormal. e4m3fn (finite_top) has no infinity, S.1111.111 is its NaN; e5m2 is IEEE-like."""
    import numpy as np

    bias = (1 << (exponent_bits - 1)) - 1
    top = (1 << exponent_bits) - 1
    values = np.empty(256, dtype=np.float64)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> mantissa_bits) & top
        m = code & ((1 << mantissa_bits) - 1)
        if finite_top and e == top and m == (1 << mantissa_bits) - 1:
            values[code] = np.nan
        elif not finite_top and e == top:
            values[code] = sign * np.inf if m == 0 else np.nan
        elif e == 0:
            values[code] = sign * m * 2.0 ** (1 - bias - mantissa_bits)
        else:
            values[code] = sign * (1 + m / (1 << mantissa_bits)) * 2.0 ** (e - bias)
    return values


_FP8_TABLES = {}


def fp8_values(codes, dtype: str):
    """The float64 values of fp8 codes (uint8, as as_numpy gives them); dtype 'e4m3'
    (float8_e4m3fn) or 'e5m2' (float8_e5m2). Exact: every fp8 value is a double."""
    import numpy as np

    name = {"float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2"}.get(dtype, dtype)
    if name not in ("e4m3", "e5m2"):
        raise ValueError(f"dtype {dtype!r}: use 'e4m3' or 'e5m2'")
    if name not in _FP8_TABLES:
        _FP8_TABLES[name] = _fp8_table(4, 3, True) if name == "e4m3" else _fp8_table(5, 2, False)
    return _FP8_TABLES[name][np.asarray(codes, dtype=np.uint8)]
