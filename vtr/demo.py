"""`make demo` / `vtr demo`: the main job end to end on a synthetic vtr-shapes library.

1. synthesise a vtr-shapes world (real H.264 clips + captions),
2. use the demo model from the data home, or train it (``shapes_tiny``, a few minutes on 2 CPU cores),
3. ``vtr index`` the test clips, 4. ``vtr search`` with held-out captions and check the top hits,
5. ``vtr eval custom`` on the test split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vtr.home import data_home

DEMO_MODEL = "vtr-shapes-tiny"


def run_demo(out_dir: str | Path, videos: int = 1000, seed: int = 0, home: str | Path | None = None,
             console: Console | None = None, retrain: bool = False, queries: int = 8) -> dict[str, Any]:
    """Run the demo; returns a summary dict (also written to ``out_dir/demo_summary.json``)."""
    from vtr.data.synth import generate_world
    from vtr.model.registry import installed_models

    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    home_dir = data_home(home)
    summary: dict[str, Any] = {"data_home": str(home_dir)}
    console.rule("[bold]vtr demo")

    t0 = time.perf_counter()
    world_dir = out_dir / "world"
    if (world_dir / "world.json").is_file():
        info = json.loads((world_dir / "world.json").read_text())
        console.print(f"1. using the vtr-shapes world in {world_dir} ({info.get('num_videos')} clips)")
    else:
        world = generate_world(world_dir, num_videos=videos, seed=seed)
        info = world.to_dict()
        console.print(f"1. synthesised {info['num_videos']} clips ({info['num_train']} train, {info['num_test']} "
                      f"test, {info['num_temporal_groups']} temporal hard-negative groups) in "
                      f"{time.perf_counter() - t0:.0f} s -> {world_dir}")
    summary["world"] = {k: info.get(k) for k in ("num_videos", "num_train", "num_test", "num_temporal_groups")}

    if DEMO_MODEL in installed_models(home) and not retrain:
        console.print(f"2. using the trained model {DEMO_MODEL!r} from {home_dir}")
        summary["training"] = "reused"
    else:
        from vtr.training.run import train

        console.print("2. training shapes_tiny on the train split (CPU: a few minutes) ...")
        result = train("shapes_tiny", [f"data.world={world_dir}"], name=DEMO_MODEL, home=home)
        summary["training"] = {k: result.get(k) for k in ("wall_s", "samples_per_s", "metrics", "model_dir")}
        console.print(f"   trained in {result.get('wall_s', 0):.0f} s; held-out {result.get('metrics')}")

    from vtr.library import Library

    test = json.loads((world_dir / "test.json").read_text())
    test_dir = out_dir / "library"
    test_dir.mkdir(parents=True, exist_ok=True)
    for entry in test:  # the library to search: the test clips (links, no copies)
        link = test_dir / entry["video"]
        if not link.exists():
            link.symlink_to((world_dir / "videos" / entry["video"]).resolve())
    lib = Library(home=home, index="demo", model=DEMO_MODEL)
    report = lib.index([test_dir], progress=True)
    console.print(f"3. indexed {report.indexed} clips ({report.unchanged} unchanged) at {report.videos_per_s} "
                  f"videos/s")
    summary["index"] = report.to_dict()

    picks = [e for e in test if e.get("temporal_role") in (None, "original")][:queries]
    results = lib.search([e["caption"] for e in picks], k=5)
    table = Table(title="4. vtr search (held-out captions; expected clip marked)")
    for col in ("query", "top hit", "score", "expected rank"):
        table.add_column(col)
    hits_at_1 = hits_at_5 = 0
    for entry, hits in zip(picks, results, strict=True):
        names = [Path(h.path).name for h in hits]
        rank = names.index(entry["video"]) + 1 if entry["video"] in names else None
        hits_at_1 += rank == 1
        hits_at_5 += rank is not None
        table.add_row(entry["caption"], names[0] if names else "-", f"{hits[0].score:.3f}" if hits else "-",
                      str(rank) if rank else ">5")
    console.print(table)
    console.print(f"   expected clip first for {hits_at_1}/{len(picks)} queries, in the top 5 for {hits_at_5}/"
                  f"{len(picks)} (chance: {1 / max(len(test), 1):.1%} per query for the top hit)")
    summary["search"] = {"queries": len(picks), "top1": hits_at_1, "top5": hits_at_5}

    from vtr.evaluation.datasets import discover
    from vtr.evaluation.evaluator import EvalSettings, RetrievalEvaluator

    ds = discover("custom", annotation=world_dir / "test.json", video_root=world_dir / "videos")
    ev = RetrievalEvaluator(ds, EvalSettings(rerank_k=16, workers=2, cache_dir=str(home_dir / "cache" / "eval")))
    metrics = ev(lib.model, model_name=DEMO_MODEL)
    console.print(f"5. vtr eval custom ({ds.num_texts} captions x {ds.num_videos} clips): "
                  f"dual T2V R@1/5/10 = {metrics['dual']['t2v_r1']}/{metrics['dual']['t2v_r5']}/"
                  f"{metrics['dual']['t2v_r10']}, re-ranked = {metrics['rerank']['t2v_r1']}/"
                  f"{metrics['rerank']['t2v_r5']}/{metrics['rerank']['t2v_r10']}")
    summary["eval"] = {"dual": metrics["dual"], "rerank": metrics["rerank"]}
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    console.print(f"done in {summary['wall_s']} s; summary in {out_dir / 'demo_summary.json'}")
    return summary
