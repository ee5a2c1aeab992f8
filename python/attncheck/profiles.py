"""Named numerics profiles: the declarations kernels of a common kind make (numerics/README.md §2.3).

Each preset is a function returning a fresh attncheck.Profile, with keyword arguments for the
fields a kernel of that kind varies; `profile(...)` builds one field by field from any fields.
A preset is a starting point, not a claim: declare what your kernel does (the suite's bounds are
derived from the declaration, and a kernel worse than it declares fails).
"""

from __future__ import annotations

from ._engine import Profile

__all__ = ["PRESETS", "bf16_fp32_accum", "fp16_tensor_core", "fp32_exact", "fp32_flash", "profile"]


def profile(**fields) -> Profile:
    """A Profile with the given fields set (names as in numerics_profile.h); the rest at their
    defaults: fp32 everywhere, round-to-nearest, k0 = 1, a three-pass softmax, not deterministic,
    empty rows give zeros, strides accepted, no LSE."""
    p = Profile()
    for name, value in fields.items():
        if not hasattr(p, name):
            raise TypeError(f"Profile has no field '{name}'")
        setattr(p, name, value)
    return p


def fp32_exact(*, writes_lse: bool = True, deterministic: bool = True, **fields) -> Profile:
    """fp32 inputs, scores, P, sums and output; a three-pass softmax (max, exp-sum, P·V), each sum
    rounded after every product: a NumPy or eager PyTorch fp32 kernel."""
    return profile(input="f32", score="f32", probability="f32", accumulator="f32", output="f32",
                   softmax_block=0, writes_lse=writes_lse, deterministic=deterministic, **fields)


def fp32_flash(block: int = 64, *, writes_lse: bool = True, deterministic: bool = True, **fields) -> Profile:
    """fp32 throughout with an online softmax over blocks of `block` keys (FlashAttention's
    rescaling, one extra rounding per block)."""
    if block < 1:
        raise ValueError(f"fp32_flash: block must be >= 1, got {block}")
    return profile(input="f32", score="f32", probability="f32", accumulator="f32", output="f32",
                   softmax_block=block, writes_lse=writes_lse, deterministic=deterministic, **fields)


def fp16_tensor_core(block: int = 0, *, writes_lse: bool = True, deterministic: bool = True, **fields) -> Profile:
    """fp16 inputs and output; fp32 scores; P stored in fp16 for the P·V product; fp32 sums that
    truncate (tensor-core accumulation, as backends/cuda/cublas declares). block > 0: an online
    softmax over blocks of that many keys."""
    return profile(input="f16", score="f32", probability="f16", accumulator="f32", output="f16",
                   accumulation_rounding="toward-zero", softmax_block=block, writes_lse=writes_lse,
                   deterministic=deterministic, **fields)


def bf16_fp32_accum(block: int = 0, *, writes_lse: bool = True, deterministic: bool = True, **fields) -> Profile:
    """bf16 inputs and output; fp32 scores, P and sums (round-to-nearest): a CPU kernel that widens
    bf16 to fp32 and computes in fp32."""
    return profile(input="bf16", score="f32", probability="f32", accumulator="f32", output="bf16",
                   softmax_block=block, writes_lse=writes_lse, deterministic=deterministic, **fields)


#: The presets by name.
PRESETS = {
    "fp32_exact": fp32_exact,
    "fp32_flash": fp32_flash,
    "fp16_tensor_core": fp16_tensor_core,
    "bf16_fp32_accum": bf16_fp32_accum,
}
