"""Selective scan (Mamba's S6 recurrence) and the causal depthwise conv, behind swappable backends.

The scan, for every batch b, channel e and state n (A is (E, N), Bm/Cm are (B, N, L)):

    dt  = softplus(delta + delta_bias)                       (softplus optional)
    s_t = exp(dt_t * A) * s_{t-1} + dt_t * Bm_t * u_t        (s_{-1} = 0)
    y_t = sum_n s_t * Cm_t  (+ D * u_t)  (* silu(z_t))

``reverse=True`` runs t from L-1 down to 0, which equals flip(scan(flip(inputs))) along L.

Backends (``VTR_SCAN_BACKEND`` or ``backend=`` picks one, otherwise the best for the device):

- ``reference``: a plain per-step loop in float32; the ground truth (mamba_ssm's ``selective_scan_ref``).
- ``chunked``: pure PyTorch, chunk by chunk with the state carried between chunks, a custom autograd
  Function whose backward recomputes each chunk and runs the adjoint recurrence backwards. Memory is
  O(B * chunk * E * N), never O(B * L * E * N). This is the template for a fused kernel.
- ``mamba_ssm``: the CUDA kernels of mamba_ssm / causal_conv1d, when importable, on CUDA tensors.

- ``triton``: fused Triton kernels (``triton_scan.py``), registered when triton imports; CUDA only.
- ``numba``: Numba kernels for CPU tensors (``numba_scan.py``), chosen first on CPU when numba is installed.

More backends plug in through :func:`register_backend`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vtr.errors import ConfigError

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


def _check_shapes(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor
) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (B, E, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, channels, length = u.shape
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (E={channels}, N), got {tuple(A.shape)}")
    for name, m in (("Bm", Bm), ("Cm", Cm)):
        if tuple(m.shape) != (batch, A.shape[1], length):
            raise ValueError(
                f"{name} must be (B, N, L) = {(batch, A.shape[1], length)}, got {tuple(m.shape)}"
            )


# ----------------------------------------------------------------------------------------------------------
# reference backend


def selective_scan_reference(
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
) -> torch.Tensor:
    """The selective scan as a plain loop over time in float32 (float64 for float64 input): ground truth."""
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


def selective_scan_chunked(
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
    chunk_size: int | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """The selective scan in chunks of ``chunk_size`` steps with a memory-bounded custom backward."""
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


def _mamba_ssm_importable() -> bool:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA extension
        return False
    return True


def _mamba_available(device: torch.device) -> bool:
    return device.type == "cuda" and _mamba_ssm_importable()


def _mamba_scan(
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
) -> torch.Tensor:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    if u.dtype not in (torch.float32, torch.float16, torch.bfloat16):  # the kernel has no float64
        return selective_scan_chunked(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus, reverse)
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

ScanFn = Callable[..., torch.Tensor]
ConvFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class _Backend:
    scan_fn: ScanFn
    is_available: Callable[[torch.device], bool]
    conv_fn: ConvFn


_BACKENDS: dict[str, _Backend] = {}
_CUDA_PREFERENCE = ("triton", "mamba_ssm")  # tried in order on CUDA before falling back to chunked


def register_backend(
    name: str,
    scan_fn: ScanFn,
    is_available: Callable[[torch.device], bool],
    conv_fn: ConvFn | None = None,
) -> None:
    """Add (or replace) a backend.

    ``scan_fn`` takes selective_scan's arguments minus ``backend``; ``conv_fn`` takes causal_conv1d's
    minus ``backend`` and defaults to the reference conv; ``is_available(device)`` says whether it can run
    on tensors of that device.
    """
    _BACKENDS[name] = _Backend(scan_fn, is_available, conv_fn or causal_conv1d_reference)


register_backend("reference", selective_scan_reference, lambda device: True)
register_backend("chunked", selective_scan_chunked, lambda device: True)
register_backend("mamba_ssm", _mamba_scan, _mamba_available, _mamba_conv)

try:  # the fused Triton kernels (encoders/triton_scan.py): CUDA only, registered when triton imports
    from vtr.encoders.triton_scan import register as _register_triton

    _register_triton()
except Exception:  # pragma: no cover - no triton, or a broken install: keep the PyTorch backends
    pass

from vtr.encoders.numba_scan import register as _register_numba  # noqa: E402  (CPU; numba loads on first use)

_register_numba()


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
    ``reverse`` scans from the last step to the first. ``backend`` overrides the automatic choice.
    """
    _check_shapes(u, delta, A, Bm, Cm)
    name = resolve_backend(backend, u.device)
    return _BACKENDS[name].scan_fn(
        u, delta, A, Bm, Cm, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, reverse=reverse
    )


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
    name = resolve_backend(backend, x.device)
    return _BACKENDS[name].conv_fn(x, weight, bias, activation=activation, reverse=reverse)
