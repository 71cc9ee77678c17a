"""Issue 18 on vtr-shapes: self-distillation and stage-1 masked pretraining, same world, seed and budget.

    python benchmarks/distill_shapes.py --world /tmp/world --out benchmarks/results --epochs 12 --stage1-epochs 6

Five runs, as separate processes (concurrent where they do not depend on each other; they share the GPU and
the decode cores, so wall times are not comparable between runs, only the held-out metrics are):

    small        shapes_small from scratch                                  (phase 1)
    base         shapes_base from scratch                                   (phase 1)
    stage1       shapes_stage1: the small video tower, video-only UTA against the trained `small` (phase 2)
    base_sd      shapes_base + self-distillation from the trained `small`   (phase 2)
    small_s1     shapes_small initialised from stage1's vision.pt           (phase 3)

Every run has the same seed and, apart from stage1, the same number of epochs. Reported: held-out T2V R@1/5/10,
V2T R@1, MdR and the temporal hard-negative subset (final validation), the validation curve (every
``--val-every`` epochs) and the last training losses. Results are written after each run finishes
(``<out>/<tag>.json``), so a run stopped by a time limit still leaves the finished ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

KEYS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "t2v_mdr", "temporal_r1", "temporal_chance", "temporal_queries",
        "t2v_chance_r1", "val_failed_videos")


def run_one(args: argparse.Namespace) -> None:
    """Child process: one training run; its summary as JSON in ``<work>/<name>.json``."""
    from vtr.training.run import train

    t0 = time.perf_counter()
    summary = train(args.config, args.overrides, name=args.name, home=args.work / "home",
                    out=args.work / "runs" / args.name)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (args.work / f"{args.name}.json").write_text(json.dumps(summary))


def _curves(run_dir: Path) -> dict:
    """Validation metrics by epoch and the last logged training losses, from the run's metrics.csv."""
    val, train = [], {}
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(path) as fh:
            for row in csv.DictReader(fh):
                if row.get("val/t2v_r1"):
                    val.append({"epoch": int(row["epoch"]), "step": int(row["step"]),
                                **{k: round(float(row[f"val/{k}"]), 2) for k in ("t2v_r1", "v2t_r1", "temporal_r1")
                                   if row.get(f"val/{k}")}})
                for key, value in row.items():
                    if key.startswith("train/") and value and key not in ("train/lr", "train/lr_different"):
                        train[key[len("train/"):]] = round(float(value), 4)
    return {"val_curve": val, "last_train_losses": train}


class Runner:
    def __init__(self, args: argparse.Namespace, common: list[str]) -> None:
        self.args, self.common = args, common
        self.procs: dict[str, tuple[subprocess.Popen, float, str, list[str]]] = {}
        self.results: dict[str, dict] = {}
        self.t0 = time.perf_counter()

    def start(self, name: str, config: str, overrides: list[str]) -> None:
        a = self.args
        cmd = [sys.executable, __file__, "--child", "--config", config, "--name", name, "--work", str(a.work), "--",
               *self.common, *overrides]
        log = open(a.work / f"{name}.log", "w")
        print(f"[{time.perf_counter() - self.t0:6.1f}s] start {name}: {config} {' '.join(overrides)}", flush=True)
        self.procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.perf_counter(), config,
                            overrides)

    def wait(self, name: str) -> dict | None:
        proc, started, config, overrides = self.procs[name]
        rc = proc.wait()
        elapsed = round(time.perf_counter() - started, 1)
        summary_path = self.args.work / f"{name}.json"
        if rc != 0 or not summary_path.is_file():
            tail = (self.args.work / f"{name}.log").read_text()[-3000:]
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {name} FAILED rc={rc}\n{tail}", flush=True)
            self.results[name] = {"config": config, "overrides": overrides, "failed": rc, "log_tail": tail[-1500:]}
            self.write()
            return None
        s = json.loads(summary_path.read_text())
        m = s.get("metrics", {})
        self.results[name] = {
            "config": config, "overrides": overrides,
            "metrics": {k: round(float(m[k]), 2) for k in KEYS if k in m},
            **_curves(Path(s["run_dir"])),
            "global_step": s["global_step"], "train_samples": s["train_samples"], "parameters": s["parameters"],
            "samples_per_s": s["samples_per_s"], "train_time_s": s["train_time_s"], "wall_s": elapsed,
            "model_dir": s.get("model_dir"), "vision_checkpoint": s.get("vision_checkpoint"),
        }
        print(f"[{time.perf_counter() - self.t0:6.1f}s] done {name}: {self.results[name]['metrics']} "
              f"{self.results[name]['last_train_losses']}", flush=True)
        self.write()
        return s

    def write(self) -> None:
        from common import write_result

        a = self.args
        world = json.loads((a.world / "world.json").read_text())
        write_result(a.out, a.tag, {
            "world": {k: world[k] for k in ("num_videos", "num_train", "num_test", "num_temporal_groups", "seed")},
            "epochs": a.epochs, "stage1_epochs": a.stage1_epochs, "common_overrides": self.common,
            "elapsed_s": round(time.perf_counter() - self.t0, 1), "loadavg": os.getloadavg(), "runs": self.results})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=Path, help="an existing vtr-shapes world")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="distill_shapes_h200")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vtr_distill"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--stage1-epochs", type=int, default=6)
    ap.add_argument("--val-every", type=int, default=4)
    ap.add_argument("--workers", type=int, default=5, help="decode workers per run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_one(args)
        return
    e = args.epochs
    common = [f"data.world={args.world}", "trainer.progress_bar=false", f"data.num_workers={args.workers}",
              f"trainer.val_every_n_epochs={args.val_every}", "trainer.keep_checkpoints=0", *args.overrides]
    r = Runner(args, common)
    r.start("small", "shapes_small", [f"schedule.epochs={e}"])
    r.start("base", "shapes_base", [f"schedule.epochs={e}"])
    small = r.wait("small")
    if small is None:
        r.wait("base")
        return
    teacher = small["model_dir"]
    r.start("stage1", "shapes_stage1", [f"schedule.epochs={args.stage1_epochs}", f"teacher.model={teacher}"])
    r.start("base_sd", "shapes_base", [f"schedule.epochs={e}", f"self_distill.model={teacher}", "losses.distill=1"])
    stage1 = r.wait("stage1")
    if stage1 is not None:
        r.start("small_s1", "shapes_small", [f"schedule.epochs={e}",
                                             f"model.vision_pretrained={stage1['vision_checkpoint']}"])
    r.wait("base")
    r.wait("base_sd")
    if stage1 is not None:
        r.wait("small_s1")
    print(json.dumps({k: v.get("metrics") for k, v in r.results.items()}, indent=1))


if __name__ == "__main__":
    main()
