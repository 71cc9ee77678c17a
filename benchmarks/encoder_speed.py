"""Encoder throughput (clips/s) and peak memory vs frames: VideoMamba per scan backend vs joint attention ViT.

    python benchmarks/encoder_speed.py --out benchmarks/results            # the full grid (GPU)
    python benchmarks/encoder_speed.py --models videomamba_tiny vit_tiny --frames 8 16 --backends chunked

Inference under bf16 autocast at 224x224, batch 32 by default, median over up to 10 timed calls after
warm-up (fewer when one call is slow: ``--budget``). Training mode (``--train``) times forward+backward.
Every model and the attention baseline are measured in the same run, so ratios compare like with like.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_vit import VIT_SIZES, create_attention_vit  # noqa: E402
from common import select_scan_variant, time_fn, write_result  # noqa: E402

from vtr.encoders.selective_scan import available_backends  # noqa: E402
from vtr.encoders.videomamba import create_video_encoder  # noqa: E402


def bench_one(name: str, frames: int, batch: int, backend: str | None, device: torch.device, train: bool,
              budget: float) -> dict:
    torch.manual_seed(0)
    if name in VIT_SIZES:
        model = create_attention_vit(name, num_frames=frames)
    else:
        model = create_video_encoder(name, num_frames=frames, scan_backend=select_scan_variant(backend))
    model = model.to(device).train(train)
    video = torch.randn(batch, frames, 3, 224, 224, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(video)
            out = out.pooled if hasattr(out, "pooled") else out
        if train:
            out.float().square().mean().backward()
            model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    try:
        if train:
            timing = time_fn(step, device, budget_s=budget)
        else:
            with torch.inference_mode():
                timing = time_fn(step, device, budget_s=budget)
    except torch.OutOfMemoryError:
        return {"status": "oom"}
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None
    return {"status": "ok", "clips_per_s": batch / timing["median_s"], "peak_gib": peak, **timing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+",
                    default=["videomamba_tiny", "videomamba_small", "videomamba_middle", "vit_tiny", "vit_small"])
    ap.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--backends", nargs="*", default=None, help="scan backends (default: all available)")
    ap.add_argument("--train", action="store_true", help="time forward+backward instead of inference")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per configuration")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="encoder_speed")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backends = args.backends or [b for b in available_backends(device) if b != "reference"]
    rows = []
    for frames in args.frames:
        for name in args.models:
            for backend in ([None] if name in VIT_SIZES else backends):
                row = {"model": name, "frames": frames, "batch": args.batch, "backend": backend or "sdpa",
                       "mode": "train" if args.train else "inference"}
                row.update(bench_one(name, frames, args.batch, backend, device, args.train, args.budget))
                rows.append(row)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                write_result(args.out, args.tag, {"settings": vars(args), "results": rows})
    print(f"wrote {Path(args.out) / (args.tag + '.json')}")


if __name__ == "__main__":
    main()
