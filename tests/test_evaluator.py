"""RetrievalEvaluator end to end on a tiny vtr-shapes split: parity, caching, bad videos, vtr eval custom."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import tiny_model, tiny_model_dir

from vtr.data.decode import read_frames
from vtr.data.synth import generate_world
from vtr.data.transforms import eval_transform
from vtr.evaluation import evaluator as ev
from vtr.evaluation.datasets import discover
from vtr.evaluation.metrics import retrieval_metrics
from vtr.model.registry import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    world = generate_world(root / "world", num_videos=24, seed=5)
    return root, world, tiny_model_dir(root / "model")


def _settings(**kw):
    return ev.EvalSettings(rerank_k=kw.pop("rerank_k", 4), workers=0, progress=False, **kw)


def test_dual_scores_match_a_direct_computation(setup):
    root, world, path = setup
    ds = discover("custom", annotation=world.test_json, video_root=world.videos_dir)
    model = create_model(path).eval()
    report = ev.RetrievalEvaluator(ds, _settings(rerank_k=0))(model)
    with torch.no_grad():  # the protocol written out: middle frames, eval transform, frame-mean cosine
        videos = torch.stack([eval_transform(read_frames(p, 4, "middle").frames, 64) for p in ds.video_paths])
        v = model.encode_video(videos).embeds
        t = model.encode_text(**model.tokenize(ds.texts)).embeds
    expected = retrieval_metrics(model.similarity(v, t), ds.txt2vid, ds.vid2txt)
    assert report["dual"] == expected
    assert report["num_videos_evaluated"] == ds.num_videos and "rerank" not in report
    assert report["protocol"]["deviations"] == ["frames 4 (protocol 8)", "resolution 64 (protocol 224)"]
    # the model actually evaluated, not only its architecture
    from vtr.hashing import sha256_file

    assert report["model"] == {"name": "model", "architecture": "videomamba_t16_minilm",
                               "path": str(path.resolve()), "weights_sha256": sha256_file(path / "model.safetensors")}


def test_rerank_scores_only_top_k_and_cache_skips_decoding(setup, tmp_path, monkeypatch):
    root, world, path = setup
    ds = discover("custom", annotation=world.test_json, video_root=world.videos_dir)
    model = create_model(path)
    settings = _settings(cache_dir=str(tmp_path / "cache"))
    first = ev.RetrievalEvaluator(ds, settings)(model)
    assert set(first) >= {"dual", "rerank"} and list((tmp_path / "cache").glob("*.pt"))

    def no_decoding(*a, **k):
        raise AssertionError("videos were decoded again despite the cache")

    monkeypatch.setattr(ev, "iter_clip_batches", no_decoding)
    second = ev.RetrievalEvaluator(ds, settings)(model)
    assert second["dual"] == first["dual"] and second["rerank"] == first["rerank"]


def test_undecodable_videos_are_reported_and_left_out(setup, tmp_path):
    root, world, _ = setup
    videos = tmp_path / "videos"
    shutil.copytree(world.videos_dir, videos)
    ds = discover("custom", annotation=world.test_json, video_root=videos)
    broken = ds.video_paths[3]
    open(broken, "wb").close()  # zero bytes
    model = tiny_model(depth=1)
    report = ev.RetrievalEvaluator(ds, _settings(rerank_k=0))(model)
    assert report["num_undecodable_videos"] == 1
    assert report["undecodable_videos"][0]["path"] == broken and report["undecodable_videos"][0]["reason"] == "empty"
    assert report["num_videos_evaluated"] == ds.num_videos - 1
    assert report["num_texts_evaluated"] == ds.num_texts - len(ds.vid2txt[3])


def test_cli_eval_custom_json(setup, tmp_path):
    root, world, path = setup
    env = {**os.environ, "VTR_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "vtr.cli.app", "eval", "custom", "--annotation", str(world.test_json),
           "--video-root", str(world.videos_dir), "--model", str(path), "--rerank-k", "3", "--workers", "0",
           "--json", "--output", str(tmp_path / "r.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert report["protocol"]["rerank_k"] == 3 and report["annotation_sha256"] and report["model"]["weights_sha256"]
    missing = subprocess.run([*cmd[:5], "--data-root", str(tmp_path)], capture_output=True, text=True, env=env,
                             timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
