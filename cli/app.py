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
    videos: Annotated[int, typer.Option("--videos", "-n", min=10, help="Clips in the demo world.")] = 120,
    seed: int = 0,
    home: HomeOption = None,
) -> None:
    """Run the main job end to end on a synthetic library (grows with each vtr component)."""
    from vtr.demo import run_demo

    run_demo(out_dir, videos=videos, seed=seed, home=home, console=err)


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
