"""Video tower seconds per clip on the CPU: VideoMamba per CPU scan backend beside a joint-attention ViT.

    python benchmarks/cpu_tower.py --out benchmarks/results                  # M, S, Ti x numba/chunked/reference + ViTs
    python benchmarks/cpu_tower.py --models videomamba_middle --backends numba --threads 2

One clip (batch 1) of 8 x 224^2 in float32 under inference_mode (what `vtr index` does on a CPU), median of up to
``--iters`` timed calls after one warm-up (fewer when a call is slow: ``--budget``). ``reference`` is the official
per-step Python loop. The ViTs (12 blocks, SDPA) take the same input; ``vit_base`` is 768 wide with 12 heads.
The load average is recorded before and after each row: on a shared machine other processes take CPU time.
Both wall and process CPU seconds are recorded: with ``--threads 1`` the CPU seconds are what the run takes on an
idle core, whatever else runs. The numba backend's share of the time is measured by running the same model
with the scan replaced by a no-op of the same output shape (``scan_share``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_vit import JointAttentionViT  # noqa: E402
from common import write_result  # noqa: E402

VITS = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}


def build(name: str, frames: int, size: int, backend: str | None) -> torch.nn.Module:
    from vtr.encoders.videomamba import create_video_encoder

    torch.manual_seed(0)
    if name in VITS:
        dim, heads = VITS[name]
        return JointAttentionViT(dim, heads, num_frames=frames, img_size=size).eval()
    return create_video_encoder(name, num_frames=frames, img_size=size, scan_backend=backend).eval()


def bench(model: torch.nn.Module, frames: int, size: int, iters: int, budget: float) -> dict:
    """Wall and process CPU seconds per clip (medians). On a contended machine the CPU seconds of a 1-thread run
    are what the same run takes alone; the wall time is what it took beside the other processes."""
    video = torch.randn(1, frames, 3, size, size)
    load_before = os.getloadavg()
    walls, cpus = [], []
    with torch.inference_mode():
        model(video)  # warm-up (numba compiles or loads its cache)
        t_end = time.perf_counter() + budget
        while len(walls) < iters and (not walls or time.perf_counter() < t_end):
            w, c = time.perf_counter(), time.process_time()
            model(video)
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
    return {"s_per_clip": round(statistics.median(walls), 3), "cpu_s_per_clip": round(statistics.median(cpus), 3),
            "iters": len(walls), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+",
                    default=["videomamba_middle", "videomamba_small", "videomamba_tiny", "vit_base", "vit_small",
                             "vit_tiny"])
    ap.add_argument("--backends", nargs="+", default=["numba", "chunked", "reference"])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="cpu_tower")
    args = ap.parse_args()

    import vtr.encoders.selective_scan as ss

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    rows = []
    for name in args.models:
        for backend in [None] if name in VITS else args.backends:
            model = build(name, args.frames, args.size, backend)
            row = {"model": name, "backend": backend, **bench(model, args.frames, args.size, args.iters, args.budget)}
            if backend == "numba":  # the same model with a free scan: what is left is everything else
                real = ss._BACKENDS["numba"]
                ss._BACKENDS["noscan"] = replace(real, name="noscan", scan=lambda d, *a: torch.zeros_like(d.u),
                                                 bidirectional_scan=lambda f, b, z: torch.zeros_like(f.u))
                model.set_scan_backend("noscan")
                try:
                    rest = bench(model, args.frames, args.size, args.iters, args.budget)["cpu_s_per_clip"]
                finally:
                    del ss._BACKENDS["noscan"]
                row["without_scan_cpu_s"] = rest
                row["scan_share"] = round(1 - rest / row["cpu_s_per_clip"], 3) if row["cpu_s_per_clip"] else None
            print(row, flush=True)
            rows.append(row)
            del model
            time.sleep(0.5)
    vit_b = next((r["cpu_s_per_clip"] for r in rows if r["model"] == "vit_base"), None)
    for r in rows:
        if vit_b:
            r["cpu_over_vit_base"] = round(r["cpu_s_per_clip"] / vit_b, 2)
    write_result(args.out, args.tag, {"settings": {**vars(args), "threads": threads, "dtype": "float32",
                                                   "batch": 1}, "rows": rows})


if __name__ == "__main__":
    main()
