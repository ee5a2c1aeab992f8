"""A NumPy attention kernel as an attncheck backend: every Problem option, in float32, packed
variable-length batches and fp8 inputs with descales (the `options` it declares: FlashAttention's
varlen layout, FlashAttention 3's q_descale, k_descale, v_descale).

`NumpyAttention()` is correct; `NumpyAttention(planted_bug="causal-off-by-one")` lets each query
see one key past its causal diagonal, a bug attncheck's reference-agreement property catches;
`NumpyAttention(planted_bug="cu-seqlens-as-lengths")` reads cu_seqlens_k[b + 1], an offset, as
sequence b's key count, which varlen-equals-per-sequence catches;
`NumpyAttention(planted_bug="fp8-descale-twice")` multiplies V by its descale twice, which
fp8-reference-agreement catches.
Run from the command line:  python -m attncheck.cli run python/examples/numpy_kernel.py:NumpyAttention
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import attncheck

_PLANTED_BUGS = (None, "causal-off-by-one", "cu-seqlens-as-lengths", "fp8-descale-twice")
_FP8 = ("e4m3", "e5m2")


def _bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as a bf16 kernel stores its output; NaN stays a quiet NaN."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def _read(tensor) -> np.ndarray:
    """The tensor's values as float32 (exact for f32, f16, bf16 and fp8 inputs)."""
    values = attncheck.as_numpy(tensor)
    if tensor.dtype in ("float8_e4m3fn", "float8_e5m2"):
        return attncheck.fp8_values(values, tensor.dtype).astype(np.float32)  # exact: 4 or 3 significant bits
    if tensor.dtype == "bfloat16":
        return _bf16_bits_to_f32(values)
    return values.astype(np.float32)


class NumpyAttention:
    """Scaled dot-product attention with NumPy in float32, three-pass softmax."""

    name = "numpy-attention"
    description = "NumPy float32 attention (python/examples/numpy_kernel.py)"
    # The optional problem options forward implements (python/README.md): the suite hands this
    # backend packed batches, and declines every other option for it.
    options = ("varlen", "fp8")

    def __init__(self, planted_bug: str | None = None):
        if planted_bug not in _PLANTED_BUGS:
            raise ValueError(f"unknown planted bug {planted_bug!r}")
        self.planted_bug = planted_bug
        if planted_bug:
            self.name = f"numpy-attention-{planted_bug}"

    def profile(self, dtype):
        # Inputs are widened to float32 exactly; scores, P and both sums are float32 with one
        # rounding per product (k0 = 1 bounds any BLAS summation order); exp and tanh are taken in
        # float64 and rounded once, well inside the default u_E = u_T = 2^-22. Masked keys get
        # weight 0 in P·V (a matmul over all keys), so NaN there would propagate: declared.
        # fp8 codes are dequantized into float32 (code * descale, one rounding each) and run as
        # float32, the output written in float32: the float32 declaration with fp8 inputs.
        if dtype in _FP8:
            return attncheck.profile(input=dtype, score="f32", probability="f32", accumulator="f32", output="f32",
                                     softmax_block=0, deterministic=True, writes_lse=True,
                                     masked_keys_weighted_by_zero=True)
        if dtype not in ("f32", "f16", "bf16"):
            return None
        return attncheck.profile(input=dtype, score="f32", probability="f32", accumulator="f32", output=dtype,
                                 softmax_block=0, deterministic=True, writes_lse=True,
                                 masked_keys_weighted_by_zero=True)

    def supports(self, problem, dtype):
        if dtype in _FP8 and (problem.varlen or problem.mask == "bias"):
            return "fp8 inputs are taken padded and without an additive mask (as FlashAttention 3 takes them)"
        return None

    def forward(self, problem, t):
        # Poisoned (masked) keys may overflow in the products; they are excluded below.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._forward(problem, t)

    def _forward(self, problem, t):
        if problem.varlen:
            return self._forward_packed(problem, t)
        q, k, v = _read(t.q), _read(t.k), _read(t.v)
        if problem.descale != "none":
            q, k, v = self._dequantized(problem, t, q, k, v)
        mask = None
        if problem.mask != "none":
            mask = _read(t.mask) if problem.mask == "bias" else attncheck.as_numpy(t.mask)
        lengths = attncheck.as_numpy(t.key_lengths).astype(np.int64) if problem.has_key_lengths else None
        o, lse = self._attend(problem, q, k, v, mask, lengths)
        self._store(t.out, attncheck.as_numpy(t.out), o)
        if t.lse is not None:
            attncheck.as_numpy(t.lse)[...] = lse

    def _dequantized(self, problem, t, q, k, v):
        """Q(b, h) = q(b, h) * dq[b, h // group], K, V likewise per kv head (problem.h), in float32."""
        B, Hkv = problem.batch, problem.kv_heads

        def factors(tensor, heads, group):
            d = attncheck.as_numpy(tensor).astype(np.float32).reshape(-1)
            per_head = np.broadcast_to(d, (B * Hkv,)).reshape(B, Hkv) if d.size == 1 else d.reshape(B, Hkv)
            return np.repeat(per_head, group, axis=1).reshape(B, heads, 1, 1)

        group = problem.group_size()
        q = q * factors(t.q_descale, problem.q_heads, group)
        k = k * factors(t.k_descale, Hkv, 1)
        dv = factors(t.v_descale, Hkv, 1)
        v = v * dv
        if self.planted_bug == "fp8-descale-twice":
            v = v * dv
        return q, k, v

    @staticmethod
    def _store(tensor, out, o):
        out[...] = _f32_to_bf16_bits(o) if tensor.dtype == "bfloat16" else o.astype(out.dtype)

    def _forward_packed(self, problem, t):
        """Each packed sequence alone: q [Tq, Hq, Dk], k and v [Tk, Hkv, D], out [Tq, Hq, Dv], lse [Hq, Tq]."""
        q, k, v = _read(t.q), _read(t.k), _read(t.v)
        cu_q = attncheck.as_numpy(t.cu_seqlens_q).astype(np.int64)
        cu_k = attncheck.as_numpy(t.cu_seqlens_k).astype(np.int64)
        out = attncheck.as_numpy(t.out)
        for b in range(problem.batch):
            q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
            if self.planted_bug == "cu-seqlens-as-lengths":
                k1 = min(k0 + cu_k[b + 1], k.shape[0], k0 + problem.k_len)
            if q1 == q0:
                continue
            # One sequence as a padded batch of one; no key at all: one masked slot.
            keys = k1 - k0
            qs = np.swapaxes(q[q0:q1], 0, 1)[None]
            ks = np.swapaxes(k[k0:k1], 0, 1)[None] if keys else np.zeros((1, problem.kv_heads, 1, problem.qk_dim), np.float32)
            vs = np.swapaxes(v[k0:k1], 0, 1)[None] if keys else np.zeros((1, problem.kv_heads, 1, problem.v_dim), np.float32)
            alone = SimpleNamespace(batch=1, q_heads=problem.q_heads, q_len=int(q1 - q0), k_len=max(int(keys), 1),
                                    scale=problem.scale, softcap=problem.softcap, mask="none", mask_k_len=1,
                                    causal=problem.causal, alignment=problem.alignment, diagonal_offset=0,
                                    window_left=problem.window_left, window_right=problem.window_right,
                                    group_size=problem.group_size, has_window=problem.has_window)
            o, lse = self._attend(alone, qs, ks, vs, None, np.array([keys]))
            self._store(t.out, out[q0:q1], np.swapaxes(o[0], 0, 1))
            if t.lse is not None:
                attncheck.as_numpy(t.lse)[:, q0:q1] = lse[0]

    def _attend(self, problem, q, k, v, mask, lengths):
        """O [B, Hq, Lq, Dv] and LSE [B, Hq, Lq] in float32 of padded q, k, v."""
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
        if mask is not None:
            padded = np.zeros(mask.shape[:3] + (Lk,), dtype=mask.dtype)
            padded[..., : problem.mask_k_len] = mask
            in_mask = np.arange(Lk) < problem.mask_k_len
            if problem.mask == "bool":
                allowed &= (padded != 0) & in_mask
            else:
                s = s + padded.astype(np.float32)
                allowed &= in_mask & (padded != -np.inf)
        lengths = np.full(B, Lk) if lengths is None else lengths
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
        lse = np.where(empty[..., 0], np.float32(-np.inf), m[..., 0] + np.log(safe[..., 0]))
        return o, lse
