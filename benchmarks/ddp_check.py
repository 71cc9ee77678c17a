"""Multi-GPU training check: Lightning DDP over N GPUs (NCCL), and VTC with all-gathered features equal to the
single-GPU VTC of the same global batch.

    python benchmarks/ddp_check.py --gpus 2 --out benchmarks/results     # on a 2-GPU machine

1. ``parity``: ``vtr.training.run.train`` with ``trainer.strategy=ddp trainer.devices=N`` in float32 (dropout off,
   keyed data randomness) for 2 steps; the VTC logged at step 0 (rank 0, computed on features all-gathered from every
   rank) is compared with the VTC of one process on one GPU over the concatenated global batch (rank 0's samples,
   then rank 1's, ...), same initial weights.
2. ``train``: a short bf16 DDP run of ``shapes_tiny`` at 64 px on a synthesised world (samples/s over all GPUs,
   held-out retrieval at the end), against the same run on one GPU.

Text weights are random (``model.text_weights=random``): the check needs only the tokenizer. Result:
``<out>/ddp_check_<gpu>x<N>.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

SCRIPT = """
import json, sys
from vtr.training.run import train
summary = train("shapes_tiny", sys.argv[3:], home=sys.argv[1], out=sys.argv[2])
if summary["model_dir"]:
    print("SUMMARY " + json.dumps(summary), flush=True)
"""
TINY = ["model.img_size=32", "model.num_frames=4", "model.vision.depth=2", "data.num_workers=2", "losses.mlm=1",
        "trainer.progress_bar=false", "trainer.log_every_n_steps=1", "model.text_weights=random"]
NO_DROPOUT = ["model.text.hidden_dropout_prob=0", "model.text.attention_probs_dropout_prob=0"]


def run_train(tmp: Path, name: str, opts: list[str], timeout: int) -> tuple[dict, list[dict]]:
    script = tmp / "ddp_run.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp / "home"), str(tmp / name), *opts],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp)
    if proc.returncode != 0 or "SUMMARY " not in proc.stdout:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    summary = json.loads(proc.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    rows = []
    for path in sorted((tmp / name).glob("logs/version_*/metrics.csv")):
        with open(path) as fh:
            rows += list(csv.DictReader(fh))
    return summary, rows


def single_gpu_vtc(opts: list[str], gpus: int, batch: int, device: str = "cuda") -> float:
    """VTC of one process on one GPU over the global batch that the DDP ranks drew at step 0."""
    from vtr.compat import ensure_torchvision

    ensure_torchvision()  # before lightning: torchvision's import fails on a CPU torch otherwise
    import lightning as L
    import torch

    from vtr.model.losses import LossWeights
    from vtr.training.config import load_config
    from vtr.training.data import MediaBatchSampler, RetrievalDataModule, TrainCollate
    from vtr.training.module import RetrievalLitModule

    cfg = load_config("shapes_tiny", opts)
    L.seed_everything(cfg.seed, verbose=False)  # as train() does before building the module
    module = RetrievalLitModule(cfg)
    dm = RetrievalDataModule(cfg, cfg.model.num_frames, cfg.model.img_size, cfg.model.max_txt_l)
    dm.setup("fit")
    groups = [list(range(len(dm.train_set)))]
    samplers = [MediaBatchSampler(groups, batch, seed=cfg.seed, rank=r, world=gpus) for r in range(gpus)]
    keys = [i for s in samplers for i in s.epoch_batches(0)[0]]
    data = TrainCollate(cfg.model.max_txt_l)([dm.train_set[(i, 0)] for i in keys])
    model = module.model.to(device).train()
    with torch.no_grad():
        out = model.training_losses(data["video"].to(device), data["input_ids"].to(device),
                                    data["attention_mask"].to(device), idx=data["idx"].to(device),
                                    weights=LossWeights(vtm=0, mlm=0, uta=0))
    return float(out["vtc"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--videos", type=int, default=2000, help="clips in the world of the training run")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--workers", type=int, default=6, help="decode workers per process")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cpu-smoke", action="store_true", help="parity part only, on CPU with gloo (a dry run)")
    args = ap.parse_args()
    accel = "cpu" if args.cpu_smoke else "gpu"

    import torch

    from vtr.data.synth import generate_world

    result: dict = {"gpus": args.gpus}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small = generate_world(tmp / "w48", 48, seed=0, workers=2 if args.cpu_smoke else 8).out_dir
        batch = 6
        opts = [f"data.train={small}", *TINY, *NO_DROPOUT, f"data.batch_size={batch}", "schedule.max_steps=2",
                "trainer.val_every_n_epochs=0", f"trainer.accelerator={accel}", f"trainer.devices={args.gpus}",
                "trainer.strategy=ddp", "trainer.precision=32-true"]
        summary, rows = run_train(tmp, "parity", opts, timeout=300)
        logged = [float(r["train/vtc"]) for r in rows if r.get("train/vtc")]
        single = single_gpu_vtc(opts, args.gpus, batch, "cpu" if args.cpu_smoke else "cuda")
        rel = abs(logged[0] - single) / abs(single)
        result["parity"] = {"world_size": summary["world_size"], "global_batch": batch * args.gpus,
                            "ddp_vtc_step0": logged[0], "single_gpu_vtc": single, "rel_diff": rel,
                            "match_rel_1e-4": rel < 1e-4, "precision": "32-true"}
        print("parity", result["parity"], flush=True)
        if args.cpu_smoke:
            return

        world = generate_world(tmp / "w", args.videos, seed=0, workers=14).out_dir
        common = [f"data.world={world}", "model.img_size=64", "model.text_weights=random", "trainer.progress_bar=false",
                  f"schedule.epochs={args.epochs}", f"trainer.val_every_n_epochs={args.epochs}",
                  f"data.num_workers={args.workers}", "data.batch_size=64", "trainer.accelerator=gpu"]
        for devices in (args.gpus, 1):
            extra = [f"trainer.devices={devices}"] + (["trainer.strategy=ddp"] if devices > 1 else [])
            s, _ = run_train(tmp, f"train{devices}", [*common, *extra], timeout=400)
            result[f"train_{devices}gpu"] = {k: s.get(k) for k in ("world_size", "global_step", "train_samples",
                                                                   "train_time_s", "samples_per_s")}
            result[f"train_{devices}gpu"]["metrics"] = {k: round(float(v), 2) for k, v in s["metrics"].items()
                                                        if k in ("t2v_r1", "t2v_r5", "t2v_r10", "temporal_r1")}
            print(f"train {devices} GPU", result[f"train_{devices}gpu"], flush=True)
    gpu = torch.cuda.get_device_name(0).split()[-1].lower()
    result["settings"] = vars(args)
    path = write_result(args.out, f"ddp_check_{gpu}x{args.gpus}", result)
    print(f"wrote {path}")
    if not result["parity"]["match_rel_1e-4"]:
        raise SystemExit("DDP VTC does not match the single-GPU VTC")


if __name__ == "__main__":
    main()
