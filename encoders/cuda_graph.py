"""Replay one captured CUDA graph of an inference forward instead of launching its kernels one by one.

A VideoMamba forward launches a few hundred small kernels (Ti: ~16 per layer x 24 layers); at small batches the
host cannot launch them as fast as the GPU runs them. :class:`GraphedForward` captures the whole forward once,
for one input shape, and replays it with a single launch. Opt-in, inference only (no autograd), CUDA only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vtr.errors import ConfigError

__all__ = ["GraphedForward"]


class GraphedForward:
    """``GraphedForward(fn, example)``: capture ``fn(example)`` (e.g. ``lambda v: model(v)`` under autocast) as a
    CUDA graph; ``graphed(x)`` copies ``x`` into the captured input, replays and returns the captured outputs.

    The outputs are the same tensors on every call, overwritten by the next one: clone what you keep. ``x`` must
    have the example's shape, dtype and device (a new shape needs a new ``GraphedForward``).
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], example: torch.Tensor, warmup: int = 2) -> None:
        if not example.is_cuda:
            raise ConfigError("GraphedForward needs a CUDA example tensor; on CPU call the model directly")
        self.static_input = example.detach().clone()
        side = torch.cuda.Stream(example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(warmup):  # compiles kernels and sets up library workspaces outside the capture
                fn(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.static_output = fn(self.static_input)

    def __call__(self, x: torch.Tensor) -> Any:
        if x.shape != self.static_input.shape or x.dtype != self.static_input.dtype:
            raise ConfigError(f"GraphedForward was captured for {tuple(self.static_input.shape)} "
                              f"{self.static_input.dtype}, got {tuple(x.shape)} {x.dtype}: capture another one")
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output
