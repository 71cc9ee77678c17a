"""The `vtr` command line: parse options, call the vtr library, print results (rich on a TTY, --json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

import vtr
from vtr.errors import VtrError

app = typer.Typer(
    name="vtr",
    help="Video-text retrieval: index your videos, search them with language, evaluate and train models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Data home (models, indexes, catalogs). Default: $VTR_HOME or the user data dir."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def emit_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout (nothing else goes to stdout with --json)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"vtr {vtr.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """vtr: VideoMamba + BERT video-text retrieval."""


@app.command()
def doctor(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Print the environment: torch/CUDA, scan backends, decoders, faiss flavour, data home, models."""
    from vtr.doctor import collect_environment

    report = collect_environment(str(home) if home else None)
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    table = Table(title=f"vtr {report['vtr']} environment", show_header=False)
    for key, value in report.items():
        if key == "vtr":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key, str(value))
    out.print(table)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write videos/ and the annotation JSON into.")],
    videos: Annotated[int, typer.Option("--videos", "-n", min=2, help="Number of base clips.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed (the world is deterministic for a seed).")] = 0,
    test_fraction: Annotated[float, typer.Option(min=0.05, max=0.9, help="Share of clips in the test split.")] = 0.2,
    as_json: JsonOption = False,
) -> None:
    """Write the synthetic vtr-shapes world: H.264 clips of moving shapes with captions, train/test splits."""
    from tqdm import tqdm

    from vtr.data.synth import generate_world

    with tqdm(total=videos, desc="synth", unit="clip", file=sys.stderr, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        summary = generate_world(out_dir, num_videos=videos, seed=seed, test_fraction=test_fraction,
                                 progress=progress)
    info = summary.to_dict()
    if as_json:
        emit_json(info)
    else:
        for key, value in info.items():
            out.print(f"[bold]{key}[/bold]: {value}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Working folder for the demo.")] = Path("demo_out"),
    videos: Annotated[int, typer.Option("--videos", "-n", min=10, help="Clips in the demo world.")] = 1000,
    seed: int = 0,
    retrain: Annotated[bool, typer.Option(help="Train the demo model again even if one exists.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Synthesise a video library, train (or reuse) a small model, index it, search it, evaluate it."""
    from vtr.demo import run_demo

    summary = run_demo(out_dir, videos=videos, seed=seed, home=home, console=err, retrain=retrain)
    if as_json:
        emit_json(summary)


@app.command("eval")
def eval_cmd(
    dataset: Annotated[str, typer.Argument(help="msrvtt | didemo | anet | lsmdc | msvd | custom")],
    data_root: Annotated[Path | None, typer.Option(help="Folder with the annotation file(s) and videos.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name, model directory, or installed model.")] = None,
    split: Annotated[str, typer.Option(help="test or val (DiDeMo).")] = "test",
    annotation: Annotated[Path | None, typer.Option(help="Annotation file (JSON list or MSRVTT CSV).")] = None,
    video_root: Annotated[Path | None, typer.Option(help="Folder the annotation's video paths start from.")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per video (default: the protocol's, 8).")] = None,
    rerank_k: Annotated[int, typer.Option(help="ITM re-rank the top k (0: dual encoder only).")] = 128,
    batch_size: Annotated[int, typer.Option(help="Videos per encoder batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 on CUDA, as the official eval) | bf16 | fp32")] = "auto",
    workers: Annotated[int, typer.Option(help="Video decode workers.")] = 2,
    max_txt_l: Annotated[int | None, typer.Option(help="Override the protocol's max text length.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Only sample the first S seconds (0: no trim).")] = None,
    paragraph: Annotated[bool | None, typer.Option("--paragraph/--no-paragraph", help="Join caption lists.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail when annotated videos are missing.")] = False,
    dual_softmax: Annotated[bool, typer.Option(help="Dual-softmax re-weighting (not the official protocol).")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Cache video features in the data home.")] = True,
    output: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file.")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Zero-shot text-video retrieval with the official protocol; reports dual-encoder and re-ranked metrics."""
    from vtr.evaluation.datasets import discover
    from vtr.evaluation.evaluator import EvalSettings, RetrievalEvaluator
    from vtr.home import data_home
    from vtr.model.registry import create_model

    ds = discover(dataset, data_root, split=split, annotation=annotation, video_root=video_root, strict=strict,
                  paragraph=paragraph, max_txt_l=max_txt_l, max_seconds=max_seconds, num_frames=frames)
    if ds.missing_videos:
        err.print(f"[yellow]warning:[/yellow] {ds.num_missing} of {ds.num_annotated_videos} annotated videos are "
                  f"missing under {ds.video_root} (left out with {ds.num_dropped_texts} texts; --strict to fail)")
    net = create_model(model, home=home)
    settings = EvalSettings(frames=frames, rerank_k=rerank_k, video_batch_size=batch_size, device=device,
                            precision=precision, workers=workers, dual_softmax=dual_softmax,
                            cache_dir=str(data_home(home) / "cache" / "eval") if cache else None)
    report = RetrievalEvaluator(ds, settings)(net, model_name=str(model) if model else None)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, default=str))
    if as_json:
        emit_json(report)
    else:
        print_eval_report(report)


def print_eval_report(report: dict) -> None:
    """The metrics table plus the protocol lines that make the numbers reproducible."""
    from rich.table import Table

    table = Table(title=f"{report['dataset']} {report['split']}: {report['num_texts_evaluated']} texts x "
                        f"{report['num_videos_evaluated']} videos")
    cols = ["t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "t2v_mnr", "v2t_r1", "v2t_r5", "v2t_r10", "r_mean"]
    table.add_column("scores")
    for col in cols:
        direction, metric = col.split("_", 1)
        label = {"r1": "R@1", "r5": "R@5", "r10": "R@10", "mdr": "MdR", "mnr": "MnR", "mean": "mean"}[
            metric.removeprefix("r_") if metric == "r_mean" else metric]
        table.add_column(label if col == "r_mean" else f"{direction.upper()} {label}", justify="right")
    for name in ("dual", "rerank"):
        if name in report:
            table.add_row(name, *(f"{report[name][c]:.2f}" for c in cols))
    out.print(table)
    proto = report["protocol"]
    out.print(f"model {report['model']['name']} (sha256 {str(report['model']['weights_sha256'])[:12]}), "
              f"{report['precision']} on {report['device']}, {report['wall_time_s']} s")
    out.print(f"{proto['num_frames']} frames ({proto['sampling']}), {proto['resolution']}px, max_txt_l "
              f"{proto['max_txt_l']}, trim {proto['max_seconds']}, paragraph {proto['paragraph']}, rerank k "
              f"{proto['rerank_k']}, dual-softmax {proto['dual_softmax']}")
    out.print(f"annotation {report['annotation']} (sha256 {report['annotation_sha256'][:12]}); missing videos "
              f"{report['num_missing_videos']}, undecodable {report['num_undecodable_videos']}")


@app.command(context_settings={"allow_extra_args": False})
def train(
    config: Annotated[str, typer.Argument(
        help="Shipped config name (shapes_tiny, stage2_masked, stage1_masked, ...) or YAML path.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Dotted overrides, e.g. model.img_size=96 optim.lr=1e-4 data.world=DIR.")] = None,
    resume: Annotated[str | None, typer.Option(help="Checkpoint to resume from, or 'last' (the run's last.ckpt).")
                      ] = None,
    name: Annotated[str | None, typer.Option(help="Run and model name (default: the config's name).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory (default: <home>/runs/<name>).")
                       ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a retrieval model with Lightning; export it to the data home as NAME (progress on stderr)."""
    from vtr.training.run import train as run_training

    summary = run_training(config, overrides or [], resume=resume, name=name, home=home, out=out_dir)
    output = summary.get("model_dir") or summary.get("vision_checkpoint")  # vision_checkpoint: stage-1 runs
    if summary.get("world_size", 1) > 1 and output is None:
        return  # non-zero ranks of a multi-process run print nothing
    if as_json:
        emit_json(summary)
        return
    metrics = summary.get("metrics") or {}
    shown = {k: round(v, 2) for k, v in metrics.items() if k in ("t2v_r1", "t2v_r5", "t2v_r10", "temporal_r1",
                                                                   "temporal_chance")}
    out.print(f"[green]trained[/green] {summary['name']}: {summary['global_step']} steps in {summary['wall_s']:.0f}s"
              f" ({summary['samples_per_s'] or 0:.1f} samples/s)")
    if shown:
        out.print("validation: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    what = "model" if summary.get("model_dir") else "vision checkpoint"
    out.print(f"{what}: {output}\nrun: {summary['run_dir']}")


ModelOption = Annotated[str | None, typer.Option(
    "--model", help="Model name, model directory or installed model (default: the index's, else the default).")]
IndexOption = Annotated[str, typer.Option("--index", help="Index name (several can live in one data home).")]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda")]
DbOption = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the catalog (default: SQLite in home).")]

INDEX_ACTIONS = ("status", "list", "remove")


@app.command("index")
def index_cmd(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Video files or folders (walked recursively); or one of: status, list, remove.")] = None,
    model: ModelOption = None,
    index: IndexOption = "default",
    segment: Annotated[float | None, typer.Option(help="Cut videos longer than this (s) into windows.")] = None,
    stride: Annotated[float | None, typer.Option(help="Window stride in seconds (default: --segment).")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per clip (default: the model's).")] = None,
    workers: Annotated[int, typer.Option(help="Decode worker processes.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Clips per encoder batch.")] = 16,
    device: DeviceOption = "auto",
    factory: Annotated[str | None, typer.Option(help="FAISS index_factory string for a new index (Flat); for large "
                                                "libraries e.g. IVF1024,PQ64x4fs,RFlat.")] = None,
    prune: Annotated[bool, typer.Option(help="Remove vectors of files that no longer exist.")] = False,
    reindex: Annotated[bool, typer.Option(help="Drop the index's vectors and re-embed (model change).")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Try files that failed before again.")] = False,
    db: DbOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index videos (`vtr index PATH...`), or manage indexes: `vtr index status|list|remove [--index NAME]`.

    Incremental (unchanged files are skipped) and crash-safe (re-run to resume); bad files are recorded with
    their reason and skipped.
    """
    from vtr.errors import ConfigError

    if not paths:
        raise ConfigError("nothing to index: give video files or folders (or: vtr index status|list|remove)")
    action = str(paths[0])
    if action in INDEX_ACTIONS and not paths[0].exists():
        if len(paths) > 1:
            raise ConfigError(f"`vtr index {action}` takes no paths (use --index NAME)")
        return _index_action(action, index, db, home, as_json)
    from vtr.pipeline import Library

    lib = Library(home=home, index=index, model=model, device=device, db_url=db, factory=factory)
    report = lib.index(paths, segment=segment, stride=stride, frames=frames, workers=workers,
                       batch_size=batch_size, prune=prune, reindex=reindex, retry_failed=retry_failed)
    if as_json:
        emit_json(report.to_dict())
        return
    out.print(f"indexed {report.indexed} videos ({report.segments} segments) in {report.wall_s} s "
              f"({report.videos_per_s} videos/s); unchanged {report.unchanged}, failed {len(report.failed)}, "
              f"pruned {report.pruned}")
    for f in report.failed[:20]:
        err.print(f"[yellow]skipped[/yellow] {f['path']}: {f['reason']}")


def _index_action(action: str, index: str, db: str | None, home: Path | None, as_json: bool) -> None:
    from vtr.errors import ConfigError
    from vtr.pipeline import Library, list_libraries, remove_library

    if action == "list":
        libs = list_libraries(home, db_url=db)
        if as_json:
            emit_json(libs)
        for lib in [] if as_json else libs:
            out.print(f"{lib['name']}: {lib['vector_count']} vectors, model {lib['model_name']}, {lib['factory']}")
        if not libs and not as_json:
            out.print("no indexes (vtr index PATH...)")
    elif action == "remove":
        if not remove_library(home, index, db_url=db):
            raise ConfigError(f"no index named {index!r} (vtr index list)")
        if as_json:
            emit_json({"removed": index})
        else:
            out.print(f"removed index {index}")
    else:
        status = Library(home=home, index=index, db_url=db).status()
        if as_json:
            emit_json(status)
            return
        for key, value in status.items():
            if key == "failures":
                out.print(f"[bold]failures[/bold]: {len(value)}")
                for path, reason in value[:20]:
                    out.print(f"  {path}: {reason}")
            else:
                out.print(f"[bold]{key}[/bold]: {value}")


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="What to look for, in words.")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    index: IndexOption = "default",
    model: ModelOption = None,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="Re-score with the ITM head.")] = False,
    video: Annotated[Path | None, typer.Option(help="Find videos like this one instead.")] = None,
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF indexes: lists searched per query (default "
                                               "nlist/16, at least 16); more is slower and finds more.")] = None,
    from_file: Annotated[Path | None, typer.Option(help="Run every query of this file (one per line).")] = None,
    device: DeviceOption = "auto",
    db: DbOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search an index: `vtr search "person chopping onions"`."""
    from vtr.errors import ConfigError
    from vtr.pipeline import Library, read_queries

    if sum(x is not None for x in (query, video, from_file)) != 1:
        raise ConfigError("give exactly one of: a QUERY, --video FILE or --from-file FILE")
    lib = Library(home=home, index=index, model=model, device=device, db_url=db, nprobe=nprobe)
    if video is not None:
        queries, results = [str(video)], [lib.search_video(video, k)]
    else:
        queries = read_queries(from_file) if from_file else [query]
        results = lib.search(queries, k=k, rerank=rerank)
    if as_json:
        rows = [{"query": q, "results": [h.to_dict() for h in hits]} for q, hits in zip(queries, results, strict=True)]
        emit_json(rows[0]["results"] if len(rows) == 1 else rows)
        return
    from rich.table import Table

    for q, hits in zip(queries, results, strict=True):
        table = Table(title=q)
        for col in ("rank", "score", "path", "start-end"):
            table.add_column(col)
        for h in hits:
            table.add_row(str(h.rank), f"{h.score:.4f}", h.path, f"{h.start_s:.1f}-{h.end_s:.1f}s")
        out.print(table)


models_app = typer.Typer(help="Import, list and choose retrieval models (official checkpoints, trained models).",
                          no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("import")
def models_import(
    file: Annotated[Path, typer.Argument(help="Official checkpoint, e.g. videomamba_m16_25M_f8_res224.pth")],
    name: Annotated[str | None, typer.Option(help="Name to register it under (default: the file stem).")] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default model.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate an official VideoMamba multimodal checkpoint and convert it into a vtr model directory."""
    from vtr.model.registry import import_official_checkpoint

    with err.status(f"importing {file} ..."):
        info = import_official_checkpoint(file, name=name, home=home, make_default=True if default else None)
    if as_json:
        emit_json(info)
    else:
        sha = info["source_sha256"][:12]
        out.print(f"[green]imported[/green] {info['name']} -> {info['path']} "
                  f"({info['parameters']:,} parameters, {info['num_frames']} frames, sha256 {sha})")


@models_app.command("list")
def models_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Installed models (data home) and the registered architectures."""
    from vtr.model.registry import default_model, installed_models
    from vtr.model.retrieval import list_models

    installed, dflt = installed_models(home), default_model(home)
    if as_json:
        emit_json({"installed": installed, "default": dflt, "architectures": list_models()})
        return
    for name, path in sorted(installed.items()):
        out.print(f"{'*' if name == dflt else ' '} {name}  {path}")
    if not installed:
        out.print("no installed models (vtr models import FILE, or vtr train ...)")
    out.print(f"architectures: {', '.join(list_models())}")


@models_app.command("info")
def models_info(name: Annotated[str, typer.Argument(help="Installed model name or model directory.")],
                home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Config and provenance of an installed model."""
    import json as _json

    from vtr.errors import ConfigError
    from vtr.model.registry import CONFIG_FILE, read_meta, resolve_model_path

    path = resolve_model_path(name, home)
    if path is None:
        raise ConfigError(f"no installed model or model directory named {name!r} (see `vtr models list`)")
    info = {"name": name, "path": str(path), "config": _json.loads((path / CONFIG_FILE).read_text()),
            "meta": read_meta(path)}
    if as_json:
        emit_json(info)
    else:
        for key, value in info.items():
            out.print(f"[bold]{key}[/bold]: {value}")


@models_app.command("default")
def models_default(name: Annotated[str, typer.Argument(help="Installed model to use when --model is omitted.")],
                   home: HomeOption = None) -> None:
    """Set the default model."""
    from vtr.model.registry import set_default_model

    set_default_model(name, home)
    out.print(f"default model: {name}")


def main() -> None:
    """Console entry point: vtr errors become one red line on stderr and their exit code."""
    try:
        app()
    except VtrError as e:
        err.print(f"[red]error:[/red] {e}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
