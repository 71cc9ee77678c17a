"""What the Triton kernels (``triton_scan.py``, ``triton_conv.py``, ``triton_norm.py``) share.

The one ``HAS_TRITON`` guard (importing this module never fails: without triton it is False and the kernel
modules define no kernels), the interpreter switch, the fast-math device helpers (exp2, reciprocal, sigmoid,
softplus) and the host helpers that allocate the kernels' outputs.
"""

from __future__ import annotations

import os

import torch

try:  # pragma: no cover - depends on the machine
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install
    triton = None
    tl = None
    HAS_TRITON = False

__all__ = ["HAS_TRITON", "INTERPRET", "LOG2E", "triton", "tl", "triton_available"]

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"  # read once, at import

# Test hook: when set (e.g. to NaN), every buffer the kernels must fully overwrite is pre-filled with it.
_FILL: float | None = None


def triton_available(device: torch.device | str) -> bool:
    """True where the Triton kernels can run: CUDA tensors (or any tensor under the Triton interpreter)."""
    device = torch.device(device)
    return HAS_TRITON and (device.type == "cuda" or (INTERPRET and device.type == "cpu"))


def new_buffer(batch: int, channels: int, length: int, dtype: torch.dtype, device,
               token_major: bool) -> torch.Tensor:
    """A (batch, channels, length) buffer, laid out (B, L, E) in memory when ``token_major``."""
    if token_major:
        t = torch.empty(batch, length, channels, dtype=dtype, device=device).transpose(1, 2)
    else:
        t = torch.empty(batch, channels, length, dtype=dtype, device=device)
    if _FILL is not None:
        t.fill_(_FILL)
    return t


def token_major(x: torch.Tensor) -> bool:
    """(B, E, L) tensor whose memory is (B, L, E): what the mixer's projections produce."""
    return x.stride(1) == 1 and x.shape[2] > 1


def strides(x: torch.Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if x is None else tuple(x.stride())


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fast_math() -> bool:
    """PTX approximations (ex2.approx, rcp.approx) on the GPU; exact functions under the interpreter."""
    return not INTERPRET


def maxnreg(n: int | None) -> dict:
    return {} if (n is None or INTERPRET) else {"maxnreg": n}


if HAS_TRITON:
    _LOG2E = tl.constexpr(LOG2E)

    @triton.jit
    def _ex2(x, FAST: tl.constexpr):
        if FAST:
            return tl.inline_asm_elementwise(
                "ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
            )
        else:
            return tl.exp2(x)

    @triton.jit
    def _rcp(x, FAST: tl.constexpr):
        if FAST:
            return tl.inline_asm_elementwise(
                "rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
            )
        else:
            return 1.0 / x

    @triton.jit
    def _sigmoid(x, FAST: tl.constexpr):
        return _rcp(1.0 + _ex2(x * -_LOG2E, FAST), FAST)

    @triton.jit
    def _softplus(x, FAST: tl.constexpr):
        # max(x, 0) + log1p(v), v = exp(-|x|) in (0, 1]; log1p(v) = 2 atanh(r), r = v / (2 + v) <= 1/3, by its
        # odd series to r^13 (relative error < 2e-8). Equals torch's softplus (threshold 20) to fp32 rounding.
        v = _ex2(tl.abs(x) * -_LOG2E, FAST)
        r = v * _rcp(2.0 + v, FAST)
        r2 = r * r
        p = r2 * (0.3333333333 + r2 * (0.2 + r2 * (0.1428571429 + r2 * (0.1111111111 + r2 * (0.0909090909
                                                                                          + r2 * 0.0769230769)))))
        rr = r + r
        return tl.maximum(x, 0.0) + (rr + rr * p)
