"""`make demo` / `vtr demo`: the main job end to end on a synthetic vtr-shapes library."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from vtr.home import data_home


def run_demo(out_dir: str | Path, videos: int = 120, seed: int = 0, home: str | Path | None = None,
             console: Console | None = None) -> dict:
    """Synthesise a small world (later stages: train or load a model, index, search, evaluate)."""
    from vtr.data.synth import generate_world

    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    home_dir = data_home(home)
    console.rule("[bold]vtr demo")
    console.print(f"data home: {home_dir}")
    t0 = time.perf_counter()
    summary = generate_world(out_dir / "world", num_videos=videos, seed=seed)
    info = summary.to_dict()
    console.print(f"[green]synthesised[/green] vtr-shapes world in {time.perf_counter() - t0:.1f}s: "
                  f"{info}")
    return {"world": info}
