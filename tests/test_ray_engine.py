"""``vtr index --engine ray`` on a local Ray cluster (2 CPUs): the same catalog as the local engine, a killed Ray
worker loses and duplicates nothing, kill -9 of the driver then a re-run resumes without duplicates.

Slow (Ray start-up and actor model loads on 2 cores): marked ``slow`` and ``ray``; .ci/run runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import tiny_model_dir

from vtr.data.synth import generate_world
from vtr.index.catalog import Catalog, Embedding, Segment, Video
from vtr.library import Library

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rayeng")
    world = generate_world(root / "world", num_videos=12, seed=3)
    (world.videos_dir / "broken.mp4").write_bytes(b"this is not a video" * 100)  # recorded as failed
    model_dir = tiny_model_dir(root / "model")
    local = Library(home=root / "local", model=str(model_dir), device="cpu")
    report = local.index([world.videos_dir], workers=0, progress=False, batch_size=4)
    assert report.indexed == 12 and len(report.failed) == 1
    return root, world.videos_dir, model_dir, catalog_rows(root / "local")


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    info = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield info["gcs_address"] if isinstance(info, dict) else info.address_info["gcs_address"]
    ray.shutdown()


def catalog_rows(home: Path, db_url: str | None = None) -> dict[str, tuple]:
    """Every video of the default index: (status, error reason, content hash, size, [(start, end, vector)])."""
    with Catalog.open(home, db_url, read_only=True) as cat, cat.read() as s:
        segs: dict[int, list] = {}
        stmt = sa.select(Segment.video_id, Segment.start_s, Segment.end_s, Embedding.vector).join(
            Embedding, Embedding.vector_id == Segment.vector_id)
        for vid, a, b, vec in s.execute(stmt):
            segs.setdefault(vid, []).append((a, b, np.frombuffer(vec, np.float32)))
        out = {}
        for v in s.scalars(sa.select(Video)):
            reason = (v.error or "") if v.status == "failed" else ""
            out[v.fs_path] = (v.status, reason, v.content_hash, v.size, sorted(segs.get(v.id, []), key=lambda r: r[0]))
        return out


def assert_same_rows(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for path, (status, reason, digest, size, segs) in want.items():
        g = got[path]
        assert g[:4] == (status, reason, digest, size), path
        assert [(a, b) for a, b, _ in g[4]] == [(a, b) for a, b, _ in segs], path
        for (_, _, x), (_, _, y) in zip(g[4], segs, strict=True):
            np.testing.assert_allclose(x, y, atol=2e-5)


def _pids_of(needle: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and needle in cmd:
                pids.append(int(d.name))
    return pids


def test_ray_engine_matches_local_engine(setup, cluster, tmp_path):
    root, videos, model_dir, want = setup
    lib = Library(home=tmp_path / "h", model=str(model_dir), device="cpu")
    report = lib.index([videos], engine="ray", progress=False, batch_size=4)
    assert (report.indexed, len(report.failed)) == (12, 1)
    assert report.failed[0]["path"].endswith("broken.mp4")
    assert_same_rows(catalog_rows(tmp_path / "h"), want)
    again = lib.index([videos], engine="ray", progress=False)  # incremental: the same plan as the local engine
    assert (again.indexed, again.unchanged, len(again.known_failures)) == (0, 12, 1)  # the broken file: known
    status = lib.status()
    assert status["vectors"] == status["faiss_vectors"] == status["segments"] == 12
    hit = lib.search("a red circle moves left", k=1)[0][0]
    assert Path(hit.path).parent == videos


@pytest.mark.parametrize("worker", ["_Encoder", "_Decoder"])
def test_killed_ray_worker_loses_and_duplicates_nothing(setup, cluster, tmp_path, worker):
    root, videos, model_dir, want = setup
    killed: list[int] = []

    def kill(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    def kill_an_encoder(_path: str) -> None:  # after the first committed batch, kill -9 the encoder actor
        if worker == "_Encoder" and not killed:
            kill(_pids_of(worker))

    def kill_a_decoder() -> None:  # as soon as a decode actor exists (it may finish before the first commit)
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline and not stop.is_set():
            pids = _pids_of(worker)
            if pids:
                time.sleep(0.5)  # let it take its first block
                kill(pids)
            time.sleep(0.05)

    stop = threading.Event()
    killer = threading.Thread(target=kill_a_decoder, daemon=True) if worker == "_Decoder" else None
    if killer:
        killer.start()
    lib = Library(home=tmp_path / "h", model=str(model_dir), device="cpu")
    try:
        report = lib.index([videos], engine="ray", progress=False, batch_size=2, on_video=kill_an_encoder)
    finally:
        stop.set()
        if killer:
            killer.join()
    assert killed, f"no {worker} actor process was found to kill"
    assert (report.indexed, len(report.failed)) == (12, 1)
    assert_same_rows(catalog_rows(tmp_path / "h"), want)


_DRIVER = """
import os, signal, sys
import ray
from vtr.library import Library
videos, model_dir, home, address = sys.argv[1:5]
ray.init(address=address, logging_level="WARNING")
done = []

def die_after_the_first_commit(path):  # rows of other videos are in flight at this point
    done.append(path)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

Library(home=home, model=model_dir, device="cpu").index([videos], engine="ray", progress=False, batch_size=2,
                                                        on_video=die_after_the_first_commit)
"""


def test_kill_9_of_the_driver_then_rerun_resumes(setup, cluster, tmp_path):
    root, videos, model_dir, want = setup
    home = tmp_path / "h"
    killed = subprocess.run([sys.executable, "-c", _DRIVER, str(videos), str(model_dir), str(home), cluster],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = catalog_rows(home)
    assert sum(r[0] == "indexed" for r in partial.values()) == 2  # one committed batch, then kill -9
    env = {**os.environ, "VTR_HOME": str(home)}
    cmd = [sys.executable, "-m", "vtr.cli.app", "index", str(videos), "--model", str(model_dir), "--device", "cpu",
           "--engine", "ray", "--ray-address", cluster, "--batch-size", "2", "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    # the 10 videos not committed before the kill; the broken file failed then or now (failures are not retried)
    assert report["indexed"] == 10 and report["indexed"] + report["unchanged"] + report["failed"] == 13
    assert_same_rows(catalog_rows(home), want)
    status = Library(home=home).status()
    assert status["vectors"] == status["faiss_vectors"] == status["segments"] == 12


def test_ray_engine_on_postgresql(setup, cluster, tmp_path, pg_url):
    """The driver writes a PostgreSQL catalog the same way (the advisory lock is its writer lock)."""
    root, videos, model_dir, want = setup
    lib = Library(home=tmp_path / "h", model=str(model_dir), device="cpu", db_url=pg_url)
    report = lib.index([videos], engine="ray", progress=False, batch_size=4)
    assert (report.indexed, len(report.failed)) == (12, 1)
    assert_same_rows(catalog_rows(tmp_path / "h", pg_url), want)
    assert not (tmp_path / "h" / "catalog.db").exists()

