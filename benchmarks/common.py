"""Shared benchmark helpers: machine/version metadata, CUDA timing, JSON results."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def machine_info() -> dict[str, Any]:
    """Where and with what a result was measured."""
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    import vtr

    info["vtr"] = vtr.__version__
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, iters: int = 10, warmup: int = 2,
            budget_s: float = 30.0) -> dict[str, Any]:
    """Median wall time of ``fn`` after warm-up; fewer iterations when one call is slow (``budget_s``)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    first = (time.perf_counter() - t0) / max(warmup, 1)
    iters = max(1, min(iters, int(budget_s / max(first, 1e-6))))
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "iters": iters}


NO_FUSED_NORM = "-nofusednorm"


def select_scan_variant(backend: str | None) -> str | None:
    """``"<scan>-nofusednorm"`` -> ``"<scan>"`` with ``VTR_FUSED_NORM=0`` set (the fused add+RMSNorm off, to
    measure what it buys); any other backend name -> itself with the fused norm on."""
    off = backend is not None and backend.endswith(NO_FUSED_NORM)
    os.environ["VTR_FUSED_NORM"] = "0" if off else "1"
    return backend.removesuffix(NO_FUSED_NORM) if backend is not None else None


def write_result(out_dir: str | Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus machine info) to ``out_dir/name.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine_info(), **payload}, indent=2))
    return path
