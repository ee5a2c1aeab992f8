"""A NumPy attention kernel as an attncheck backend: every Problem option, in float32.

`NumpyAttention()` is correct; `NumpyAttention(planted_bug="causal-off-by-one")` lets each query
see one key past its causal diagonal, a bug attncheck's reference-agreement property catches.
Run from the command line:  python -m attncheck.cli run python/examples/numpy_kernel.py:NumpyAttention
"""

from __future__ import annotations

import numpy as np

import attncheck


def _bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as a bf16 kernel stores its output; NaN stays a quiet NaN."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def _read(tensor) -> np.ndarray:
    """The tensor's values as float32 (exact for f32, f16 and bf16 inputs)."""
    values = attncheck.as_numpy(tensor)
    if tensor.dtype == "bfloat16":
        return _bf16_bits_to_f32(values)
    return values.astype(np.float32)


class NumpyAttention:
    """Scaled dot-product attention with NumPy in float32, three-pass softmax."""

    name = "numpy-attention"
    description = "NumPy float32 attention (python/examples/numpy_kernel.py)"

    def __init__(self, planted_bug: str | None = None):
        if planted_bug not in (None, "causal-off-by-one"):
            raise ValueError(f"unknown planted bug {planted_bug!r}")
        self.planted_bug = planted_bug
        if planted_bug:
            self.name = f"numpy-attention-{planted_bug}"

    def profile(self, dtype):
        # Inputs are widened to float32 exactly; scores, P and both sums are float32 with one
        # rounding per product (k0 = 1 bounds any BLAS summation order); exp and tanh are taken in
        # float64 and rounded once, well inside the default u_E = u_T = 2^-22. Masked keys get
        # weight 0 in P·V (a matmul over all keys), so NaN there would propagate: declared.
        if dtype not in ("f32", "f16", "bf16"):
            return None
        return attncheck.profile(input=dtype, score="f32", probability="f32", accumulator="f32", output=dtype,
                                 softmax_block=0, deterministic=True, writes_lse=True,
                                 masked_keys_weighted_by_zero=True)

    def supports(self, problem, dtype):
        return None

    def forward(self, problem, t):
        # Poisoned (masked) keys may overflow in the products; they are excluded below.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._forward(problem, t)

    def _forward(self, problem, t):
        q, k, v = _read(t.q), _read(t.k), _read(t.v)
        B, Hq, Lq, Lk = problem.batch, problem.q_heads, problem.q_len, problem.k_len
        group = problem.group_size()
        # GQA: query head h reads kv head h // (Hq / Hkv).
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        s = np.float32(problem.scale) * np.matmul(q, np.swapaxes(k, -1, -2))
        if problem.softcap > 0:
            c = problem.softcap
            s = (c * np.tanh(s.astype(np.float64) / c)).astype(np.float32)
        allowed = np.ones((B, Hq, Lq, Lk), dtype=bool)
        if problem.mask != "none":
            mask = _read(t.mask) if problem.mask == "bias" else attncheck.as_numpy(t.mask)
            padded = np.zeros(mask.shape[:3] + (Lk,), dtype=mask.dtype)
            padded[..., : problem.mask_k_len] = mask
            in_mask = np.arange(Lk) < problem.mask_k_len
            if problem.mask == "bool":
                allowed &= (padded != 0) & in_mask
            else:
                s = s + padded.astype(np.float32)
                allowed &= in_mask & (padded != -np.inf)
        lengths = attncheck.as_numpy(t.key_lengths).astype(np.int64) if problem.has_key_lengths else np.full(B, Lk)
        allowed &= np.arange(Lk)[None, None, None, :] < lengths[:, None, None, None]
        if problem.causal or problem.has_window():
            if problem.alignment == "bottom-right":
                offset = np.full(B, Lk - Lq)
            elif problem.alignment == "offset":
                offset = np.full(B, problem.diagonal_offset)
            elif problem.alignment == "key-lengths":
                offset = lengths - Lq
            else:
                offset = np.zeros(B, dtype=np.int64)
            p = np.arange(Lq)[None, :, None] + offset[:, None, None]  # [B, Lq, 1]
            j = np.arange(Lk)[None, None, :]
            diagonal = p + (1 if self.planted_bug == "causal-off-by-one" else 0)
            keep = np.ones((B, Lq, Lk), dtype=bool)
            if problem.causal:
                keep &= j <= diagonal
            if problem.window_left >= 0:
                keep &= j >= p - problem.window_left
            if problem.window_right >= 0:
                keep &= j <= p + problem.window_right
            allowed &= keep[:, None, :, :]
        s = np.where(allowed, s, np.float32(-np.inf))
        m = np.max(s, axis=-1, keepdims=True)
        empty = ~np.isfinite(m)
        m = np.where(empty, np.float32(0), m)
        e = np.where(allowed, np.exp((s - m).astype(np.float64)).astype(np.float32), np.float32(0))
        total = np.sum(e, axis=-1, keepdims=True, dtype=np.float32)
        safe = np.where(empty, np.float32(1), total)
        o = np.matmul(e / safe, v)
        o = np.where(empty, np.float32(0), o)
        out = attncheck.as_numpy(t.out)
        out[...] = _f32_to_bf16_bits(o) if t.out.dtype == "bfloat16" else o.astype(out.dtype)
        if t.lse is not None:
            lse = np.where(empty[..., 0], np.float32(-np.inf), m[..., 0] + np.log(safe[..., 0]))
            attncheck.as_numpy(t.lse)[...] = lse
