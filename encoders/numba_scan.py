"""The selective scan on CPU tensors as Numba-compiled loops (the ``numba`` backend, chosen first on CPU).

Same math as :func:`vtr.encoders.selective_scan.selective_scan_reference`. Each (batch, channel) pair is one
independent recurrence over time; the kernels run those pairs in parallel (``prange``) and keep the N states of
one pair in registers, vectorised over N. exp(dt * A) is one exp per (step, channel, state) and dominates the
cost, so it is computed by a vectorisable float32 exp (Cody-Waite range reduction + a degree-6 polynomial, about
1 ulp) instead of libm's scalar ``expf``, which LLVM cannot vectorise without Intel's SVML.

Training works too: a custom autograd Function whose backward recomputes the states of one pair at a time (memory
O(L x N) per thread) and runs the adjoint recurrence backwards. Numba is imported and the kernels compiled (a few
seconds, cached on disk afterwards) on first use only, so importing vtr stays fast. float64 inputs (gradcheck)
go to the ``chunked`` backend.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import torch
import torch.nn.functional as F

from vtr.encoders.scan_types import ScanDirection

_KERNELS: dict[str, Any] = {}
_LOCK = threading.Lock()  # numba's default "workqueue" threading layer must not be entered from two threads at once
_PARTIAL_GROUPS = 8  # dB/dC partial sums over channels: one buffer per group of channels (then summed by torch)


def numba_importable() -> bool:
    """True when numba is installed (checked without importing it)."""
    return importlib.util.find_spec("numba") is not None


def is_available(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu" and numba_importable()


def _kernels() -> dict[str, Any]:
    """Import (compile on first use, or load from numba's cache) the kernels."""
    if not _KERNELS:
        with _LOCK:
            if not _KERNELS:
                import numba

                from vtr.encoders import numba_scan_kernels as kernels

                _KERNELS.update(forward=kernels.forward, forward_fused=kernels.forward_fused,
                                backward=kernels.backward, numba=numba)
    return _KERNELS


def _run(name: str, *args: Any) -> None:
    """Run a kernel with as many threads as torch's intra-op pool (so vtr's thread settings apply to both)."""
    kernels = _kernels()
    numba = kernels["numba"]
    with _LOCK:
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        kernels[name](*args)


def _np(x: torch.Tensor) -> Any:
    return x.detach().contiguous().numpy()


class _NumbaScanFn(torch.autograd.Function):
    """y (B, E, L) of the scan (before D and the gate) for float32 dt (after softplus), u (B, E, L), A (E, N),
    Bm, Cm (B, N, L)."""

    @staticmethod
    def forward(ctx, dt, u, A, Bm, Cm, reverse: bool):  # type: ignore[override]
        Bt, Ct = Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous()
        y = dt.new_empty(dt.shape[0], dt.shape[2], dt.shape[1])  # time-major (B, L, E)
        _run("forward", _np(dt.transpose(1, 2)), _np(u.transpose(1, 2)), _np(A.t()), _np(Bt), _np(Ct), reverse,
             y.numpy())
        if ctx.needs_input_grad[:5] != (False,) * 5:
            ctx.save_for_backward(dt, u, A, Bt, Ct)
        ctx.reverse = reverse
        return y.transpose(1, 2)

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        dt, u, A, Bt, Ct = (x.contiguous() for x in ctx.saved_tensors)
        batch, channels, length = u.shape
        groups = min(_PARTIAL_GROUPS, channels)
        d_dt, d_u = torch.empty_like(dt), torch.empty_like(u)
        d_A = torch.empty(batch, channels, A.shape[1])
        d_B = torch.zeros(batch, groups, length, A.shape[1])
        d_C = torch.zeros_like(d_B)
        _run("backward", _np(dt), _np(u), _np(A), _np(Bt), _np(Ct), _np(gy.float()), ctx.reverse, groups,
             d_dt.numpy(), d_u.numpy(), d_A.numpy(), d_B.numpy(), d_C.numpy())
        return d_dt, d_u, d_A.sum(0), d_B.sum(1).transpose(1, 2), d_C.sum(1).transpose(1, 2), None


def selective_scan_numba(
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
    """The selective scan in Numba kernels (CPU, float32 compute); same contract as ``selective_scan``."""
    _epilogue, _no_autocast, _prepare_delta, selective_scan_chunked = _registry_helpers()
    if u.dtype == torch.float64 or u.device.type != "cpu":
        return selective_scan_chunked(ScanDirection(u, delta, A, Bm, Cm, D, delta_bias), z, delta_softplus, reverse)
    f32 = torch.float32
    if not (torch.is_grad_enabled() and any(x is not None and x.requires_grad
                                            for x in (u, delta, A, Bm, Cm, D, z, delta_bias))):
        return _fused_inference(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus, reverse)
    with _no_autocast(u.device):
        uf = u.to(f32)
        dt = _prepare_delta(delta, delta_bias, delta_softplus, f32)
        y = _NumbaScanFn.apply(dt, uf, A.to(f32), Bm.to(f32), Cm.to(f32), reverse)
        y = _epilogue(y, uf, D, z)
    return y.to(u.dtype)


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(B, C, L) -> contiguous float32 (B, L, C) (free when x is already a transposed time-major tensor)."""
    return x.transpose(1, 2).to(torch.float32).contiguous()


def _fused_inference(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus: bool, reverse: bool) -> torch.Tensor:
    """No autograd: the scan, the D skip and the silu(z) gate in one kernel (time-major inside); softplus stays in
    torch (vectorised: a scalar log1p per step and channel inside the kernel cost more than the scan)."""
    channels = u.shape[1]
    dt = delta.transpose(1, 2).to(torch.float32)
    if delta_bias is not None:
        dt = dt + delta_bias.to(torch.float32)
    dt = (F.softplus(dt) if delta_softplus else dt).contiguous()
    y = torch.empty(u.shape[0], u.shape[2], channels)  # (B, L, E); returned as a (B, E, L) view
    _run("forward_fused", _np(dt), _np(_time_major(u)), _np(_time_major(u if z is None else z)),
         _np(torch.zeros(channels) if D is None else D.float()), _np(A.float().t()), _np(_time_major(Bm)),
         _np(_time_major(Cm)), reverse, z is not None, y.numpy())
    return y.transpose(1, 2).to(u.dtype)


_HELPERS: tuple[Any, ...] = ()


def _registry_helpers() -> tuple[Any, ...]:
    """The PyTorch helpers of :mod:`vtr.encoders.selective_scan` this backend shares, imported once (not per call:
    a forward does no import)."""
    global _HELPERS
    if not _HELPERS:
        from vtr.encoders.selective_scan import _epilogue, _no_autocast, _prepare_delta, selective_scan_chunked

        _HELPERS = (_epilogue, _no_autocast, _prepare_delta, selective_scan_chunked)
    return _HELPERS


def register() -> None:
    """Register the ``numba`` backend (the reference causal conv, F.conv1d, is already fast on CPU)."""
    from vtr.encoders.selective_scan import register_backend

    register_backend("numba", scan_direction, is_available)
    _registry_helpers()


def scan_direction(d: ScanDirection, z: torch.Tensor | None = None, delta_softplus: bool = True,
                   reverse: bool = False) -> torch.Tensor:
    """:func:`selective_scan_numba` in the backend signature (``ScanFn``: one :class:`ScanDirection` + the gate)."""
    return selective_scan_numba(d.u, d.delta, d.A, d.Bm, d.Cm, D=d.D, z=z, delta_bias=d.delta_bias,
                                delta_softplus=delta_softplus, reverse=reverse)
