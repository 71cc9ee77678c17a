"""Time and peak memory of `vtr models import` on a full-size checkpoint in the official layout (random bf16).

    python benchmarks/import_checkpoint.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_checkpoint(path: Path) -> None:
    import torch
    from test_retrieval_model import to_official_layout

    from vtr.model.retrieval import build_model, config_for

    torch.manual_seed(0)
    model = build_model(config_for("videomamba_m16_umt"), text_pretrained=False)
    torch.save({"model": to_official_layout(model)}, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--child", nargs=2, metavar=("FILE", "HOME"))
    args = ap.parse_args()
    if args.child:  # measured in a fresh process so peak RSS is the import's own
        from vtr.model.registry import import_official_checkpoint

        t0 = time.perf_counter()
        info = import_official_checkpoint(args.child[0], home=args.child[1])
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{wall} {peak} {info['parameters']}")
        return
    from common import write_result

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "videomamba_m16_25M_f8_res224.pth"
        make_checkpoint(ckpt)
        size_mb = ckpt.stat().st_size / 1e6
        out = subprocess.run([sys.executable, __file__, "--child", str(ckpt), str(Path(tmp) / "home")],
                             capture_output=True, text=True, check=True)
        wall, peak, params = out.stdout.split()
    result = {"checkpoint_mb": round(size_mb, 1), "import_wall_s": round(float(wall), 2),
              "peak_rss_gib": round(float(peak), 2), "parameters": int(params)}
    print(result)
    write_result(args.out, "import_checkpoint_cpu", {"results": result})


if __name__ == "__main__":
    main()
