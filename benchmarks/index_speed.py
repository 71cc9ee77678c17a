"""Indexing throughput: decode-only vs end-to-end `Library.index` (videos/s), in one run.

    python benchmarks/index_speed.py --videos 200 --model DIR_OR_NAME [--workers 2] [--device auto]

Records the load average and the main process's CPU seconds per video (with 0 decode workers, vtr's choice on 2
cores, that is all the work: a figure that holds on a shared machine). The goal is that encoding never starves:
end-to-end within 10% of decode-only throughput. Uses a vtr-shapes
world (written to a temp folder) unless ``--folder`` points at real videos.
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
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--model", default=None, help="model dir / installed name (default: a random tiny model)")
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: vtr's choice, vtr/threads.py)")
    ap.add_argument("--arch", default="videomamba_t16_minilm", help="architecture of the default random model")
    ap.add_argument("--depth", type=int, default=None, help="vision depth of the default random model")
    ap.add_argument("--patch", type=int, default=None, help="patch size of the default random model")
    ap.add_argument("--img-size", type=int, default=224, help="resolution of the default random model")
    ap.add_argument("--frames", type=int, default=8, help="frames of the default random model")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="alternating decode-only / end-to-end rounds (medians)")
    args = ap.parse_args()

    import torch

    from vtr.data.clips import ClipDataset, ClipRequest, clip_loader
    from vtr.data.synth import generate_world
    from vtr.index.files import walk_videos
    from vtr.library import Library
    from vtr.model.registry import create_model, save_model_dir
    from vtr.model.retrieval import build_model, config_for

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.folder) if args.folder else generate_world(tmp / "w", args.videos, seed=0).videos_dir
        model_ref = args.model
        if model_ref is None:
            torch.manual_seed(0)
            vision = {k: v for k, v in (("depth", args.depth), ("patch_size", args.patch)) if v}
            random_model = build_model(config_for(args.arch, num_frames=args.frames, img_size=args.img_size,
                                                  vision=vision), text_pretrained=False)
            model_ref = str(save_model_dir(random_model, tmp / "model"))
        model = create_model(model_ref)
        paths = list(walk_videos([folder]))
        frames, size = model.cfg.num_frames, model.cfg.img_size

        lib = Library(home=tmp / "home0", model=model_ref, device=args.device)
        with torch.no_grad():  # load the weights and compile/warm the kernels before timing
            lib._encode_clips(torch.zeros(args.batch_size, frames, 3, size, size))
        device = str(lib.device) if lib.device.type == "cpu" else torch.cuda.get_device_name(lib.device)
        from vtr.threads import plan_threads

        plan = plan_threads(lib.device.type, args.workers)
        decode, e2e, cpu_decode, cpu_e2e = [], [], [], []
        load_before = os.getloadavg()
        for r in range(args.repeats):  # alternate the two measurements: decode speed drifts on a shared host
            # decode-only: the loader `vtr index` uses (workers, videos per item), with nothing after it
            items = ClipDataset([ClipRequest(p) for p in paths], frames, size, probe=True, hash_content=True,
                                dtype=torch.float16)
            loader = clip_loader(items, plan.workers, pin_memory=False, videos_per_item=max(1, min(8, args.batch_size)))
            t0, c0 = time.perf_counter(), time.process_time()
            n = sum(1 for group in loader for item in group["items"] if "error" not in item)
            decode.append(n / (time.perf_counter() - t0))
            cpu_decode.append((time.process_time() - c0) / n)  # main-process CPU s/video (all of it with 0 workers)
            lib.home = tmp / f"home{r}"  # a fresh catalog each round: everything is new to the index
            c0 = time.process_time()
            report = lib.index([folder], workers=args.workers, batch_size=args.batch_size, progress=False)
            e2e.append(report.indexed / report.wall_s)
            cpu_e2e.append((time.process_time() - c0) / max(report.indexed, 1))
            print(f"round {r}: decode-only {decode[-1]:.1f} videos/s, end to end {e2e[-1]:.1f}", flush=True)
    med_d, med_e = statistics.median(decode), statistics.median(e2e)
    result = {
        "videos": len(paths), "decoded": n, "model": model.cfg.name, "frames": frames, "resolution": size,
        "workers": plan.workers, "torch_threads": plan.torch_threads,
        "batch_size": args.batch_size, "device": device, "repeats": args.repeats,
        "decode_only_videos_per_s": round(med_d, 2), "end_to_end_videos_per_s": round(med_e, 2),
        "end_to_end_over_decode": round(med_e / med_d, 3),
        "main_process_cpu_s_per_video": {"decode_only": round(statistics.median(cpu_decode), 4),
                                         "end_to_end": round(statistics.median(cpu_e2e), 4)},
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": [{"decode_only": round(d, 2), "end_to_end": round(e, 2)} for d, e in zip(decode, e2e, strict=True)],
    }
    print(result)
    tag = args.tag or f"index_speed_{'gpu' if device != 'cpu' else 'cpu'}"
    write_result(args.out, tag, {"settings": vars(args), "results": result})


if __name__ == "__main__":
    main()
