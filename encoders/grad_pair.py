"""in_proj's output gradient written in place by the conv and scan backwards: no concatenation of its halves.

A mixer splits ``xz = in_proj(h)`` (B, L, 2E) into x (the conv's input) and z (the gate, the scan's input). Autograd
would concatenate their gradients into a new (B, L, 2E) tensor (one full write and read; the issue measured ~25 ms
per VideoMamba-M training step). :func:`split_xz` returns x and z tagged with one :class:`GradPair`; a backward that
knows the tag (the Triton scan for dz, the Triton conv for dx) writes its gradient into its half of one shared
buffer, and the split's backward hands that buffer over as is. Anything else (other backends, x or z used twice)
falls back to an explicit copy into a fresh buffer: same values either way.
"""

from __future__ import annotations

import torch

ATTR = "_vtr_grad_pair"


class GradPair:
    """The shared (B, L, 2E) gradient buffer of one split; created by the first backward that asks for a half."""

    __slots__ = ("buf", "taken")

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None
        self.taken: set[int] = set()

    def half(self, index: int, like: torch.Tensor, fresh: bool = False) -> torch.Tensor | None:
        """(B, E, L) view of half ``index`` (0: x, 1: z) shaped like ``like``, or None when that half was already
        handed out (x or z used twice: the caller allocates its own). ``fresh`` starts a new buffer."""
        batch, channels, length = like.shape
        buf = self.buf
        if fresh or buf is None or buf.shape != (batch, length, 2 * channels) or buf.dtype != like.dtype:
            buf = self.buf = torch.empty(batch, length, 2 * channels, dtype=like.dtype, device=like.device)
            self.taken = set()
        if index in self.taken:
            return None
        self.taken.add(index)
        return buf[..., index * channels:(index + 1) * channels].transpose(1, 2)


def grad_pair_of(t: torch.Tensor | None) -> GradPair | None:
    """The tag :func:`split_xz` put on ``t`` (None: untagged)."""
    return getattr(t, ATTR, None)


def _is_half(g: torch.Tensor | None, buf: torch.Tensor, index: int) -> bool:
    if g is None:
        return False
    channels = buf.shape[-1] // 2
    view = buf[..., index * channels:(index + 1) * channels].transpose(1, 2)
    return g.data_ptr() == view.data_ptr() and g.stride() == view.stride() and g.shape == view.shape


class _SplitXZ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, pair):  # type: ignore[override]
        channels = xz.shape[-1] // 2
        ctx.pair = pair
        ctx.meta = (xz.shape, xz.dtype, xz.device)
        return xz[..., :channels].transpose(1, 2), xz[..., channels:].transpose(1, 2)

    @staticmethod
    def backward(ctx, gx, gz):  # type: ignore[override]
        buf, ctx.pair.buf, ctx.pair.taken = ctx.pair.buf, None, set()
        if buf is not None and _is_half(gx, buf, 0) and _is_half(gz, buf, 1):
            return buf, None
        shape, dtype, device = ctx.meta
        out = torch.empty(shape, dtype=dtype, device=device)
        channels = shape[-1] // 2
        for index, g in enumerate((gx, gz)):
            half = out[..., index * channels:(index + 1) * channels]
            if g is None:
                half.zero_()
            else:
                half.copy_(g.transpose(1, 2))
        return out, None


def split_xz(xz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, 2E) -> x, z, each a (B, E, L) view; tagged with one :class:`GradPair` when a gradient is needed."""
    channels = xz.shape[-1] // 2
    if not (torch.is_grad_enabled() and xz.requires_grad):
        return xz[..., :channels].transpose(1, 2), xz[..., channels:].transpose(1, 2)
    pair = GradPair()
    x, z = _SplitXZ.apply(xz, pair)
    setattr(x, ATTR, pair)
    setattr(z, ATTR, pair)
    return x, z
