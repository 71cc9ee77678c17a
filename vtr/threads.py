"""Decode workers and torch intra-op threads for indexing, chosen from the core count (no oversubscription).

On a CPU the encoder is the bottleneck (decoding a clip costs a few percent of encoding it), so most cores go to
torch's intra-op threads and a few to decode workers; the two together never exceed the cores. With 2 cores or
fewer, decoding runs in the main process (0 workers) and both cores encode. On CUDA the GPU encodes and the cores
decode: up to 12 workers, leaving 2 cores to the main process (measured on a 16-core host: 8 workers 0.92x of
decode-only, 12 workers faster in absolute terms; notes in NOTES.md, issue 7).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, so containers and `taskset` are respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    workers: int  # decode worker processes (0: decode in the main process)
    torch_threads: int  # intra-op threads of the encoder (torch and the numba scan)


def plan_threads(device_type: str, workers: int | None = None, cores: int | None = None) -> ThreadPlan:
    """The plan for indexing on ``device_type`` with ``cores`` cores; ``workers`` given by the user is kept."""
    cores = cores or available_cores()
    if workers is None:
        if device_type == "cuda":
            workers = min(12, max(1, cores - 2))
        else:
            workers = 0 if cores <= 2 else max(1, cores // 8)
    workers = max(0, workers)
    return ThreadPlan(workers=workers, torch_threads=max(1, cores - workers))


@contextlib.contextmanager
def indexing_threads(workers: int | None, device: torch.device | str,
                     cores: int | None = None) -> Iterator[int]:
    """Set torch's intra-op threads for an indexing run (restored afterwards); yields the decode worker count."""
    plan = plan_threads(torch.device(device).type, workers, cores)
    before = torch.get_num_threads()
    torch.set_num_threads(plan.torch_threads)
    try:
        yield plan.workers
    finally:
        torch.set_num_threads(before)
