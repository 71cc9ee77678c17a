"""The inputs of one scan direction and the one signature every scan backend implements (no dependencies, so the
kernel modules can import it without importing the backend registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class ScanDirection(NamedTuple):
    """The inputs of one scan direction: u, delta (B, E, L); A (E, N), negative; Bm, Cm (B, N, L); D and
    delta_bias (E,) or None. The gate z is shared by both directions of a mixer and passed beside it."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    Bm: torch.Tensor
    Cm: torch.Tensor
    D: torch.Tensor | None = None
    delta_bias: torch.Tensor | None = None


ScanFn = Callable[[ScanDirection, "torch.Tensor | None", bool, bool], torch.Tensor]
"""``scan(d, z, delta_softplus, reverse) -> y (B, E, L)`` in u's dtype: the one signature of every backend."""


def check_direction(d: ScanDirection) -> None:
    """Raise ValueError unless the shapes of ``d`` fit together."""
    u, delta, A, Bm, Cm = d.u, d.delta, d.A, d.Bm, d.Cm
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
