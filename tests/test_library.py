"""vtr index / vtr search end to end: exact scores, bad files, incremental runs, kill -9, concurrent search."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model, tiny_model_dir

from vtr.data.decode import read_frames
from vtr.data.synth import generate_world
from vtr.data.transforms import eval_transform
from vtr.data.video_writer import write_video
from vtr.index.vectors import index_vectors, query_vectors
from vtr.library import Library
from vtr.model.registry import create_model, save_model_dir

QUERIES = ["a red circle moves left", "a blue square grows", "a green triangle appears"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    world = generate_world(root / "world", num_videos=16, seed=2)
    return root, world, tiny_model_dir(root / "model")


def vtr(*args: str, home: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "VTR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "vtr.cli.app", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


def test_index_vectors_give_the_official_score():
    frames = torch.randn(6, 4, 32)
    text = torch.randn(3, 32)
    scores = query_vectors(text) @ index_vectors(frames).T
    assert np.allclose(np.linalg.norm(index_vectors(frames), axis=1), 1.0, atol=1e-5)
    from vtr.model.retrieval import RetrievalModel

    np.testing.assert_allclose(scores, RetrievalModel.similarity(frames, text).numpy(), atol=1e-5)


def test_search_ranks_like_direct_similarity(setup, tmp_path):
    root, world, model_dir = setup
    lib = Library(home=tmp_path, model=str(model_dir), device="cpu")
    report = lib.index([world.videos_dir], workers=0, progress=False)
    paths = sorted(str(p) for p in world.videos_dir.glob("*.mp4"))
    assert report.indexed == len(paths) and not report.failed
    hits = lib.search(QUERIES, k=5)
    model = create_model(model_dir).eval()
    with torch.no_grad():
        videos = torch.stack([eval_transform(read_frames(p, 4, "middle").frames, 64) for p in paths])
        sim = model.similarity(model.encode_video(videos).embeds, model.encode_text(**model.tokenize(QUERIES)).embeds)
    for q, row in enumerate(hits):
        order = torch.argsort(sim[q], descending=True)[:5]
        assert [h.path for h in row] == [paths[i] for i in order]
        np.testing.assert_allclose([h.score for h in row], sim[q, order].numpy(), atol=1e-4)
    # the same library answers a video query with the video itself first
    assert lib.search_video(paths[3], k=1)[0].path == paths[3]
    reranked = lib.search(QUERIES[0], k=3, rerank=True, rerank_candidates=4)[0]
    assert len(reranked) == 3 and all(h.dual_score is not None for h in reranked)
    assert {h.path for h in reranked} <= {h.path for h in lib.search(QUERIES[0], k=4)[0]}


def test_library_opens_its_store_once_and_sees_new_generations(setup, tmp_path, monkeypatch):
    """Two searches, one store open; a write by another Library is seen by the next search of the first."""
    from vtr.index.store import LibraryStore

    root, world, model_dir = setup
    paths = sorted(world.videos_dir.glob("*.mp4"))
    Library(home=tmp_path, model=str(model_dir), device="cpu").index(paths[:8], workers=0, progress=False)
    opens = []
    real_open = LibraryStore.open.__func__
    monkeypatch.setattr(LibraryStore, "open", classmethod(lambda cls, *a, **kw: opens.append(kw) or
                                                           real_open(cls, *a, **kw)))
    with Library(home=tmp_path, device="cpu") as reader:  # model adopted from the index
        first = reader.search(QUERIES[0], k=20)[0]
        reader.search(QUERIES[1], k=20)
        assert len(opens) == 1 and opens[0]["read_only"] and len(first) == 8
        Library(home=tmp_path, model=str(model_dir), device="cpu").index(paths, workers=0, progress=False)
        assert len(reader.search(QUERIES[0], k=20)[0]) == len(paths)  # caught up with the writer's generation
        assert reader.status()["faiss_vectors"] == len(paths)
        assert len([o for o in opens if o["read_only"]]) == 1
    assert reader._reader is None  # closed by the with block


def _bad_files(folder: Path, good: Path) -> dict[str, str]:
    """Every kind of bad input, with the reason vtr must record."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.mp4").write_bytes(b"")
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "text.mp4").write_text("this is not a video\n" * 20)
    import av

    with av.open(str(folder / "audio.mp4"), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(10):
            for p in stream.encode(frame):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)
    return {"empty.mp4": "empty", "truncated.mp4": "corrupt", "text.mp4": "no_video_stream",
            "audio.mp4": "no_video_stream"}


def test_bad_files_are_recorded_and_skipped(setup, tmp_path):
    root, world, model_dir = setup
    lib_dir = tmp_path / "videos"
    good = sorted(world.videos_dir.glob("*.mp4"))[:3]
    lib_dir.mkdir()
    for p in good:
        shutil.copy(p, lib_dir / p.name)
    weird = os.fsencode(str(lib_dir)) + b"/caf\xe9_\xff.mp4"  # not UTF-8
    with open(weird, "wb") as f:
        f.write(good[0].read_bytes())
    expected = _bad_files(lib_dir / "bad", good[0])
    out = vtr("index", str(lib_dir), "--model", str(model_dir), "--workers", "0", "--json", home=tmp_path / "h")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["indexed"] == 4  # 3 good + the non-UTF-8 name
    reasons = {Path(f["path"]).name: f["reason"] for f in report["failures"]}
    assert reasons == expected
    status = json.loads(vtr("index", "status", "--json", home=tmp_path / "h").stdout)
    assert status["videos"] == {"indexed": 4, "failed": 4, "pending": 0}
    assert status["vectors"] == status["faiss_vectors"] == 4


def test_incremental_runs_prune_and_model_mismatch(setup, tmp_path):
    root, world, model_dir = setup
    lib_dir = tmp_path / "videos"
    shutil.copytree(world.videos_dir, lib_dir)
    home = tmp_path / "h"
    lib = Library(home=home, model=str(model_dir), device="cpu")
    first = lib.index([lib_dir], workers=0, progress=False)
    n = first.indexed
    again = lib.index([lib_dir], workers=0, progress=False)
    assert again.indexed == 0 and again.unchanged == n
    victims = sorted(lib_dir.glob("*.mp4"))
    os.utime(victims[0], ns=(time.time_ns(), time.time_ns()))  # touched, same content: not re-encoded
    write_video(victims[1], np.zeros((8, 64, 64, 3), np.uint8))  # new content: re-encoded
    victims[2].unlink()
    third = lib.index([lib_dir], workers=0, progress=False)
    assert (third.indexed, third.touched, third.pruned) == (1, 1, 0)
    assert Library(home=home).status()["vectors"] == n  # the deleted file stays until --prune
    pruned = lib.index([lib_dir], workers=0, progress=False, prune=True)
    assert pruned.pruned == 1 and Library(home=home).status()["vectors"] == n - 1
    assert all(h.path != str(victims[2]) for h in lib.search("a red circle", k=n)[0])
    other = tiny_model(depth=1)
    other_dir = save_model_dir(other, tmp_path / "other")
    refused = vtr("index", str(lib_dir), "--model", str(other_dir), "--workers", "0", home=home)
    assert refused.returncode == 2 and "--reindex" in refused.stderr
    redone = vtr("index", str(lib_dir), "--model", str(other_dir), "--workers", "0", "--reindex", "--json", home=home)
    assert redone.returncode == 0 and json.loads(redone.stdout)["indexed"] == n - 1


def _check_consistent(home: Path, folder: Path) -> dict:
    status = json.loads(vtr("index", "status", "--json", home=home).stdout)
    assert status["vectors"] == status["faiss_vectors"] == status["segments"] == status["videos"]["indexed"]
    out = vtr("search", "a shape moves", "-k", "100", "--json", home=home)
    assert out.returncode == 0, out.stderr
    paths = [h["path"] for h in json.loads(out.stdout)["queries"][0]["results"]]
    assert len(paths) == len(set(paths)) == status["vectors"]
    assert all(Path(p).exists() and Path(p).parent == folder for p in paths)
    return status


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_during_indexing_then_resume(setup, tmp_path, seed):
    root, world, model_dir = setup
    home = tmp_path / "h"
    env = {**os.environ, "VTR_HOME": str(home)}
    cmd = [sys.executable, "-m", "vtr.cli.app", "index", str(world.videos_dir), "--model", str(model_dir),
           "--workers", "0", "--batch-size", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(3.0, 9.0))  # start-up takes ~3 s; indexing ~4-8 s more
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = vtr(*cmd[3:], "--json", home=home)
    assert out.returncode == 0, out.stderr
    status = _check_consistent(home, world.videos_dir)
    assert status["videos"]["indexed"] == len(list(world.videos_dir.glob("*.mp4")))


def test_corrupted_faiss_file_is_rebuilt(setup, tmp_path):
    root, world, model_dir = setup
    home = tmp_path / "h"
    assert vtr("index", str(world.videos_dir), "--model", str(model_dir), "--workers", "0", home=home).returncode == 0
    before = vtr("search", "a red circle", "-k", "5", "--json", home=home).stdout
    faiss_files = [p for p in home.rglob("*") if p.is_file() and p.suffix in (".faiss", ".index")]
    assert faiss_files, list(home.rglob("*"))
    data = bytearray(faiss_files[0].read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    faiss_files[0].write_bytes(bytes(data))
    after = vtr("search", "a red circle", "-k", "5", "--json", home=home)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before)


def test_concurrent_search_while_indexing(setup, tmp_path):
    root, world, model_dir = setup
    home = tmp_path / "h"
    first = sorted(world.videos_dir.glob("*.mp4"))[:2]
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    for p in first:
        shutil.copy(p, seed_dir / p.name)
    assert vtr("index", str(seed_dir), "--model", str(model_dir), "--workers", "0", home=home).returncode == 0
    env = {**os.environ, "VTR_HOME": str(home)}
    writer = subprocess.Popen([sys.executable, "-m", "vtr.cli.app", "index", str(world.videos_dir), "--model",
                               str(model_dir), "--workers", "0", "--batch-size", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lib = Library(home=home, device="cpu")
    counts = []
    try:
        while writer.poll() is None:
            hits = lib.search("a blue square", k=50)[0]  # in-process reader: never errors, always consistent
            assert len({h.path for h in hits}) == len(hits)
            assert all(Path(h.path).exists() for h in hits)
            counts.append(len(hits))
    finally:
        writer.wait(timeout=300)
    assert writer.returncode == 0, writer.stderr.read()
    assert counts and counts == sorted(counts)  # the reader saw the library grow, never shrink
