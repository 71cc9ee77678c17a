"""`vtr eval custom` on a vtr-shapes test split reports the metrics of the training-time validation (issue #6).

A tiny model is trained for a few steps with ``train()`` (its final validation runs on the world's test split),
exported to a data home and evaluated there, by name, with ``vtr eval custom --json`` (in process, through the
Typer app). Both must decode the same clips (``middle`` sampling at the model's own frames / resolution), tokenise
the same captions, score with the same similarity and rank with the same tie rule, so every dual-encoder metric the
evaluator reports must equal the training value rounded as the evaluator rounds (2 decimals).

The test split gets one duplicated clip (a copy of a file, with the same caption): its scores tie exactly with the
original's in both directions, so the comparison also covers how ties are ranked (a tie rule other than the
evaluator's moves MnR by 1/num_queries, visible at 2 decimals).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vtr.cli.app import app

# As tests/test_training.py: 2-layer VideoMamba-Ti at 32 px x 4 frames, the packaged MiniLM text tower, 1 thread;
# 3 steps, then only the final validation.
TINY = ["model.img_size=32", "model.num_frames=4", "model.vision.depth=2", "data.batch_size=4", "data.num_workers=0",
        "trainer.progress_bar=false", "trainer.log_every_n_steps=1", "trainer.num_threads=1",
        "trainer.keep_checkpoints=0", "trainer.val_every_n_epochs=0", "schedule.max_steps=3"]
DUPLICATED = 4  # the test clip that is copied to the end of the split


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: the training run and the evaluation both use it


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from vtr.data.synth import generate_world

    out = tmp_path_factory.mktemp("parity") / "world"
    # 18 test clips (9 temporal pairs), one caption each, + the duplicate: 19 candidates each way, so R@5 / R@10
    # are not 100 by construction.
    generate_world(out, 36, seed=3, test_fraction=0.5)
    test = json.loads((out / "test.json").read_text())
    original = test[DUPLICATED]
    copy = f"copy_{original['video']}"
    shutil.copyfile(out / "videos" / original["video"], out / "videos" / copy)
    test.append({"video": copy, "caption": original["caption"]})
    (out / "test.json").write_text(json.dumps(test))
    return out


@pytest.mark.parametrize("variant", [[], ["model.frame_independent=true"]], ids=["videomamba", "frame_mean"])
def test_eval_custom_matches_training_validation(world, tmp_path, variant):
    from vtr.evaluation.datasets import discover
    from vtr.evaluation.evaluator import EvalSettings, RetrievalEvaluator
    from vtr.model.registry import create_model
    from vtr.training.run import train

    home = tmp_path / "home"
    summary = train("shapes_tiny", [f"data.world={world}", *TINY, *variant], name="parity", home=home,
                    out=tmp_path / "run")
    trained = summary["metrics"]
    assert summary["global_step"] == 3 and trained["val_failed_videos"] == 0

    result = CliRunner().invoke(app, ["eval", "custom", "--annotation", str(world / "test.json"), "--video-root",
                                      str(world / "videos"), "--model", "parity", "--home", str(home),
                                      "--rerank-k", "0", "--workers", "0", "--no-cache", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    dual = report["dual"]

    # the same task: every test clip and caption, at the model's own frames and resolution, fp32 on the CPU
    num_videos = len(json.loads((world / "test.json").read_text()))
    assert report["num_videos_evaluated"] == report["num_texts_evaluated"] == num_videos == 19
    assert (report["protocol"]["num_frames"], report["protocol"]["resolution"]) == (4, 32)
    assert report["protocol"]["sampling"] == "middle" and report["precision"] == "fp32"
    assert trained["t2v_chance_r1"] == pytest.approx(100 / num_videos)

    # the duplicate really ties: its features equal the original's bit for bit (same file, same batch)
    ds = discover("custom", annotation=world / "test.json", video_root=world / "videos")
    feats = RetrievalEvaluator(ds, EvalSettings(device="cpu", precision="fp32", workers=0, progress=False)) \
        .video_features(create_model("parity", home=home).eval(), torch.device("cpu"), torch.float32)
    assert torch.equal(feats.embeds[DUPLICATED], feats.embeds[num_videos - 1])

    keys = {f"{d}_{m}" for d in ("t2v", "v2t") for m in ("r1", "r5", "r10", "r_mean", "mdr", "mnr")} | {"r_mean"}
    assert keys <= set(dual)
    assert dual["t2v_r10"] < 100 and dual["v2t_r10"] < 100  # not saturated: the comparison can tell models apart
    assert {k: round(trained[k], 2) for k in dual} == dual
