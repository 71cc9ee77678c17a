"""`make demo` / `vtr demo`: the main job end to end on a synthetic vtr-shapes library, in minutes on a CPU.

1. synthesise the demo's vtr-shapes world (real H.264 clips + captions; single events, no distractor shapes,
   every test clip with a temporal hard-negative partner: the same frames reversed),
2. use the demo model from the data home, or train it (the ``demo_cpu`` config, a few minutes on 2 CPU cores),
3. ``vtr index`` the test clips into the default index (so ``vtr search "..."`` works next),
4. ``vtr search`` with the first 8 held-out captions (fixed by the seed, not picked) and check the top hits,
5. ``vtr eval custom`` on the whole test split (embedding search; the demo model's ITM head is not trained),
6. a final screen: what was shown and the exact commands to run next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vtr.home import data_home

DEMO_MODEL = "vtr-demo"
DEMO_CONFIG = "demo_cpu"
DEMO_VIDEOS = 600
# The demo world: what a few CPU-minutes can learn (vtr.data.synth.generate_world options).
DEMO_WORLD = {"two_event_fraction": 0.0, "distractor_fraction": 0.0, "plain_captions": True}
_NOISY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's tips, accelerator lines, model summary and its own deprecation chatter for the demo's
    screen (warnings from vtr still show)."""
    from vtr.compat import ensure_torchvision

    ensure_torchvision()
    import lightning.pytorch  # noqa: F401  (importing it sets its loggers to INFO: import first, then quiet them)

    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec).*")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1f}"


def _serve_exists() -> bool:
    """True when this vtr has a `vtr serve` command (the final screen mentions it only then)."""
    try:
        from typer.main import get_command

        from vtr.cli.app import app

        return "serve" in get_command(app).commands  # type: ignore[attr-defined]
    except Exception:
        return False


def _pick_index(home: str | Path | None, model_sha: str | None) -> tuple[str, bool]:
    """(index name, reindex): the default index unless it holds another model's vectors (then ``demo``)."""
    from vtr.library import list_libraries

    existing = {s["name"]: s for s in list_libraries(home)}
    for name in ("default", "demo"):
        status = existing.get(name)
        if status is None:
            return name, False
        if status["model_name"] == DEMO_MODEL:
            return name, status.get("weights_sha256") != model_sha  # retrained: re-embed with the new weights
    return "demo", True


def run_demo(out_dir: str | Path, videos: int = DEMO_VIDEOS, seed: int = 0, home: str | Path | None = None,
             console: Console | None = None, retrain: bool = False, queries: int = 8,
             overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the demo; returns a summary dict (also written to ``out_dir/demo_summary.json``).

    ``overrides``: extra ``key=value`` settings of the training config (tests use them to shorten training)."""
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
        world = generate_world(world_dir, num_videos=videos, seed=seed, **DEMO_WORLD)
        info = world.to_dict()
        console.print(f"1. synthesised {info['num_videos']} clips ({info['num_train']} train, {info['num_test']} "
                      f"test: {info['num_temporal_groups']} clips + their reversed partners) in "
                      f"{time.perf_counter() - t0:.0f} s -> {world_dir}")
    summary["world"] = {k: info.get(k) for k in ("num_videos", "num_train", "num_test", "num_temporal_groups")}

    if DEMO_MODEL in installed_models(home) and not retrain:
        console.print(f"2. using the trained model {DEMO_MODEL!r} from {home_dir} (--retrain trains it again)")
        summary["training"] = "reused"
    else:
        from vtr.training.run import train

        console.print(f"2. training {DEMO_MODEL!r} ({DEMO_CONFIG} config) on the train split: a few CPU-minutes ...")
        with quiet_lightning():
            result = train(DEMO_CONFIG, [f"data.world={world_dir}", *overrides], name=DEMO_MODEL, home=home,
                           trainer_kwargs={"enable_model_summary": False})
        summary["training"] = {k: result.get(k) for k in ("wall_s", "samples_per_s", "global_step", "model_dir")}
        m = result.get("metrics") or {}
        console.print(f"   trained in {result.get('wall_s', 0):.0f} s ({result.get('global_step')} steps); held-out "
                      f"text->video R@1 {_pct(m.get('t2v_r1'))}% (chance {_pct(m.get('t2v_chance_r1'))}%)")

    from vtr.library import Library
    from vtr.model.registry import read_meta, resolve_model_path

    test = json.loads((world_dir / "test.json").read_text())
    test_dir = out_dir / "library"
    test_dir.mkdir(parents=True, exist_ok=True)
    for entry in test:  # the library to search: the test clips (links, no copies)
        link = test_dir / entry["video"]
        if not link.exists():
            link.symlink_to((world_dir / "videos" / entry["video"]).resolve())
    model_path = resolve_model_path(DEMO_MODEL, home)
    index_name, reindex = _pick_index(home, read_meta(model_path).get("weights_sha256") if model_path else None)
    lib = Library(home=home, index=index_name, model=DEMO_MODEL)
    report = lib.index([test_dir], progress=True, reindex=reindex)
    console.print(f"3. indexed {report.indexed} clips ({report.unchanged} unchanged) into the index "
                  f"{index_name!r} at {report.videos_per_s} videos/s")
    summary["index"] = {"name": index_name, **report.to_dict()}

    picks = [e for e in test if e.get("temporal_role") in (None, "original")][:queries]
    results = lib.search([e["caption"] for e in picks], k=5)
    table = Table(title="4. vtr search: the first held-out captions; is the clip they describe the top hit?")
    for col in ("query", "top hit", "score", "expected clip's rank"):
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
    console.print(f"   the expected clip is first for {hits_at_1}/{len(picks)} queries and in the top 5 for "
                  f"{hits_at_5}/{len(picks)} ({len(test)} clips; a random ranking puts it first "
                  f"{1 / max(len(test), 1):.1%} of the time)")
    summary["search"] = {"queries": len(picks), "top1": hits_at_1, "top5": hits_at_5}

    from vtr.evaluation.datasets import discover
    from vtr.evaluation.evaluator import EvalSettings, RetrievalEvaluator

    ds = discover("custom", annotation=world_dir / "test.json", video_root=world_dir / "videos")
    ev = RetrievalEvaluator(ds, EvalSettings(rerank_k=0, workers=0, progress=False,
                                             cache_dir=str(home_dir / "cache" / "eval")))
    dual = ev(lib.model, model_name=DEMO_MODEL)["dual"]
    table = Table(title=f"5. vtr eval custom: all {ds.num_texts} held-out captions x {ds.num_videos} clips "
                        "(recall in %)")
    for col in ("direction", "R@1", "R@5", "R@10", "median rank"):
        table.add_column(col, justify="right")
    table.add_row("text -> video", _pct(dual.get("t2v_r1")), _pct(dual.get("t2v_r5")), _pct(dual.get("t2v_r10")),
                  str(dual.get("t2v_mdr", "-")))
    table.add_row("video -> text", _pct(dual.get("v2t_r1")), _pct(dual.get("v2t_r5")), _pct(dual.get("v2t_r10")),
                  str(dual.get("v2t_mdr", "-")))
    console.print(table)
    summary["eval"] = {"dual": dual}
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["summary_path"] = str(out_dir / "demo_summary.json")
    summary["next"] = next_commands(picks[0]["caption"] if picks else "a red circle moves left", index_name, home)
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _final_screen(console, summary, len(test))
    return summary


def next_commands(query: str, index_name: str, home: str | Path | None) -> dict[str, str]:
    """The exact commands the final screen prints (the search one is run as printed by the tests)."""
    extra = (["--index", index_name] if index_name != "default" else []) + (["--home", str(home)] if home else [])
    cmds = {"search": shlex.join(["vtr", "search", query, *extra]),
            "import": "vtr models import PATH/TO/official_checkpoint.pth --name videomamba-m16"}
    if _serve_exists():
        cmds["serve"] = shlex.join(["vtr", "serve", *extra])
    return cmds


def _final_screen(console: Console, summary: dict[str, Any], num_test: int) -> None:
    s, dual = summary["search"], summary["eval"]["dual"]
    console.rule("[bold]what the demo showed")
    console.print(f"- vtr trained a small VideoMamba + MiniLM model on {summary['world']['num_train']} synthetic "
                  f"clips, indexed {num_test} held-out clips it never saw, and searched them with plain-English "
                  "captions.")
    console.print(f"- The described clip came first for {s['top1']} of {s['queries']} searches; over all held-out "
                  f"captions, text->video R@1 is {_pct(dual.get('t2v_r1'))}% (random: {100 / max(num_test, 1):.1f}%).")
    pairs = summary["world"].get("num_temporal_groups") or 0
    if pairs:
        console.print(f"- {2 * pairs} of the {num_test} clips come in pairs, one the other played backwards (moves "
                      "left / moves right, grows / shrinks): telling them apart takes the order of the frames, which "
                      "a bag-of-frames model cannot see.")
    console.print(f"- Wall time {summary['wall_s']:.0f} s; summary in {summary['summary_path']}. The demo model "
                  "knows only this synthetic world: for real videos use the official weights.")
    console.rule("[bold]next")
    nxt = summary["next"]
    console.print("Search the demo index yourself:")
    console.print(f"  {nxt['search']}", markup=False, highlight=False, soft_wrap=True)
    console.print("Use the official VideoMamba-M weights (from OpenGVLab's release) on your own videos:")
    console.print(f"  {nxt['import']}", markup=False, highlight=False, soft_wrap=True)
    console.print("  vtr index ~/Videos --model videomamba-m16 --index mine", markup=False, highlight=False,
                  soft_wrap=True)
    if "serve" in nxt:
        console.print("Serve search over HTTP:")
        console.print(f"  {nxt['serve']}", markup=False, highlight=False, soft_wrap=True)
    console.print("The last search, as a command to copy:")
    console.print(nxt["search"], markup=False, highlight=False, soft_wrap=True)
