"""The fixture format (fixtures/README.md: safetensors with a checked header) from Python, read and
written by the suite's own C++ reader and writer, so a file made here is one `attncheck verify`
reads and the other way round.

Tensors are NumPy arrays in their storage type: F32, F16, F64, U8 and I64 as float32, float16,
float64, uint8 and int64; BF16, F8_E4M3 and F8_E5M2, which NumPy has no type for, as their uint16
and uint8 bit patterns (the Fixture's `storage` says which).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Union

import numpy as np

from . import _engine
from ._engine import Problem

__all__ = ["Fixture", "read", "write", "with_reference_outputs"]

_NUMPY_TYPE = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "U8": "|u1", "I64": "<i8",
               "F8_E4M3": "|u1", "F8_E5M2": "|u1"}
_STORAGE_OF = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64", np.dtype("|u1"): "U8",
               np.dtype("<i8"): "I64"}


@dataclasses.dataclass
class Fixture:
    kind: str                      # attention | layer | decode
    problem: Problem
    input_dtype: str               # f32 | f16 | bf16
    tensors: Dict[str, np.ndarray]
    storage: Dict[str, str] = dataclasses.field(default_factory=dict)  # name -> F32, BF16, ...; default from the array
    layer: str = ""                # LayerProblem::describe() text for a layer fixture
    generator: str = ""
    seed: int = 0
    attncheck_version: str = ""    # filled by the writer when empty
    metadata: Dict[str, str] = dataclasses.field(default_factory=dict)
    softmax_precision: Optional[str] = None
    empty_rows: str = "zero"


def _from_engine(d: dict) -> Fixture:
    tensors, storage = {}, {}
    for name, (type_name, shape, data) in d["tensors"].items():
        tensors[name] = np.frombuffer(data, dtype=_NUMPY_TYPE[type_name]).reshape(shape).copy()
        storage[name] = type_name
    generator, seed, version = d["provenance"]
    return Fixture(kind=d["kind"], problem=d["problem"], input_dtype=d["input_dtype"], tensors=tensors, storage=storage,
                   layer=d["layer"], generator=generator, seed=seed, attncheck_version=version, metadata=dict(d["metadata"]),
                   softmax_precision=d["softmax_precision"], empty_rows=d["empty_rows"])


def _to_engine(f: Fixture) -> dict:
    tensors = {}
    for name, array in f.tensors.items():
        array = np.asarray(array)
        type_name = f.storage.get(name) or _STORAGE_OF.get(array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype)
        if type_name is None:
            raise TypeError(f"fixture tensor '{name}': no storage type for {array.dtype} (give Fixture.storage[{name!r}])")
        data = np.ascontiguousarray(array, dtype=_NUMPY_TYPE[type_name]).tobytes()
        tensors[name] = (type_name, list(array.shape), data)
    return {"kind": f.kind, "problem": f.problem, "layer": f.layer, "input_dtype": f.input_dtype,
            "provenance": (f.generator, int(f.seed), f.attncheck_version), "metadata": dict(f.metadata),
            "tensors": tensors, "softmax_precision": f.softmax_precision, "empty_rows": f.empty_rows}


def read(path: Union[str, os.PathLike]) -> Fixture:
    """Reads and checks a fixture file (its SHA-256, shapes and dtypes); ValueError says what is wrong."""
    return _from_engine(_engine.read_fixture(os.fspath(path)))


def write(path: Union[str, os.PathLike], fixture: Fixture) -> None:
    """Writes `fixture` in the suite's format (the C++ writer: canonical order, checksum)."""
    _engine.write_fixture(os.fspath(path), _to_engine(fixture))


def with_reference_outputs(fixture: Fixture) -> Fixture:
    """The fixture with `out` and `lse` computed by the double reference from its inputs, as
    `attncheck reference in.safetensors -o out.safetensors` does."""
    return _from_engine(_engine.with_reference_outputs(_to_engine(fixture)))
