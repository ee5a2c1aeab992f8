"""PyTorch's torch.nn.functional.scaled_dot_product_attention (CPU) as an attncheck backend,
through DLPack: torch.from_dlpack views the suite's tensors without a copy.

Mapped: scale, is_causal (top-left, PyTorch's alignment), GQA (enable_gqa), boolean and additive
masks (attn_mask, padded to Lk), and every other diagonal, window and key length folded into a
boolean mask. Declined: softcap (SDPA has none).
"""

from __future__ import annotations

import numpy as np

import attncheck

try:
    import torch
    import torch.nn.functional as F
    MISSING = None
except ImportError as error:  # the torch wheel is optional
    MISSING = f"torch is not importable in this Python: {error}"


class TorchSdpa:
    name = "torch-sdpa-python"
    description = "torch.nn.functional.scaled_dot_product_attention on the CPU, through DLPack"

    def profile(self, dtype):
        # aten/src/ATen/native/transformers/attention.cpp: on the CPU, float inputs take the
        # flash-attention CPU kernel (sdp_utils_cpp.h), an online softmax over key blocks in
        # float, threaded. Its block size was not read here: declared is an online softmax over
        # 64-key blocks, not bitwise deterministic.
        if dtype != "f32":
            return None
        return attncheck.fp32_flash(block=64, writes_lse=False, deterministic=False)

    def supports(self, problem, dtype):
        if problem.softcap > 0:
            return "scaled_dot_product_attention has no softcap"
        return None

    def forward(self, problem, t):
        from ort_backends import allowed_keys  # the shared mask folding (examples/onnxruntime)

        q, k, v = (torch.from_dlpack(x) for x in (t.q, t.k, t.v))
        native_causal = problem.causal and problem.alignment == "top-left" and not problem.has_window() \
            and not problem.has_key_lengths and problem.mask == "none"
        mask = None
        if not native_causal and (problem.causal or problem.has_window() or problem.has_key_lengths
                                  or problem.mask != "none"):
            allowed = torch.from_numpy(allowed_keys(problem, t))
            if problem.mask == "bias":
                bias = np.zeros(tuple(t.mask.shape[:3]) + (problem.k_len,), np.float32)
                bias[..., : problem.mask_k_len] = np.from_dlpack(t.mask)
                mask = torch.from_numpy(bias).masked_fill(~allowed, float("-inf"))
            else:
                mask = allowed
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=native_causal, scale=problem.scale,
                                             enable_gqa=problem.kv_heads != problem.q_heads)
        torch.from_dlpack(t.out).copy_(out)
