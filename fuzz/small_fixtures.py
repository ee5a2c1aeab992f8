#!/usr/bin/env python3
"""Writes small, valid fixture files (fixtures/README.md, version 1) for fuzz_fixture_reader.

    fuzz/small_fixtures.py OUT_DIR

The golden fixtures are 10-90 KB each, and libFuzzer mutates whole inputs: seeded with them alone,
every execution hashes, copies and converts tens of kilobytes of tensor data that no parser
decision depends on. These files hold the same variety (every kind, input dtype, mask kind,
alignment, key lengths, the optional expected outputs) in a few hundred bytes each, so mutation
explores the header at a small fraction of the cost. The tensor values are arbitrary: the reader
never looks at them. Only the standard library is used.
"""
import hashlib
import json
import pathlib
import struct
import sys

WIDTH = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I64": 8}
ONE = {"F64": struct.pack("<d", 1.0), "F32": struct.pack("<f", 1.0), "F16": b"\x00\x3c", "BF16": b"\x80\x3f",
       "U8": b"\x01", "I64": struct.pack("<q", 1)}
STORAGE = {"f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64"}
# The writer's canonical tensor order (fixture.cpp, kTensorNames).
ORDER = ["q", "k", "v", "mask", "key_lengths", "past_k", "past_v", "x", "x_kv", "w_q", "w_k", "w_v", "b_q",
         "b_k", "b_v", "w_o", "b_o", "out", "lse"]


def encode(kind, problem, dtype, tensors, layer=None, extra=None):
    """The bytes write_fixture would write for these (dtype, shape, fill byte string) tensors."""
    data, header, offset = b"", {}, 0
    for name in ORDER:
        if name not in tensors:
            continue
        storage, shape = tensors[name]
        count = 1
        for d in shape:
            count *= d
        blob = ONE[storage] * count
        header[name] = {"dtype": storage, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        data += blob
        offset += len(blob)
    meta = {"format": "attncheck-fixture", "format_version": "1", "kind": kind, "problem": problem,
            "input_dtype": dtype, "generator": "fuzz/small_fixtures.py", "seed": "1",
            "attncheck_version": "0.1.0", "sha256": hashlib.sha256(data).hexdigest()}
    if layer:
        meta["layer"] = layer
    meta.update(extra or {})
    text = json.dumps({"__metadata__": dict(sorted(meta.items())), **header}, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + data


def fields(problem):
    return {k: v for k, v in (item.split("=", 1) for item in problem.split())}


def attention(problem, dtype, outputs=True, mask_storage=None):
    f = fields(problem)
    b, hq, hkv, lq, lk, dk, dv = (int(f[k]) for k in ("B", "Hq", "Hkv", "Lq", "Lk", "Dk", "Dv"))
    s = STORAGE[dtype]
    t = {"q": (s, [b, hq, lq, dk]), "k": (s, [b, hkv, lk, dk]), "v": (s, [b, hkv, lk, dv])}
    if "mask" in f:
        kind, dims = f["mask"].split(":")
        t["mask"] = ("U8" if kind == "bool" else mask_storage or s, [int(d) for d in dims.split("x")])
    if f.get("keylens") == "1":
        t["key_lengths"] = ("I64", [b])
    if outputs:
        t["out"] = ("F64", [b, hq, lq, dv])
        t["lse"] = ("F64", [b, hq, lq])
    return encode("attention", problem, dtype, t)


def decode(problem, past, dtype):
    f = fields(problem)
    b, hq, hkv, lq, lk, dk, dv = (int(f[k]) for k in ("B", "Hq", "Hkv", "Lq", "Lk", "Dk", "Dv"))
    s = STORAGE[dtype]
    fresh = lk - past
    t = {"q": (s, [b, hq, lq, dk]), "k": (s, [b, hkv, fresh, dk]), "v": (s, [b, hkv, fresh, dv]),
         "past_k": (s, [b, hkv, past, dk]), "past_v": (s, [b, hkv, past, dv]),
         "out": ("F64", [b, hq, lq, dv]), "lse": ("F64", [b, hq, lq])}
    return encode("decode", problem, dtype, t)


def layer(problem, dtype, cross=False, qkv_bias=False, out_bias=False):
    f = fields(problem)
    b, hq, hkv, lq, lk, dk, dv = (int(f[k]) for k in ("B", "Hq", "Hkv", "Lq", "Lk", "Dk", "Dv"))
    dm = 3
    s = STORAGE[dtype]
    flags = " cross=1" * cross + " qkvbias=1" * qkv_bias + " outbias=1" * out_bias
    t = {"x": (s, [b, lq, dm]), "w_q": (s, [hq, dm, dk]), "w_k": (s, [hkv, dm, dk]), "w_v": (s, [hkv, dm, dv]),
         "w_o": (s, [hq * dv, dm]), "out": ("F64", [b, lq, dm])}
    if cross:
        t["x_kv"] = (s, [b, lk, dm])
    if qkv_bias:
        t.update({"b_q": (s, [hq, dk]), "b_k": (s, [hkv, dk]), "b_v": (s, [hkv, dv])})
    if out_bias:
        t["b_o"] = (s, [dm])
    return encode("layer", problem, dtype, t, layer=f"{problem} dmodel={dm}{flags}")


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    base = "B=1 Hq=2 Hkv=1 Lq=2 Lk=3 Dk=2 Dv=1"
    files = {
        "mha_f32": attention("B=1 Hq=1 Hkv=1 Lq=1 Lk=1 Dk=1 Dv=1", "f32"),
        "gqa_f16": attention(base, "f16"),
        "gqa_bf16_inputs_only": attention(base, "bf16", outputs=False),
        "f64": attention(base, "f64"),
        "causal_top_left": attention(base + " causal=1", "f32"),
        "causal_bottom_right": attention(base + " causal=1 align=bottom-right", "f16"),
        "causal_offset": attention(base + " causal=1 align=offset offset=1", "bf16"),
        "causal_key_lengths": attention("B=2 Hq=1 Hkv=1 Lq=1 Lk=2 Dk=1 Dv=1 causal=1 align=key-lengths keylens=1", "f32"),
        "key_lengths": attention("B=2 Hq=1 Hkv=1 Lq=1 Lk=2 Dk=1 Dv=1 keylens=1", "f16"),
        "window": attention(base + " window=1,0", "f32"),
        "softcap_scale": attention(base + " scale=0.5 softcap=30", "f32"),
        "bool_mask": attention(base + " mask=bool:1x1x2x3", "f32"),
        "bias_mask_short": attention(base + " mask=bias:1x2x1x2", "bf16"),
        "bias_mask_f64": attention(base + " mask=bias:1x1x1x3", "f16", mask_storage="F64"),
        "all_options": attention("B=1 Hq=2 Hkv=1 Lq=2 Lk=3 Dk=1 Dv=1 scale=0.125 softcap=30 causal=1 align=offset "
                                 "offset=1 window=2,-1 mask=bias:1x1x2x2", "f32"),
        "decode": decode("B=1 Hq=2 Hkv=1 Lq=1 Lk=3 Dk=1 Dv=1 causal=1 align=offset offset=2", 2, "f16"),
        "layer_self": layer("B=1 Hq=2 Hkv=1 Lq=2 Lk=2 Dk=1 Dv=1 causal=1", "f32", qkv_bias=True),
        "layer_cross": layer("B=1 Hq=2 Hkv=1 Lq=1 Lk=2 Dk=1 Dv=1", "bf16", cross=True, out_bias=True),
    }
    for name, data in files.items():
        (out / f"small_{name}.safetensors").write_bytes(data)


if __name__ == "__main__":
    main()
