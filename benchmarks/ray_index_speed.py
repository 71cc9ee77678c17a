"""``vtr index --engine ray`` against the local engine on the same folder, in one run (videos/s of each).

    python benchmarks/ray_index_speed.py --videos 3000 --workers 8 --batch-size 32        # one GPU host
    python benchmarks/ray_index_speed.py --videos 40 --img-size 32 --frames 4 --workers 1  # CPU smoke

Rounds alternate local / ray (``--repeats``), each into a fresh home, so both see the same page cache state;
the figures are medians. The Ray instance is started once before the first round (``ray.init``, local, all CPUs
and GPUs of the machine; or ``--ray-address``) and its start-up is reported separately; each Ray round includes
its encoder actors' start (model load), which is part of what Ray costs. Target: ray >= 0.95x local.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=3000)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--model", default=None, help="model dir (default: a random VideoMamba-Ti)")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--workers", type=int, default=8, help="decode workers of the local engine")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--videos-per-task", type=int, default=None, help="videos per Ray decode task (default: vtr's)")
    ap.add_argument("--decode-pool", choices=["tasks", "actors"], default="tasks")
    ap.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs each decode task reserves")
    ap.add_argument("--gpus-per-actor", type=float, default=1.0, help="below 1: several encoder actors per GPU")
    ap.add_argument("--object-store-gb", type=float, default=None, help="Ray object store size (default: Ray's)")
    ap.add_argument("--stats", action="store_true", help="print Ray Data's per-operator statistics of each round")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--world-workers", type=int, default=None, help="processes writing the synthetic world")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="ray_index_speed")
    args = ap.parse_args()
    if args.stats:
        import logging

        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("vtr.engines.ray_engine").setLevel(logging.INFO)

    import ray
    import torch

    from vtr.data.synth import generate_world
    from vtr.engines.ray_engine import RayOptions
    from vtr.library import Library
    from vtr.model.registry import save_model_dir
    from vtr.model.retrieval import build_model, config_for

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        folder = Path(args.folder) if args.folder else generate_world(
            tmp / "w", args.videos, seed=0, workers=args.world_workers).videos_dir
        world_s = time.perf_counter() - t0
        model_ref = args.model
        if model_ref is None:
            torch.manual_seed(0)
            model = build_model(config_for("videomamba_t16_minilm", num_frames=args.frames, img_size=args.img_size),
                                text_pretrained=False)
            model_ref = str(save_model_dir(model, tmp / "model"))
        t0 = time.perf_counter()
        ray.init(address=args.ray_address, include_dashboard=False, logging_level="WARNING",
                 object_store_memory=int(args.object_store_gb * 2**30) if args.object_store_gb else None)
        ray_init_s = time.perf_counter() - t0
        resources = {k: v for k, v in ray.cluster_resources().items()
                     if k in ("CPU", "GPU", "memory", "object_store_memory")}
        rounds = []
        for r in range(args.repeats):
            row = {}
            for engine in ("local", "ray"):
                lib = Library(home=tmp / f"home_{engine}_{r}", model=model_ref, device=args.device)
                lib.model  # noqa: B018  (loaded before timing, as the local engine's warm process would be)
                report = lib.index([folder], workers=args.workers, batch_size=args.batch_size, progress=False,
                                   engine=engine, ray_options=RayOptions(videos_per_task=args.videos_per_task,
                                                                         gpus_per_actor=args.gpus_per_actor,
                                                                         decode_cpus=args.decode_cpus,
                                                                         decode_pool=args.decode_pool,
                                                                         log_stats=args.stats))
                row[engine] = {"videos_per_s": report.videos_per_s, "wall_s": report.wall_s,
                               "indexed": report.indexed, "failed": len(report.failed), "segments": report.segments}
                print(r, engine, row[engine], flush=True)
            rounds.append(row)
        ray.shutdown()
    local = statistics.median(x["local"]["videos_per_s"] for x in rounds)
    ray_v = statistics.median(x["ray"]["videos_per_s"] for x in rounds)
    results = {"videos": args.videos, "world_s": round(world_s, 1), "ray_init_s": round(ray_init_s, 2),
               "ray_resources": resources, "local_videos_per_s": local, "ray_videos_per_s": ray_v,
               "ray_over_local": round(ray_v / local, 3) if local else None, "rounds": rounds,
               "loadavg": [round(x, 2) for x in os.getloadavg()]}
    print(results, flush=True)
    write_result(args.out, args.tag, {"settings": vars(args), "results": results})


if __name__ == "__main__":
    main()
