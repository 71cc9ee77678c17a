"""Selective scan (Mamba's S6 recurrence) and the causal depthwise conv, behind swappable backends.

The scan, for every batch b, channel e and state n (A is (E, N), Bm/Cm are (B, N, L)):

    dt  = softplus(delta + delta_bias)                       (softplus optional)
    s_t = exp(dt_t * A) * s_{t-1} + dt_t * Bm_t * u_t        (s_{-1} = 0)
    y_t = sum_n s_t * Cm_t  (+ D * u_t)  (* silu(z_t))

``reverse=True`` runs t from L-1 down to 0, which equals flip(scan(flip(inputs))) along L.

One direction's inputs travel as a :class:`ScanDirection`; every backend's scan function has the one signature
``scan(d: ScanDirection, z, delta_softplus, reverse) -> y`` (:data:`ScanFn`).

Backends (``VTR_SCAN_BACKEND`` or ``backend=`` picks one, otherwise the best for the device):

- ``reference``: a plain per-step loop in float32; the ground truth (mamba_ssm's ``selective_scan_ref``).
- ``chunked``: pure PyTorch, chunk by chunk with the state carried between chunks, a custom autograd
  Function whose backward recomputes each chunk and runs the adjoint recurrence backwards. Memory is
  O(B * chunk * E * N), never O(B * L * E * N). This is the template for a fused kernel.
- ``mamba_ssm``: the CUDA kernels of mamba_ssm / causal_conv1d, when importable, on CUDA tensors.

- ``triton``: fused Triton kernels (``triton_scan.py``, ``triton_conv.py``, ``triton_norm.py``), registered by
  ``triton_backend.py`` when triton imports; CUDA only.
- ``numba``: Numba kernels for CPU tensors (``numba_scan.py``), chosen first on CPU when numba is installed.

More backends plug in through :func:`register_backend`. A model resolves its backend once, into a
:class:`ScanBackend` (:func:`get_backend`), and calls its functions directly: the per-call functions below
(:func:`selective_scan`, :func:`causal_conv1d`) resolve on every call and are for scripts and tests.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from vtr.encoders.scan_types import ScanDirection, ScanFn, check_direction
from vtr.errors import ConfigError

__all__ = ["ScanBackend", "ScanDirection", "ScanFn", "available_backends", "causal_conv1d", "check_direction",
           "get_backend", "register_backend", "resolve_backend", "selective_scan", "selective_scan_chunked",
           "selective_scan_reference"]

ENV_VAR = "VTR_SCAN_BACKEND"

# Chunked backend: (time steps per chunk, per block). A chunk bounds memory at B x chunk x E x N per tensor;
# a block is the stretch scanned step by step while all blocks of a chunk advance together. Measured for
# B=2, E=384/768, N=16, L=1569: on a 2-core CPU 32..64 / 8 is best (flat); on an H100 the PyTorch version is
# launch-bound, so fewer, longer chunks win (256 / 16: ~23 ms fwd+bwd; 512 / 16 is faster at 2x the memory).
CPU_CHUNKING = (64, 8)
CUDA_CHUNKING = (256, 16)


# ----------------------------------------------------------------------------------------------------------
# shared helpers


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (useful for gradcheck); everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast would run matmuls in bf16/fp16; the scan must stay in float32."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _prepare_delta(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> torch.Tensor:
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    return F.softplus(dt) if delta_softplus else dt


def _epilogue(
    y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None
) -> torch.Tensor:
    """y + D * u, then gated by silu(z); all in y's (compute) dtype."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


# ----------------------------------------------------------------------------------------------------------
# reference backend


def selective_scan_reference(d: ScanDirection, z: torch.Tensor | None = None, delta_softplus: bool = True,
                             reverse: bool = False) -> torch.Tensor:
    """The selective scan as a plain loop over time in float32 (float64 for float64 input): ground truth."""
    u, delta, A, Bm, Cm, D, delta_bias = d
    dtype = _compute_dtype(u)
    with _no_autocast(u.device):
        uf, A, Bm, Cm = u.to(dtype), A.to(dtype), Bm.to(dtype), Cm.to(dtype)
        dt = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
        batch, channels, length = u.shape
        s = uf.new_zeros(batch, channels, A.shape[1])
        ys: list[torch.Tensor] = [uf] * length  # placeholders, every slot is overwritten
        for t in reversed(range(length)) if reverse else range(length):
            dt_t = dt[:, :, t, None]  # (B, E, 1)
            s = torch.exp(dt_t * A) * s + dt_t * Bm[:, None, :, t] * uf[:, :, t, None]
            ys[t] = (s * Cm[:, None, :, t]).sum(-1)
        y = torch.stack(ys, dim=-1) if length else uf.new_zeros(uf.shape)
        y = _epilogue(y, uf, D, z)
    return y.to(u.dtype)


# ----------------------------------------------------------------------------------------------------------
# chunked backend
#
# Inside the autograd Function everything is "time-major in scan order": dt, du = dt * u are (B, L, E),
# Bm, Cm are (B, L, N), so a chunk's tensors are (B, K, E, N) with contiguous (E, N) slabs per step, and
# reverse=True is just a flip of these small inputs (never of anything N wide).


def _scan_chunk(
    a: torch.Tensor, b: torch.Tensor, s0: torch.Tensor, block: int, reverse: bool = False
) -> torch.Tensor:
    """Solve s_t = a_t * s_{t-1} + b_t along dim 1 of (B, T, E, N), starting from s0 (B, E, N).

    Overwrites and returns ``b`` (the states); ``a`` is left untouched. T must be a multiple of ``block``.
    With ``reverse`` the recurrence runs from t=T-1 down to 0 (s_t = a_t * s_{t+1} + b_t).

    Two-level parallel scan: the T/block blocks are first scanned all at once, step by step from a zero
    state (``block`` vectorised steps); then each block's entering state (the previous block's last state)
    is added in, scaled by the block's running product of a. Every factor is a product of a's in [0, 1],
    so nothing can overflow (unlike exp(-cumsum(dt * A)) tricks).
    """
    nblocks = b.shape[1] // block
    a5 = a.unflatten(1, (nblocks, block))  # (B, nblocks, block, E, N), views
    b5 = b.unflatten(1, (nblocks, block))
    first, last, step = (-1, 0, -1) if reverse else (0, -1, 1)

    # 1) scan inside every block at once; the very first step of the chunk also takes in s0
    b5[:, first, first].addcmul_(a5[:, first, first], s0)
    for j in range(block - 2, -1, -1) if reverse else range(1, block):
        b5[:, :, j].addcmul_(a5[:, :, j], b5[:, :, j - step])
    if nblocks == 1:
        return b

    # 2) carry between blocks: state_t += (prod of a within the block up to t) * (state entering the block)
    tail = a5[:, :-1] if reverse else a5[:, 1:]  # the blocks that receive a carry
    prod = torch.empty_like(tail)  # running product of a inside each block (a loop beats cumprod here)
    prod[:, :, first] = tail[:, :, first]
    for j in range(block - 2, -1, -1) if reverse else range(1, block):
        torch.mul(prod[:, :, j - step], tail[:, :, j], out=prod[:, :, j])
    for i in range(nblocks - 2, -1, -1) if reverse else range(1, nblocks):
        p = prod[:, i] if reverse else prod[:, i - 1]
        b5[:, i].addcmul_(p, b5[:, i - step, last].unsqueeze(1))
    return b


def _pad_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Contiguous copy of (B, L, C) zero-padded to ``length`` steps (dt = du = 0 is the identity step)."""
    out = x.new_zeros(x.shape[0], length, x.shape[2])
    out[:, : x.shape[1]] = x
    return out


class _ChunkedScanFn(torch.autograd.Function):
    """y (B, L, E) of the scan for time-major, scan-order dt, du = dt * u (B, L, E) and Bm, Cm (B, L, N)."""

    @staticmethod
    def forward(ctx, dt, du, A, Bm, Cm, chunk: int, block: int):  # type: ignore[override]
        batch, length, channels = dt.shape
        padded = -(-length // block) * block
        dt, du, Bm, Cm = (_pad_time(x, padded) for x in (dt, du, Bm, Cm))
        starts = range(0, padded, chunk)

        s = dt.new_zeros(batch, channels, A.shape[1])
        carries = dt.new_empty(len(starts), batch, channels, A.shape[1])  # state entering each chunk
        y = dt.new_empty(batch, padded, channels)
        for c, t0 in enumerate(starts):
            t1 = min(t0 + chunk, padded)
            carries[c] = s
            a = torch.exp(dt[:, t0:t1, :, None] * A)  # (B, K, E, N), in (0, 1]
            states = _scan_chunk(a, du[:, t0:t1, :, None] * Bm[:, t0:t1, None, :], s, block)
            y[:, t0:t1] = (states * Cm[:, t0:t1, None, :]).sum(-1)  # beats a batched gemv on CPU
            s = states[:, -1]

        ctx.save_for_backward(dt, du, A, Bm, Cm, carries)
        ctx.chunk, ctx.block, ctx.length = chunk, block, length
        return y[:, :length]

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        dt, du, A, Bm, Cm, carries = ctx.saved_tensors
        chunk, block, length = ctx.chunk, ctx.block, ctx.length
        with _no_autocast(dt.device):
            batch, padded, channels = dt.shape
            gy = _pad_time(gy.to(dt.dtype), padded)
            dt_next = _pad_time(dt, padded + 1)  # one extra identity step so every chunk can look one ahead
            d_dt, d_du = torch.empty_like(dt), torch.empty_like(du)
            d_B, d_C = torch.empty_like(Bm), torch.empty_like(Cm)
            d_A = torch.zeros_like(A)

            # adjoint: g_t = dL/ds_t = gy_t * C_t + a_{t+1} * g_{t+1}, run backwards chunk by chunk
            g = dt.new_zeros(batch, channels, A.shape[1])  # g at the first step of the next chunk
            for c in reversed(range(len(carries))):
                t0 = c * chunk
                t1 = min(t0 + chunk, padded)
                s_in = carries[c]
                a_ext = torch.exp(dt_next[:, t0 : t1 + 1, :, None] * A)  # a_t0 .. a_t1
                a = a_ext[:, :-1]
                states = _scan_chunk(a, du[:, t0:t1, :, None] * Bm[:, t0:t1, None, :], s_in, block)
                gy_c = gy[:, t0:t1]
                d_C[:, t0:t1] = torch.matmul(gy_c.unsqueeze(-2), states).squeeze(-2)

                g_s = _scan_chunk(
                    a_ext[:, 1:], gy_c[..., None] * Cm[:, t0:t1, None, :], g, block, reverse=True
                )
                g = g_s[:, 0].clone()
                # b_t = du_t * B_t:  d(du_t) = sum_n g_t * B_t,  dB_t = sum_e g_t * du_t
                d_du[:, t0:t1] = (g_s * Bm[:, t0:t1, None, :]).sum(-1)
                d_B[:, t0:t1] = torch.matmul(du[:, t0:t1].unsqueeze(-2), g_s).squeeze(-2)
                # a_t = exp(dt_t * A):  dL/d(dt_t * A) = g_t * a_t * s_{t-1}
                g_log_a = g_s.mul_(a)
                g_log_a[:, 1:] *= states[:, :-1]
                g_log_a[:, 0] *= s_in
                d_dt[:, t0:t1] = (g_log_a * A).sum(-1)
                d_A += (g_log_a * dt[:, t0:t1, :, None]).sum((0, 1))  # einsum is 10x slower here

        return d_dt[:, :length], d_du[:, :length], d_A, d_B[:, :length], d_C[:, :length], None, None


def selective_scan_chunked(d: ScanDirection, z: torch.Tensor | None = None, delta_softplus: bool = True,
                           reverse: bool = False, chunk_size: int | None = None,
                           block_size: int | None = None) -> torch.Tensor:
    """The selective scan in chunks of ``chunk_size`` steps with a memory-bounded custom backward."""
    u, delta, A, Bm, Cm, D, delta_bias = d
    default_chunk, default_block = CUDA_CHUNKING if u.device.type == "cuda" else CPU_CHUNKING
    chunk = chunk_size or default_chunk
    block = block_size or math.gcd(default_block, chunk)
    if chunk % block:
        raise ValueError(f"chunk_size ({chunk}) must be a multiple of block_size ({block})")
    dtype = _compute_dtype(u)
    with _no_autocast(u.device):
        uf = u.to(dtype)
        dt = _prepare_delta(delta, delta_bias, delta_softplus, dtype)

        def scan_order(x: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, L, C), flipped for reverse
            x = x.to(dtype)
            return (x.flip(-1) if reverse else x).transpose(1, 2)

        y = _ChunkedScanFn.apply(
            scan_order(dt), scan_order(dt * uf), A.to(dtype), scan_order(Bm), scan_order(Cm), chunk, block
        )
        y = y.transpose(1, 2)
        y = _epilogue(y.flip(-1) if reverse else y, uf, D, z)
    return y.to(u.dtype)


# ----------------------------------------------------------------------------------------------------------
# causal depthwise conv


def causal_conv1d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    reverse: bool = False,
) -> torch.Tensor:
    """Depthwise causal conv with F.conv1d, in float32; ``reverse`` makes it anti-causal."""
    dtype = _compute_dtype(x)
    with _no_autocast(x.device):
        channels, width = weight.shape[0], weight.shape[-1]
        w = weight.reshape(channels, 1, width).to(dtype)
        b = None if bias is None else bias.to(dtype)
        if reverse:
            # flip(conv(flip(x)))[t] = sum_k w[k] * x[t + K-1-k]: correlate with the flipped kernel over a
            # window that starts at t, i.e. keep the last L outputs of a conv padded K-1 on both sides.
            y = F.conv1d(x.to(dtype), w.flip(-1), b, padding=width - 1, groups=channels)[..., width - 1 :]
        else:
            y = F.conv1d(x.to(dtype), w, b, padding=width - 1, groups=channels)[..., : x.shape[-1]]
        if activation == "silu":
            y = F.silu(y)
    return y.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# mamba_ssm backend (CUDA only; untestable on CPU, so kept to casting and flipping)


@functools.cache
def _mamba_ssm_importable() -> bool:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA extension
        return False
    return True


def _mamba_available(device: torch.device) -> bool:
    return device.type == "cuda" and _mamba_ssm_importable()


def _mamba_scan(d: ScanDirection, z: torch.Tensor | None = None, delta_softplus: bool = True,
                reverse: bool = False) -> torch.Tensor:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    u, delta, A, Bm, Cm, D, delta_bias = d
    if u.dtype not in (torch.float32, torch.float16, torch.bfloat16):  # the kernel has no float64
        return selective_scan_chunked(d, z, delta_softplus, reverse)
    dtype = u.dtype  # the kernel wants u, delta, B, C, z in one dtype and A, D, delta_bias in float32

    def prep(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        x = x.to(dtype)
        return x.flip(-1) if reverse else x

    with _no_autocast(u.device):
        y = selective_scan_fn(
            prep(u),
            prep(delta),
            A.float(),
            prep(Bm),
            prep(Cm),
            D=None if D is None else D.float(),
            z=prep(z),
            delta_bias=None if delta_bias is None else delta_bias.float(),
            delta_softplus=delta_softplus,
        )
    return y.flip(-1) if reverse else y


def _mamba_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    reverse: bool = False,
) -> torch.Tensor:
    width = weight.shape[-1]
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        causal_conv1d_fn = None
    if causal_conv1d_fn is None or not 2 <= width <= 4 or x.dtype == torch.float64:
        return causal_conv1d_reference(x, weight, bias, activation, reverse)
    w = weight.reshape(weight.shape[0], width)
    xs = x.flip(-1) if reverse else x.contiguous()
    with _no_autocast(x.device):
        y = causal_conv1d_fn(xs, w, bias, activation=activation)
    return y.flip(-1) if reverse else y


# ----------------------------------------------------------------------------------------------------------
# registry and public API

ConvFn = Callable[..., torch.Tensor]
"""``conv(x, weight, bias=None, activation="silu", reverse=False) -> y``, as :func:`causal_conv1d_reference`."""
BiScanFn = Callable[[ScanDirection, ScanDirection, "torch.Tensor | None"], torch.Tensor]
"""``bidirectional_scan(fwd, bwd, z) -> scan(fwd, z) + scan(bwd, z, reverse=True)`` (softplus on)."""
BiConvFn = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]
"""``bidirectional_conv(x, weight_f, bias_f, weight_b, bias_b) -> (causal conv, anti-causal conv)``, + SiLU."""
AddNormFn = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]
"""``add_norm(hidden, residual, weight, eps, out_dtype) -> (rmsnorm(residual + hidden) * weight, residual +
hidden in float32)``, as :func:`vtr.encoders.triton_norm.add_rms_norm`."""


@dataclass(frozen=True)
class ScanBackend:
    """The kernels a mixer calls, resolved once (:func:`get_backend`), not per call.

    ``bidirectional_scan`` / ``bidirectional_conv`` default to two single-direction calls; ``add_norm`` is a
    fused residual add + RMSNorm, or None (the model's eager PyTorch norm).
    """

    name: str
    scan: ScanFn
    conv: ConvFn
    is_available: Callable[[torch.device], bool]
    bidirectional_scan: BiScanFn
    bidirectional_conv: BiConvFn
    add_norm: AddNormFn | None = None

    def __reduce__(self):  # pickled by name (its functions may be closures): a pickled model stays picklable
        return _unpickle_backend, (self.name, self.add_norm is not None)


def _unpickle_backend(name: str, fused_norm: bool) -> ScanBackend:
    backend = _BACKENDS[name]
    return backend if fused_norm or backend.add_norm is None else replace(backend, add_norm=None)


def _two_scans(scan: ScanFn) -> BiScanFn:
    def bidirectional_scan(fwd: ScanDirection, bwd: ScanDirection, z: torch.Tensor | None) -> torch.Tensor:
        return scan(fwd, z, True, False) + scan(bwd, z, True, True)

    return bidirectional_scan


def _two_convs(conv: ConvFn) -> BiConvFn:
    def bidirectional_conv(x, weight_f, bias_f, weight_b, bias_b) -> tuple[torch.Tensor, torch.Tensor]:
        return conv(x, weight_f, bias_f, activation="silu"), conv(x, weight_b, bias_b, activation="silu", reverse=True)

    return bidirectional_conv


_BACKENDS: dict[str, ScanBackend] = {}
_CUDA_PREFERENCE = ("triton", "mamba_ssm")  # tried in order on CUDA before falling back to chunked


def register_backend(
    name: str,
    scan_fn: ScanFn,
    is_available: Callable[[torch.device], bool],
    conv_fn: ConvFn | None = None,
    *,
    bidirectional_scan: BiScanFn | None = None,
    bidirectional_conv: BiConvFn | None = None,
    add_norm: AddNormFn | None = None,
) -> None:
    """Add (or replace) a backend.

    ``scan_fn(d: ScanDirection, z, delta_softplus, reverse)`` is the scan (:data:`ScanFn`); ``conv_fn`` takes
    causal_conv1d's arguments minus ``backend`` and defaults to the reference conv; ``is_available(device)``
    says whether it can run on tensors of that device. The keyword-only fused paths are optional.
    """
    conv = conv_fn or causal_conv1d_reference
    _BACKENDS[name] = ScanBackend(name, scan_fn, conv, is_available,
                                  bidirectional_scan or _two_scans(scan_fn), bidirectional_conv or _two_convs(conv),
                                  add_norm)


register_backend("reference", selective_scan_reference, lambda device: True)
register_backend("chunked", selective_scan_chunked, lambda device: True)
register_backend("mamba_ssm", _mamba_scan, _mamba_available, _mamba_conv)


def available_backends(device: torch.device | str) -> list[str]:
    """Names of the registered backends that can run on ``device``, in registration order."""
    device = torch.device(device)
    return [name for name, backend in _BACKENDS.items() if backend.is_available(device)]


def resolve_backend(name: str | None, device: torch.device | str) -> str:
    """Pick a backend: explicit ``name`` > ``$VTR_SCAN_BACKEND`` > the best one available on ``device``.

    On CUDA the best is ``triton`` (once registered), then ``mamba_ssm``, then ``chunked``; elsewhere
    ``chunked``. ``"auto"`` (or an empty string) means the automatic choice. Raises ConfigError for an
    unknown name or one that cannot run on ``device``.
    """
    device = torch.device(device)
    source = "backend="
    if not name:
        name, source = os.environ.get(ENV_VAR, "").strip(), f"${ENV_VAR}"
    available = available_backends(device)
    if not name or name == "auto":
        if device.type == "cuda":
            for candidate in _CUDA_PREFERENCE:
                if candidate in available:
                    return candidate
        return "numba" if "numba" in available else "chunked"
    if name not in available:
        problem = f"is not available on {device.type}" if name in _BACKENDS else "is not a scan backend"
        raise ConfigError(
            f"{source} {name!r} {problem}. Available on {device.type}: {', '.join(available)} "
            f"(or 'auto'); pass backend= or set ${ENV_VAR}."
        )
    return name


def get_backend(name: str | None, device: torch.device | str) -> ScanBackend:
    """The :class:`ScanBackend` that :func:`resolve_backend` picks: resolve once, then call its functions."""
    return _BACKENDS[resolve_backend(name, device)]


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    Bm: torch.Tensor,
    Cm: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    reverse: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Mamba's selective scan; returns (B, E, L) in u's dtype (computed in float32).

    u, delta, z: (B, E, L); A: (E, N), negative; Bm, Cm: (B, N, L); D, delta_bias: (E,).
    ``reverse`` scans from the last step to the first. ``backend`` overrides the automatic choice (resolved
    on every call: models resolve once with :func:`get_backend`).
    """
    d = ScanDirection(u, delta, A, Bm, Cm, D, delta_bias)
    check_direction(d)
    return get_backend(backend, u.device).scan(d, z, delta_softplus, reverse)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    reverse: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Depthwise causal conv over L of x (B, E, L) with weight (E, K) or (E, 1, K), then SiLU (or nothing).

    ``reverse=True`` is the anti-causal conv, equal to flip(causal_conv1d(flip(x))).
    """
    if activation not in ("silu", None):
        raise ConfigError(f"causal_conv1d activation must be 'silu' or None, got {activation!r}")
    return get_backend(backend, x.device).conv(x, weight, bias, activation=activation, reverse=reverse)


# The fused Triton kernels: CUDA only, registered when triton imports (here, after everything above exists).
from vtr.encoders.triton_backend import register as _register_triton  # noqa: E402

_register_triton()

# The Numba CPU kernels (numba loads on first use); chosen first on CPU when numba is installed.
from vtr.encoders.numba_scan import register as _register_numba  # noqa: E402

_register_numba()
