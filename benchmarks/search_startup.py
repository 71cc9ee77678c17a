"""Wall time of one `vtr search` process (start-up included) on a tiny index, with a phase breakdown.

    python benchmarks/search_startup.py --workdir /tmp/vtr-startup [--arch videomamba_t16_minilm] --tag before

The work dir keeps a random-weights model of ``--arch`` and a 3-video index between runs, so runs before and
after a change measure the same thing. Each repeat is a fresh `python -m vtr.cli.app search ... --json` process
(median of ``--repeats``) after one first search (``first_search_s``: page cache cold, and the text tower
cache of :mod:`vtr.model.text_tower` written then); ``vtr --version`` is the floor (interpreter + CLI start).
The phases come from one fresh process: import of the CLI, of the library, the first search (store open,
model or cached text tower load, text encoding), and a second search in the same process. The CPU is
shared: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
import vtr.cli.app  # noqa: F401
t1 = time.perf_counter()
from vtr.library import Library
t2 = time.perf_counter()
lib = Library(home=sys.argv[1], device="cpu")
lib.search("a red circle moves left", k=3)
t3 = time.perf_counter()
lib.search("a blue square grows", k=3)
t4 = time.perf_counter()
heavy = sorted(m for m in ("torch", "transformers", "torchvision", "av", "decord", "faiss", "sqlalchemy", "lightning")
               if m in sys.modules)
print(json.dumps({"import_cli_s": t1 - t0, "import_library_s": t2 - t1, "first_search_s": t3 - t2,
                  "second_search_s": t4 - t3, "modules_loaded": heavy}))
"""


def prepare(workdir: Path, arch: str) -> Path:
    """A home with a random ``arch`` model as the default and a 3-video index (made once)."""
    home = workdir / "home"
    if (home / "ready").exists():
        return home
    import numpy as np
    import torch

    from vtr.data.video_writer import write_video
    from vtr.library import Library
    from vtr.model.registry import register_model, save_model_dir
    from vtr.model.retrieval import build_model, config_for

    torch.manual_seed(0)
    model = build_model(config_for(arch), text_pretrained=False)
    model_dir = save_model_dir(model, workdir / "model")
    register_model("bench", model_dir, home, make_default=True)
    videos = workdir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        write_video(videos / f"v{i}.mp4", rng.integers(0, 255, (16, 64, 64, 3), dtype=np.uint8))
    Library(home=home, device="cpu").index([videos], workers=0, progress=False)
    (home / "ready").write_text("")
    return home


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--arch", default="videomamba_t16_minilm")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    workdir = Path(args.workdir) / args.arch
    home = prepare(workdir, args.arch)
    env = {**os.environ, "VTR_HOME": str(home)}
    py = [sys.executable, "-m", "vtr.cli.app"]
    load_before = os.getloadavg()
    first = wall(py + ["search", "warm the page cache", "--json"], env)  # also writes the text tower cache
    floor = [wall(py + ["--version"], env) for _ in range(args.repeats)]
    search = [wall(py + ["search", "a red circle moves left", "-k", "3", "--json"], env) for _ in range(args.repeats)]
    phases = json.loads(subprocess.run([sys.executable, "-c", PHASES, str(home)], check=True, capture_output=True,
                                       text=True, env=env).stdout)
    payload = {
        "what": "wall time of `vtr search QUERY --json` (a fresh process) on a 3-video index, CPU",
        "tag": args.tag, "arch": args.arch, "repeats": args.repeats,
        "first_search_s": first,
        "search_s": {"median": statistics.median(search), "min": min(search), "all": search},
        "version_floor_s": {"median": statistics.median(floor), "min": min(floor)},
        "phases": phases,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "note": "2 CPU cores shared with other agents: compare runs by their medians and load averages",
    }
    path = write_result(args.out, f"search_startup_{args.arch}_{args.tag}", payload)
    print(json.dumps({k: payload[k] for k in ("first_search_s", "search_s", "version_floor_s", "phases")}, indent=1))
    print(path)


if __name__ == "__main__":
    main()
