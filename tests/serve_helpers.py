"""A small searchable library for the `vtr serve` tests: a vtr-shapes world indexed with a tiny random model."""

from __future__ import annotations

from pathlib import Path

import torch

from vtr.data.synth import generate_world
from vtr.library import Library
from vtr.model.registry import save_model_dir
from vtr.model.retrieval import build_model, config_for


def small_library(root: Path, num_videos: int = 16, indexed: int | None = None,
                  segment: float | None = None, db_url: str | None = None) -> tuple[Path, list[Path], Path]:
    """(home, video paths, model dir): ``indexed`` (default all) of ``num_videos`` clips indexed in ``home``
    (cut into ``segment``-second windows when given; the catalog in ``db_url`` when given)."""
    world = generate_world(root / "world", num_videos=num_videos, seed=2)
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=64, num_frames=4, vision={"depth": 2}))
    model_dir = save_model_dir(model, root / "model")
    home = root / "home"
    paths = sorted(world.videos_dir.glob("*.mp4"))
    lib = Library(home=home, model=str(model_dir), device="cpu", db_url=db_url)
    lib.index(paths[:indexed], segment=segment, stride=segment, workers=0, progress=False)
    return home, paths, model_dir
