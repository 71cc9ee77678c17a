"""Indexing throughput: decode-only vs end-to-end `Library.index` (videos/s), in one run.

    python benchmarks/index_speed.py --videos 200 --model DIR_OR_NAME [--workers 2] [--device auto]

The goal is that encoding never starves: end-to-end within 10% of decode-only throughput. Uses a vtr-shapes
world (written to a temp folder) unless ``--folder`` points at real videos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--model", default=None, help="model dir / installed name (default: a random tiny model)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from vtr.data.synth import generate_world
    from vtr.index.files import walk_videos
    from vtr.model.registry import create_model, save_model_dir
    from vtr.model.retrieval import build_model, config_for
    from vtr.pipeline import Library, _VideoItems

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.folder) if args.folder else generate_world(tmp / "w", args.videos, seed=0).videos_dir
        model_ref = args.model
        if model_ref is None:
            torch.manual_seed(0)
            random_model = build_model(config_for("videomamba_t16_minilm"), text_pretrained=False)
            model_ref = str(save_model_dir(random_model, tmp / "model"))
        model = create_model(model_ref)
        paths = list(walk_videos([folder]))
        frames, size = model.cfg.num_frames, model.cfg.img_size

        items = _VideoItems(paths, frames, size, None, None)
        loader = DataLoader(items, batch_size=None, num_workers=args.workers,
                            prefetch_factor=4 if args.workers else None)
        t0 = time.perf_counter()
        n = sum(1 for item in loader if "error" not in item)
        decode_s = time.perf_counter() - t0

        lib = Library(home=tmp / "home", model=model_ref, device=args.device)
        with torch.no_grad():  # load the weights and compile/warm the kernels before timing
            lib._encode_clips(torch.zeros(args.batch_size, frames, 3, size, size))
        report = lib.index([folder], workers=args.workers, batch_size=args.batch_size, progress=False)
        device = str(lib.device) if lib.device.type == "cpu" else torch.cuda.get_device_name(lib.device)
    result = {
        "videos": len(paths), "decoded": n, "model": model.cfg.name, "frames": frames, "resolution": size,
        "workers": args.workers, "batch_size": args.batch_size, "device": device,
        "decode_only_videos_per_s": round(n / decode_s, 2),
        "end_to_end_videos_per_s": round(report.indexed / report.wall_s, 2),
        "end_to_end_over_decode": round((report.indexed / report.wall_s) / (n / decode_s), 3),
    }
    print(result)
    tag = args.tag or f"index_speed_{'gpu' if device != 'cpu' else 'cpu'}"
    write_result(args.out, tag, {"settings": vars(args), "results": result})


if __name__ == "__main__":
    main()
