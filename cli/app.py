"""The `vtr` command line: parse options, call the vtr library, print results (rich on a TTY, --json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

import vtr
from vtr.cli.help import hide_flag_placeholders
from vtr.cli.validation import (
    check_device,
    check_factory,
    check_home,
    check_query,
    check_video_paths,
    non_negative,
    positive,
    readable_text_file,
)

hide_flag_placeholders()
app = typer.Typer(
    name="vtr",
    help="Video-text retrieval: index your videos, search them with language, evaluate and train models.\n\n"
         "Examples: `vtr demo`, `vtr index ~/Videos --segment 10 --stride 5`, `vtr search \"a dog on a beach\" -k 5`, "
         "`vtr doctor`",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # a warning is one line, whatever the width

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", callback=check_home,
                 help="Data home (models, indexes, catalogs). Default: $VTR_HOME or the user data dir."),
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
    """Print the environment: torch/CUDA, scan backends, decoders, faiss flavour, data home, models, indexes."""
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
        elif isinstance(value, list):  # the indexes: one line each
            value = "\n".join(", ".join(f"{k}={v}" for k, v in d.items()) for d in value) or "none"
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
    videos: Annotated[int, typer.Option("--videos", "-n", min=10, help="Clips in the demo world.")] = 600,
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
    frames: Annotated[int | None, typer.Option(min=1, help="Frames per video (default: the protocol's, 8).")
                      ] = None,
    rerank_k: Annotated[int, typer.Option(min=0, help="ITM re-rank the top k (0: dual encoder only).")] = 128,
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per encoder batch.")] = 32,
    device: Annotated[str, typer.Option(callback=check_device, help="auto | cpu | cuda | cuda:N")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 on CUDA, as the official eval) | bf16 | fp32")] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="Video decode workers.")] = 2,
    max_txt_l: Annotated[int | None, typer.Option(min=1, max=512, help="Override the protocol's max text length.")
                         ] = None,
    max_seconds: Annotated[float | None, typer.Option(min=0, help="Only sample the first S seconds (0: no trim).")
                           ] = None,
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
DeviceOption = Annotated[str, typer.Option(callback=check_device, help="auto | cpu | cuda | cuda:N")]
DbOption = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the catalog (default: SQLite in home).")]

INDEX_ACTIONS = ("status", "list", "remove", "repair", "ondisk")


@app.command("index")
def index_cmd(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Video files or folders (walked recursively); or one of: status, list, remove, repair, ondisk.")
    ] = None,
    model: ModelOption = None,
    index: IndexOption = "default",
    segment: Annotated[float | None, typer.Option(callback=non_negative("seconds"),
                                                  help="Cut videos longer than this (s) into windows of this length "
                                                  "(0: whole videos). Default: the index's policy, else ~10 s windows "
                                                  "for videos over ~30 s (see `vtr index status`).")] = None,
    stride: Annotated[float | None, typer.Option(callback=positive("seconds"),
                                                 help="Window stride in seconds (default: --segment).")] = None,
    frames: Annotated[int | None, typer.Option(min=1, help="Frames per clip (default: the model's).")] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Decode worker processes (default: from the core "
                                                "count, beside the encoder's threads).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per encoder batch.")] = 16,
    device: DeviceOption = "auto",
    factory: Annotated[str | None, typer.Option(callback=check_factory, help="FAISS index_factory string for a new "
                                                "index (Flat); for large libraries e.g. IVF1024,PQ64x4fs,RFlat; "
                                                "ondisk:IVF65536,SQ8 keeps no index in RAM (searched on disk after "
                                                "`vtr index ondisk`, see docs/scale.md).")
                       ] = None,
    prune: Annotated[bool, typer.Option(help="Remove vectors of files that no longer exist.")] = False,
    reindex: Annotated[bool, typer.Option(help="Drop the index's vectors and re-embed (model change).")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Try files that failed before again.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Let --prune remove more than half of the index.")] = False,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for another process writing this index.")
                    ] = 0.0,
    db: DbOption = None,
    engine: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray cluster; pip install "
                                        "'vtr[ray]').")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address for --engine ray (default: "
                                                    "RAY_ADDRESS, else a local Ray instance).")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index videos (`vtr index PATH...`), or manage them: `vtr index status|list|remove|repair|ondisk [--index NAME]`.

    Incremental (unchanged files are skipped) and crash-safe (re-run to resume); bad files are recorded with
    their reason and skipped. `--prune` refuses a folder that is missing or unreadable (an unplugged drive).

    Examples: `vtr index ~/Videos --segment 10 --stride 5`, `vtr index ~/Videos --prune`, `vtr index status`
    """
    from vtr.errors import ConfigError

    if not paths:
        raise ConfigError("nothing to index: give video files or folders (or: vtr index status|list|remove)")
    action = str(paths[0])
    if action == "repair" and not paths[0].exists():
        return _index_repair(paths[1:], index, model, device, workers, batch_size, db, home, as_json)
    if action in INDEX_ACTIONS and not paths[0].exists():
        if len(paths) > 1:
            raise ConfigError(f"`vtr index {action}` takes no paths (use --index NAME)")
        if action == "ondisk":  # the out-of-core IVF index, built from the catalog (factory: an ondisk: index's own)
            from vtr.library import Library

            built = Library(home=home, index=index, db_url=db).build_ondisk(factory)
            if as_json:
                from vtr.schema import document

                emit_json(document("index ondisk", index=index, **built))
            else:
                out.print(f"on-disk index {built['factory']}: {built['ntotal']} vectors in {built['build_s']} s, "
                          f"{built['disk_bytes'] / 2**20:.1f} MiB on disk, {built['ram_bytes'] / 2**20:.1f} MiB in RAM")
            return
        return _index_action(action, index, db, home, as_json)
    check_video_paths(paths, prune=prune)
    from vtr.library import Library

    lib = Library(home=home, index=index, model=model, device=device, db_url=db, factory=factory)
    ray_options = None
    if engine == "ray":
        from vtr.engines.ray_engine import RayOptions

        ray_options = RayOptions(address=ray_address)
    report = lib.index(paths, segment=segment, stride=stride, frames=frames, workers=workers,
                       batch_size=batch_size, prune=prune, reindex=reindex, retry_failed=retry_failed, yes=yes,
                       wait_s=wait, engine=engine, ray_options=ray_options)
    if as_json:
        emit_json(report.to_dict())
        return
    from vtr.cli.report import print_index_report

    print_index_report(report, out, err)
    if report.segmentation:
        out.print(f"segments: {report.segmentation['description']}", soft_wrap=True, highlight=False)


def _index_repair(paths: list[Path], index: str, model: str | None, device: str, workers: int, batch_size: int,
                  db: str | None, home: Path | None, as_json: bool) -> None:
    """`vtr index repair [PATH...]`: restore the catalog's safety copy, re-check FAISS, re-index what changed.
    With --db (a database catalog) there is no copy to restore (the server's own backups are); the rest is done."""
    from vtr.index.repair import repair
    from vtr.schema import repair_document

    check_video_paths(paths)
    report = repair(home, paths, index=index, model=model, device=device, workers=workers, batch_size=batch_size,
                    db_url=db)
    if as_json:
        emit_json(repair_document(report))
        return
    if db is not None:
        out.print(f"the catalog is the database {report.catalog}: nothing to restore here (use the database's own "
                  "backups for that); FAISS files checked, files re-indexed", soft_wrap=True)
    elif report.healthy:
        out.print(f"the catalog {report.catalog} is healthy: nothing restored")
    elif report.restored_from:
        out.print(f"restored the catalog from its safety copy of {report.copy_saved_at}; the damaged file is "
                  f"{report.damaged_moved_to}")
    else:
        out.print("no safety copy: rebuilt the catalog by re-indexing"
                  + (f"; the damaged file is {report.damaged_moved_to}" if report.damaged_moved_to else ""))
    for r in report.indexes:
        line = (f"index {r.name}: FAISS {r.faiss or 'new'}; re-indexed {r.indexed}, unchanged {r.unchanged}, "
                f"failed {r.failed}, missing files {r.missing}")
        line += f"; on-disk index {r.ondisk}" if r.ondisk else ""
        out.print(line + (f" [red]({r.error})[/red]" if r.error else ""))


def _index_action(action: str, index: str, db: str | None, home: Path | None, as_json: bool) -> None:
    from vtr.errors import ConfigError
    from vtr.library import Library, list_libraries, remove_library
    from vtr.schema import document, status_document

    if action == "list":
        libs = list_libraries(home, db_url=db)
        if as_json:
            emit_json(document("index list", indexes=libs))
        for lib in [] if as_json else libs:
            out.print(f"{lib['name']}: {lib['vector_count']} vectors, model {lib['model_name']}, {lib['factory']}")
        if not libs and not as_json:
            out.print("no indexes (vtr index PATH...)")
    elif action == "remove":
        if not remove_library(home, index, db_url=db):
            raise ConfigError(f"no index named {index!r} (vtr index list)")
        if as_json:
            emit_json(document("index remove", removed=index))
        else:
            out.print(f"removed index {index}")
    else:
        with Library(home=home, index=index, db_url=db) as lib:
            status = status_document(lib.status())
        if as_json:
            emit_json(status)
            return
        for key, value in status.items():
            if key == "segmentation":
                out.print(f"[bold]segmentation[/bold]: {value['description'] if value else 'not recorded'}")
            elif key == "failures":
                for f in value[:20]:
                    out.print(f"  {f['path']}: {f['reason']}", soft_wrap=True)
            elif key not in ("schema_version", "command"):
                out.print(f"[bold]{key}[/bold]: {value}")


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(callback=check_query, help="What to look for, in words.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Number of results (at most the vectors indexed).")] = 10,
    index: IndexOption = "default",
    model: ModelOption = None,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="Re-score with the ITM head.")] = False,
    video: Annotated[Path | None, typer.Option(help="Find videos like this one instead.")] = None,
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF indexes: lists searched per query (default "
                                               "nlist/16, at least 16); more is slower and finds more.")] = None,
    from_file: Annotated[Path | None, typer.Option(callback=readable_text_file,
                                                   help="Run every query of this file (one per line).")] = None,
    all_windows: Annotated[bool, typer.Option("--all-windows", help="List every matching window of long videos "
                                              "(default: neighbouring windows are one hit, the best one's span).")
                           ] = False,
    exact: Annotated[bool, typer.Option("--exact", help="Search the in-memory FAISS index even when an on-disk "
                                        "index was built (`vtr index ondisk`): loads every vector into RAM.")
                     ] = False,
    device: DeviceOption = "auto",
    db: DbOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search an index: `vtr search "person chopping onions"`.

    Examples: `vtr search "a dog catches a frisbee" -k 5 --rerank`, `vtr search --video clip.mp4`,
    `vtr search --from-file queries.txt --json`
    """
    from vtr.errors import ConfigError
    from vtr.library import Library, read_queries

    if sum(x is not None for x in (query, video, from_file)) != 1:
        raise ConfigError("give exactly one of: a QUERY, --video FILE or --from-file FILE")
    queries = [str(video)] if video is not None else read_queries(from_file) if from_file else [str(query)]
    if not queries or any(not q.strip() for q in queries):
        raise ConfigError(f"no queries in {str(from_file)!r}" if from_file and not queries else
                          'empty query: say in words what to look for, e.g. vtr search "person chopping onions"')
    lib = Library(home=home, index=index, model=model, device=device, db_url=db, nprobe=nprobe, exact=exact)
    if video is not None:
        results = [lib.search_video(video, k, all_windows=all_windows)]
    else:
        results = lib.search(queries, k=k, rerank=rerank, all_windows=all_windows)
    if as_json:
        from vtr.schema import search_document

        emit_json(search_document(queries, results, index=index, query_kind="text" if video is None else "video"))
        return
    from rich.table import Table

    for q, hits in zip(queries, results, strict=True):
        table = Table(title=q)
        for col in ("rank", "score (itm logit)" if rerank and video is None else "score (cosine)", "path", "start-end"):
            table.add_column(col)
        for h in hits:
            table.add_row(str(h.rank), f"{h.score:.4f}", h.path, f"{h.start_s:.1f}-{h.end_s:.1f}s")
        out.print(table)


@app.command()
def serve(
    index: IndexOption = "default",
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8765,
    token: Annotated[str | None, typer.Option(envvar="VTR_TOKEN", help="Secret clients must send (bearer "
                                              "header, or open /login?token=... once).")] = None,
    device: DeviceOption = "auto",
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Serve a web page and a JSON API to search an index and play the hits: `vtr serve` (needs vtr[serve])."""
    from vtr.serve.server import run_server

    run_server(home=home, index=index, model=model, host=host, port=port, token=token, device=device, db_url=db)


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
        if info["report"].get("mlm_head_dropped"):
            err.print(f"[yellow]note:[/yellow] imported without the MLM head: {info['report']['mlm_head_dropped']} "
                      "(the word embeddings come from the embeddings key; retrieval does not use the head)")


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
    """Console entry point: every failure is one line on stderr and an exit code (vtr/cli/errors.py)."""
    from vtr.cli.errors import run_cli

    sys.exit(run_cli(app))


if __name__ == "__main__":
    main()
