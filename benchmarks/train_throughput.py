"""Training throughput (samples/s) and peak memory of the stage-2 recipe, per scan backend (GPU).

    python benchmarks/train_throughput.py --out benchmarks/results
    python benchmarks/train_throughput.py --configs stage2_unmasked --batches 32 --backends triton chunked

One full optimisation step of ``videomamba_m16_umt`` (VideoMamba-M, 8 frames, 224 px + BERT-base with its fusion
layers and MLM head) as the shipped configs define it: ``stage2_masked`` (VTC + VTM + MLM + UTA with a CLIP
ViT-B/16 teacher choosing 20% of the video tokens) and ``stage2_unmasked`` (VTC + VTM + MLM on every token).
bf16 autocast, AdamW with the official groups, random tensors (no decoding: this measures the model, not the
loader) and random weights (the teacher's included: the cost is the same). Every backend and batch is measured
in the same run. ``triton-nofusednorm`` is the triton scan with the fused add+RMSNorm turned off
(``VTR_FUSED_NORM=0``), to show what that kernel buys.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import select_scan_variant, time_fn, write_result  # noqa: E402


def bench(config: str, backend: str, batch: int, budget: float) -> dict:
    from vtr.training.config import load_config
    from vtr.training.module import RetrievalLitModule
    from vtr.training.optim import official_param_groups

    scan = select_scan_variant(backend)
    torch.manual_seed(0)
    cfg = load_config(config, ["model.text_weights=random", "teacher.allow_random=true"])
    module = RetrievalLitModule(cfg)
    model, teacher = module.model.cuda().train(), module.teacher
    if teacher is not None:
        teacher.cuda()
    model.vision_encoder.set_scan_backend(scan)
    groups = official_param_groups(model.named_parameters(), cfg.optim.weight_decay, module._decay_by_name)
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), fused=True)
    frames, size = cfg.model.num_frames, cfg.model.img_size
    video = torch.randn(batch, frames, 3, size, size, device="cuda")
    ids = torch.randint(1000, 30000, (batch, cfg.model.max_txt_l), device="cuda")
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    idx = torch.arange(batch, device="cuda")
    kind, ratio = module.masking_for(video)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses = model.training_losses(video, ids, mask, idx=idx, weights=module.loss_weights, teacher=teacher,
                                           mask_kind=kind, mask_ratio=ratio)
        losses["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        timing = time_fn(step, torch.device("cuda"), iters=8, warmup=2, budget_s=budget)
    except torch.OutOfMemoryError:
        return {"status": "oom"}
    finally:
        os.environ.pop("VTR_FUSED_NORM", None)
    peak = torch.cuda.max_memory_allocated() / 2**30
    return {"status": "ok", "samples_per_s": round(batch / timing["median_s"], 2),
            "step_s": round(timing["median_s"], 4), "peak_gib": round(peak, 2), "iters": timing["iters"],
            "mask": f"{kind}:{ratio}",
            "losses": dataclasses.asdict(module.loss_weights)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["stage2_masked", "stage2_unmasked"])
    ap.add_argument("--batches", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--backends", nargs="+", default=["triton", "triton-nofusednorm", "chunked"])
    ap.add_argument("--budget", type=float, default=12.0, help="seconds of timed steps per configuration")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="train_throughput")
    args = ap.parse_args()

    rows = []
    for config in args.configs:
        for batch in args.batches:
            for backend in args.backends:
                row = {"config": config, "model": "videomamba_m16_umt", "batch": batch, "backend": backend}
                row.update(bench(config, backend, batch, args.budget))
                rows.append(row)
                print(row, flush=True)
                write_result(args.out, args.tag, {"settings": vars(args), "results": rows})
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
