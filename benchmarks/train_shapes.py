"""Train ``shapes_tiny`` on a CPU (or ``shapes_small`` on a GPU) and its frame-mean baseline; held-out retrieval.

    python benchmarks/train_shapes.py --out benchmarks/results            # 1500-clip world, both runs
    python benchmarks/train_shapes.py --world /tmp/w1500 --threads 1      # reuse a world, one torch thread
    python benchmarks/train_shapes.py --world /tmp/w1500 --only model     # re-run one side (the other is kept)
    python benchmarks/train_shapes.py --config shapes_small --videos 5000 --workers 14 data.num_workers=14  # GPU

Both runs use the same world, config, seed and budget; the baseline only sets ``model.frame_independent=true``
(same VideoMamba width and depth, every frame encoded on its own, no temporal mixing). Reported: held-out
text->video R@1/5/10 over the whole test split, and R@1 on the temporal hard-negative subset (each test text ranked
among the clips of its temporal group only: the clip and its reversed / event-swapped partner, chance 50%), with
wall times. Result: ``<out>/<config>_<cpu|gpu>.json``.

``OMP_WAIT_POLICY=PASSIVE`` is set before torch loads: on a shared machine, spinning OpenMP threads that wait for
a busy core made training several times slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

KEYS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "t2v_mdr", "temporal_r1", "temporal_chance", "temporal_queries",
        "temporal_full_r1", "t2v_chance_r1", "val_failed_videos")


def run(config_name: str, world: Path, work: Path, name: str, overrides: list[str]) -> dict:
    from vtr.training.run import train

    t0 = time.perf_counter()
    summary = train(config_name, [f"data.world={world}", *overrides], name=name, home=work / "home",
                    out=work / "runs" / name)
    wall = time.perf_counter() - t0
    metrics = summary["metrics"]
    return {
        "overrides": overrides,
        "metrics": {k: round(float(metrics[k]), 2) for k in KEYS if k in metrics},
        "wall_s": round(wall, 1),
        "train_time_s": summary["train_time_s"],
        "samples_per_s": summary["samples_per_s"],
        "global_step": summary["global_step"],
        "train_samples": summary["train_samples"],
        "parameters": summary["parameters"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--world", type=Path, default=None, help="Existing vtr-shapes world (default: synthesise one).")
    ap.add_argument("--videos", type=int, default=1500, help="Clips in a synthesised world.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/vtr_train_shapes"), help="Runs and data home.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    ap.add_argument("--only", choices=("model", "baseline"), default=None)
    ap.add_argument("--config", default="shapes_tiny", help="shapes_tiny (CPU) or shapes_small (GPU)")
    ap.add_argument("--tag", default=None, help="result name (default: <config>_cpu or <config>_gpu)")
    ap.add_argument("--workers", type=int, default=None, help="processes that synthesise the world")
    ap.add_argument("overrides", nargs="*", help="Extra config overrides for both runs.")
    args = ap.parse_args()

    from common import write_result

    import vtr.training.config as config
    from vtr.data.synth import generate_world

    world, synth_s = args.world, None
    if world is None:
        world = args.work / f"world_{args.videos}_{args.seed}"
        if not (world / "test.json").is_file():
            t0 = time.perf_counter()
            generate_world(world, args.videos, seed=args.seed, overwrite=True, workers=args.workers)
            synth_s = round(time.perf_counter() - t0, 1)
    common = ["trainer.progress_bar=false", *args.overrides]
    if args.threads:
        common.append(f"trainer.num_threads={args.threads}")
    import torch

    name = args.config.replace("_", "-")
    tag = args.tag or f"{args.config}_{'gpu' if torch.cuda.is_available() else 'cpu'}"
    runs = {}
    if args.only in (None, "model"):
        runs["videomamba"] = run(args.config, world, args.work, name, common)
        print("videomamba", runs["videomamba"], flush=True)
    if args.only in (None, "baseline"):
        runs["frame_mean_baseline"] = run(args.config, world, args.work, f"{name}-framemean",
                                          [*common, "model.frame_independent=true"])
        print("frame_mean_baseline", runs["frame_mean_baseline"], flush=True)
    import json

    previous = Path(args.out) / f"{tag}.json"
    if args.only and previous.is_file():  # keep the other run of an earlier invocation
        runs = {**json.loads(previous.read_text()).get("runs", {}), **runs}
    world_info = json.loads((world / "world.json").read_text())
    payload = {
        "config": config.to_dict(config.load_config(args.config, [f"data.world={world}", *common])),
        "world": {k: world_info[k] for k in ("num_videos", "num_train", "num_test", "num_temporal_groups", "seed")},
        "synth_s": synth_s,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "runs": runs,
    }
    path = write_result(args.out, tag, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
