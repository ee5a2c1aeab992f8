"""ONNX Runtime's attention operators (CPU execution provider) as attncheck backends.

Each problem becomes a one-node ONNX graph made with the `onnx` package, and an inference session
of it, cached by everything that shapes the graph (input shapes and dtypes, attributes, which
optional inputs are present):

  ort-attention-23, ort-attention-24  the ONNX `Attention` op at opset 23 and 24
  ort-mha                            com.microsoft `MultiHeadAttention`
  ort-gqa                            com.microsoft `GroupQueryAttention`

Every Problem option an operator has is mapped to it; what it has no attribute for (a causal
diagonal other than its own, windows, key lengths) is folded into the mask input where the
operator takes one, and declined with the reason otherwise. None of these operators returns the
log-sum-exp, so no profile declares writes_lse.

Measured on onnxruntime 1.32.0 while writing the adapters (python/README.md, "ONNX Runtime"):
  - Attention (CPU) refuses a mask shorter than the keys ("inconsistent total_sequence_length",
    core/providers/cpu/llm/attention_helper.h), although opset 24 defines such a mask as padded
    with masked keys; the adapter pads it itself, so that rule is not what is checked.
  - Attention refuses a mask broadcast over the query axis ("inconsistent q_sequence_length"),
    which ONNX allows; the adapter expands it.
  - Attention has no bfloat16 CPU kernel ("Could not find an implementation for Expand(13)").
  - MultiHeadAttention writes NaN for a row whose keys are all masked; declared (empty_row="nan").
  - GroupQueryAttention needs one head size for Q, K and V, a multiple of 8 ("head_size must be
    a multiple of 8"; the adapter zero-pads, which changes no score and no kept output), and is
    causal only (bottom-right: new tokens after the past ones).
"""

from __future__ import annotations

import numpy as np

import attncheck

try:  # the adapters need both; the tests skip with this reason when they are missing
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    ort.set_default_logger_severity(4)  # ORT's errors reach the case as exceptions, not as log lines
    MISSING = None
except ImportError as error:  # pragma: no cover - depends on the environment
    MISSING = f"onnx and onnxruntime are needed: {error}"

_ONNX_TYPE = {"f32": 1, "f16": 10}  # TensorProto.FLOAT, TensorProto.FLOAT16
_NUMPY = {"f32": np.float32, "f16": np.float16}


def _values(tensor, dtype: str) -> np.ndarray:
    """A compact NumPy copy of a call tensor (ORT binds compact buffers)."""
    return np.ascontiguousarray(np.from_dlpack(tensor)).astype(_NUMPY[dtype], copy=False)


def _diagonal_offset(problem, lengths: np.ndarray) -> np.ndarray:
    """offset(b) of problem.h: row i's diagonal is p = i + offset(b)."""
    B = problem.batch
    if problem.alignment == "bottom-right":
        return np.full(B, problem.k_len - problem.q_len)
    if problem.alignment == "offset":
        return np.full(B, problem.diagonal_offset)
    if problem.alignment == "key-lengths":
        return lengths - problem.q_len
    return np.zeros(B, dtype=np.int64)


def allowed_keys(problem, t) -> np.ndarray:
    """[B, 1 or Hq, Lq, Lk] booleans: which keys each row may attend, from every masking option
    except an additive bias (-inf in a bias is handled by the caller adding the bias)."""
    B, Lq, Lk = problem.batch, problem.q_len, problem.k_len
    lengths = np.from_dlpack(t.key_lengths).astype(np.int64) if problem.has_key_lengths else np.full(B, Lk)
    allowed = np.ones((B, 1, Lq, Lk), dtype=bool)
    allowed &= np.arange(Lk)[None, None, None, :] < lengths[:, None, None, None]
    if problem.causal or problem.has_window():
        p = np.arange(Lq)[None, :, None] + _diagonal_offset(problem, lengths)[:, None, None]
        j = np.arange(Lk)[None, None, :]
        keep = np.ones((B, Lq, Lk), dtype=bool)
        if problem.causal:
            keep &= j <= p
        if problem.window_left >= 0:
            keep &= j >= p - problem.window_left
        if problem.window_right >= 0:
            keep &= j <= p + problem.window_right
        allowed &= keep[:, None]
    if problem.mask == "bool":
        mask = np.from_dlpack(t.mask) != 0
        padded = np.zeros(mask.shape[:3] + (Lk,), dtype=bool)
        padded[..., : problem.mask_k_len] = mask
        allowed = allowed & padded
    elif problem.mask == "bias":
        in_mask = np.arange(Lk) < problem.mask_k_len
        allowed = allowed & in_mask[None, None, None, :]
    return allowed


def padded_bias(problem, t, dtype: str) -> np.ndarray:
    """The additive mask padded to Lk keys (0 beyond mask_k_len: those keys are excluded by
    allowed_keys), in the input dtype the operator reads it in."""
    bias = np.from_dlpack(t.mask).astype(np.float32)
    padded = np.zeros(bias.shape[:3] + (problem.k_len,), dtype=np.float32)
    padded[..., : problem.mask_k_len] = bias
    return padded.astype(_NUMPY[dtype])


def _ort_error(error: Exception) -> Exception:
    """ORT's own message, as the case's failure (or decline) text."""
    return RuntimeError(f"onnxruntime: {str(error).strip().splitlines()[0]}")


class _OrtBackend:
    """Session cache and the parts every operator shares."""

    description = ""

    def __init__(self):
        if MISSING:
            raise RuntimeError(MISSING)
        self._sessions = {}
        options = ort.SessionOptions()
        # One thread: the suite's machines are small, and a single-threaded MLAS sums in one order.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 4
        self._options = options

    def session(self, key, build):
        session = self._sessions.get(key)
        if session is None:
            model = build()
            model.ir_version = 10
            try:
                session = ort.InferenceSession(model.SerializeToString(), self._options, providers=["CPUExecutionProvider"])
            except Exception as error:  # ORT raises its own exception types (Fail, NotImplemented, ...)
                raise attncheck.Unsupported(f"onnxruntime cannot build this graph: {str(error).splitlines()[0]}")
            if len(self._sessions) > 256:
                self._sessions.clear()
            self._sessions[key] = session
        return session

    @staticmethod
    def run_session(session, feeds):
        try:
            return session.run(None, feeds)
        except Exception as error:
            raise _ort_error(error) from None


class OrtAttention(_OrtBackend):
    """The ONNX Attention operator (opset 23 or 24) on ORT's CPU execution provider."""

    def __init__(self, opset: int):
        super().__init__()
        if opset not in (23, 24):
            raise ValueError("opset must be 23 or 24")
        self.opset = opset
        self.name = f"ort-attention-{opset}"
        self.description = f"onnxruntime {ort.__version__} CPU, ONNX Attention opset {opset}"

    def profile(self, dtype):
        # core/providers/cpu/llm/attention.cc (ORT 1.32): Q·Kᵀ and P·V are MLAS GEMMs in float, the
        # softmax is three-pass in float (max, exp and sum, divide). For float16 inputs the source
        # was not read line by line: declared is the widest-error reading, fp16 scores, P and
        # sums. (Measured: fp32 scores with P stored in fp16 is too narrow; identity-values f16
        # then fails on its probability term, r = 3.8, so the scores are rounded to fp16.)
        # Masked keys enter the P·V GEMM with weight 0 (the mask is added as -inf before the
        # softmax), so NaN there would propagate: declared.
        if dtype == "f32":
            return attncheck.profile(input="f32", score="f32", probability="f32", accumulator="f32", output="f32",
                                     softmax_block=0, deterministic=True, masked_keys_weighted_by_zero=True)
        if dtype == "f16":
            return attncheck.profile(input="f16", score="f16", probability="f16", accumulator="f16", output="f16",
                                     softmax_block=0, deterministic=True, masked_keys_weighted_by_zero=True)
        return None  # no bfloat16 CPU kernel (see the module docstring)

    def supports(self, problem, dtype):
        if problem.scale <= 0:
            # core/providers/cpu/llm/attention.cc: "scale must be greater than 0 if specified".
            return "ORT's Attention takes a scale > 0 only"
        return None

    def forward(self, problem, t):
        dtype = "f16" if t.q.dtype == "float16" else "f32"
        q, k, v = _values(t.q, dtype), _values(t.k, dtype), _values(t.v, dtype)
        # The operator's own causal mask is top-left (verified with a closed-form toy case); any
        # other diagonal, a window or key lengths go into the mask.
        native_causal = problem.causal and not problem.has_window() and not problem.has_key_lengths and (
            problem.alignment == "top-left" or (problem.alignment == "bottom-right" and problem.q_len == problem.k_len)
            or (problem.alignment == "offset" and problem.diagonal_offset == 0))
        folded = (problem.causal and not native_causal) or problem.has_window() or problem.has_key_lengths
        mask = None
        if problem.mask == "bias":
            bias = padded_bias(problem, t, dtype)
            if folded or problem.mask_k_len < problem.k_len:
                allowed = allowed_keys(problem, t) if folded else (np.arange(problem.k_len) < problem.mask_k_len)
                bias = np.where(allowed, bias, np.array(-np.inf, dtype=bias.dtype))
            mask = bias
        elif problem.mask == "bool" or folded:
            mask = allowed_keys(problem, t)
        feeds = {"Q": q, "K": k, "V": v}
        if mask is not None:
            # ORT refuses a mask broadcast over queries ("inconsistent q_sequence_length (between
            # attn_mask and Q)", attention_helper.h), which ONNX allows: expanded here.
            if mask.shape[2] != problem.q_len:
                mask = np.ascontiguousarray(np.broadcast_to(mask, mask.shape[:2] + (problem.q_len, problem.k_len)))
            feeds["M"] = mask
        key = (q.shape, k.shape, v.shape, dtype, None if mask is None else (mask.shape, mask.dtype.str),
               native_causal, problem.scale, problem.softcap)

        def build():
            inputs = [helper.make_tensor_value_info(n, _ONNX_TYPE[dtype], a.shape) for n, a in (("Q", q), ("K", k), ("V", v))]
            names = ["Q", "K", "V"]
            if mask is not None:
                mask_type = TensorProto.BOOL if mask.dtype == np.bool_ else _ONNX_TYPE[dtype]
                inputs.append(helper.make_tensor_value_info("M", mask_type, mask.shape))
                names.append("M")
            attributes = {"scale": float(problem.scale), "is_causal": int(native_causal)}
            if problem.softcap > 0:
                attributes["softcap"] = float(problem.softcap)
            node = helper.make_node("Attention", names, ["Y"], **attributes)
            out = helper.make_tensor_value_info("Y", _ONNX_TYPE[dtype], None)
            graph = helper.make_graph([node], "attention", inputs, [out])
            return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])

        y = self.run_session(self.session(key, build), feeds)[0]
        np.from_dlpack(t.out)[...] = y


class OrtMultiHeadAttention(_OrtBackend):
    """com.microsoft MultiHeadAttention: query [B, S, Hq·Dk], key [B, L, Hq·Dk], value [B, L, Hq·Dv]
    and an additive attention_bias [1 or B, 1 or Hq, S, L] (contrib_ops/cpu/bert/multihead_attention.cc)."""

    name = "ort-mha"

    def __init__(self):
        super().__init__()
        self.description = f"onnxruntime {ort.__version__} CPU, com.microsoft MultiHeadAttention"

    def profile(self, dtype):
        # contrib_ops/cpu/bert/attention_cpu_base.h (ORT 1.32): float GEMMs (MLAS) and
        # ComputeAttentionSoftmaxInplace (attention_helper.h), a three-pass float softmax. Its
        # float16 path is not in the CPU kernel registrations of this version (declined). A row
        # with every key masked gives NaN (measured; the mask is an additive -inf).
        if dtype != "f32":
            return None
        return attncheck.profile(input="f32", score="f32", probability="f32", accumulator="f32", output="f32",
                                 softmax_block=0, deterministic=True, empty_row="nan",
                                 masked_keys_weighted_by_zero=True)

    def supports(self, problem, dtype):
        if problem.scale == 0:
            return "MultiHeadAttention reads scale = 0 as its default 1/sqrt(head size)"
        if problem.kv_heads != problem.q_heads:
            return "MultiHeadAttention has one kv head per query head (no GQA)"
        if problem.softcap > 0:
            return "MultiHeadAttention has no softcap"
        return None

    def forward(self, problem, t):
        B, H, S, L, Dk, Dv = problem.batch, problem.q_heads, problem.q_len, problem.k_len, problem.qk_dim, problem.v_dim
        q = _values(t.q, "f32").transpose(0, 2, 1, 3).reshape(B, S, H * Dk)
        k = _values(t.k, "f32").transpose(0, 2, 1, 3).reshape(B, L, H * Dk)
        v = _values(t.v, "f32").transpose(0, 2, 1, 3).reshape(B, L, H * Dv)
        # Every masking option as one additive bias: the operator's unidirectional attribute did
        # not match either causal alignment in a measurement, so causality is not left to it.
        allowed = allowed_keys(problem, t)
        bias = padded_bias(problem, t, "f32") if problem.mask == "bias" else np.zeros((1, 1, 1, L), np.float32)
        bias = np.ascontiguousarray(np.where(allowed, bias, np.float32(-np.inf)), dtype=np.float32)
        feeds = {"query": q, "key": k, "value": v, "attention_bias": bias}
        key = (q.shape, k.shape, v.shape, bias.shape, H, problem.scale)

        def build():
            inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in feeds.items()]
            node = helper.make_node("MultiHeadAttention", ["query", "key", "value", "", "", "attention_bias"], ["output"],
                                    domain="com.microsoft", num_heads=H, scale=float(problem.scale))
            out = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
            graph = helper.make_graph([node], "mha", inputs, [out])
            return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])

        y = self.run_session(self.session(key, build), feeds)[0]
        np.from_dlpack(t.out)[...] = y.reshape(B, S, H, Dv).transpose(0, 2, 1, 3)


class OrtGroupQueryAttention(_OrtBackend):
    """com.microsoft GroupQueryAttention: query [B, S, Hq·D], the S new keys and values
    [B, S, Hkv·D], the past cache [B, Hkv, P, D], seqlens_k [B] (total length − 1) and
    total_sequence_length; causal with the new tokens after the past ones
    (contrib_ops/cpu/bert/group_query_attention.cc, gqa_attention_base.h)."""

    name = "ort-gqa"

    def __init__(self):
        super().__init__()
        self.description = f"onnxruntime {ort.__version__} CPU, com.microsoft GroupQueryAttention"

    def profile(self, dtype):
        # contrib_ops/cpu/bert/gqa_attention_base.h (ORT 1.32): float GEMMs (MLAS) and the
        # three-pass float softmax of attention_helper.h. float16 is registered on CPU, but its
        # arithmetic was not read line by line: declared is fp32 scores and sums with P stored in
        # fp16 for the P·V product (fp16 scores would overflow on the suite's large-logit rows,
        # where the kernel stays finite), the reading that covers an fp16 GEMM on fp32-converted
        # softmax weights.
        if dtype == "f32":
            return attncheck.profile(input="f32", score="f32", probability="f32", accumulator="f32", output="f32",
                                     softmax_block=0, deterministic=True)
        if dtype == "f16":
            return attncheck.profile(input="f16", score="f32", probability="f16", accumulator="f32", output="f16",
                                     softmax_block=0, deterministic=True)
        return None

    def supports(self, problem, dtype):
        if not problem.causal:
            return "GroupQueryAttention is causal only"
        if problem.scale == 0:
            # Measured: identity-values with scale = 0 gave the weights of 1/sqrt(head size).
            return "GroupQueryAttention reads scale = 0 as its default 1/sqrt(head size)"
        past = problem.k_len - problem.q_len
        aligned = (problem.alignment == "bottom-right" or (problem.alignment == "top-left" and past == 0)
                   or (problem.alignment == "offset" and problem.diagonal_offset == past))
        if not aligned or past < 0:
            return "GroupQueryAttention's causal diagonal is bottom-right (new tokens after the cache)"
        if problem.has_window():
            return "local_window_size is not mapped"
        if problem.mask != "none":
            return "GroupQueryAttention takes no mask in this adapter"
        if problem.has_key_lengths:
            return "per-batch key lengths need a ragged cache; not mapped"
        if problem.batch > 1 and problem.q_len > 1 and problem.k_len > problem.q_len:
            # Measured: "batch_size must be 1 when sequence_length > 1 and past context is given".
            return "GroupQueryAttention takes several new tokens after a cache only for batch 1"
        return None

    def forward(self, problem, t):
        dtype = "f16" if t.q.dtype == "float16" else "f32"
        B, Hq, Hkv, S, L = problem.batch, problem.q_heads, problem.kv_heads, problem.q_len, problem.k_len
        P = L - S
        # The operator takes one head size, a multiple of 8: Q, K and V are zero-padded to it.
        # Padding Q and K adds products of zero to each score (exact), and V's padded columns
        # only produce output columns that are dropped, so the problem is unchanged.
        Dk, Dv = problem.qk_dim, problem.v_dim
        D = -(-max(Dk, Dv) // 8) * 8

        def padded(x, width):
            out = np.zeros(x.shape[:3] + (D,), dtype=x.dtype)
            out[..., :width] = x
            return out

        q = padded(_values(t.q, dtype), Dk).transpose(0, 2, 1, 3).reshape(B, S, Hq * D)
        k_all, v_all = padded(_values(t.k, dtype), Dk), padded(_values(t.v, dtype), Dv)
        k_new = np.ascontiguousarray(k_all[:, :, P:].transpose(0, 2, 1, 3).reshape(B, S, Hkv * D))
        v_new = np.ascontiguousarray(v_all[:, :, P:].transpose(0, 2, 1, 3).reshape(B, S, Hkv * D))
        past_k = np.ascontiguousarray(k_all[:, :, :P])
        past_v = np.ascontiguousarray(v_all[:, :, :P])
        feeds = {"query": q, "key": k_new, "value": v_new, "past_key": past_k, "past_value": past_v,
                 "seqlens_k": np.full(B, L - 1, dtype=np.int32), "total_sequence_length": np.array(L, dtype=np.int32)}
        key = (q.shape, k_new.shape, past_k.shape, dtype, Hq, Hkv, problem.scale, problem.softcap)

        def build():
            types = {"seqlens_k": TensorProto.INT32, "total_sequence_length": TensorProto.INT32}
            inputs = [helper.make_tensor_value_info(n, types.get(n, _ONNX_TYPE[dtype]), a.shape) for n, a in feeds.items()]
            attributes = {"num_heads": Hq, "kv_num_heads": Hkv, "scale": float(problem.scale)}
            if problem.softcap > 0:
                attributes["softcap"] = float(problem.softcap)
            node = helper.make_node("GroupQueryAttention", list(feeds), ["output", "present_key", "present_value"],
                                    domain="com.microsoft", **attributes)
            outs = [helper.make_tensor_value_info(n, _ONNX_TYPE[dtype], None) for n in ("output", "present_key", "present_value")]
            graph = helper.make_graph([node], "gqa", inputs, outs)
            return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])

        y = self.run_session(self.session(key, build), feeds)[0]
        np.from_dlpack(t.out)[...] = y.reshape(B, S, Hq, D).transpose(0, 2, 1, 3)[..., :Dv]


def backends():
    """Every ONNX Runtime backend, by name."""
    return {b.name: b for b in (OrtAttention(23), OrtAttention(24), OrtMultiHeadAttention(), OrtGroupQueryAttention())}
