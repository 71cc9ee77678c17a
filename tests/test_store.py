"""LibraryStore: catalog + FAISS together, incremental planning, crash recovery, concurrent readers; walk_videos."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from vtr.data.decode import VideoInfo
from vtr.data.sampling import segment_windows
from vtr.errors import ConfigError
from vtr.index.catalog import Catalog, Embedding, Segment, Video
from vtr.index.store import (
    IndexBusyError,
    LibraryStore,
    list_indexes,
    remove_index,
    walk_videos,
)
from vtr.index.vector_index import normalize

DIM = 16
MODEL = "vtr-test-model"
WEIGHTS = "ab" * 32
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes as a name")


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


# The catalog of the tests that take the ``library`` fixture: SQLite in the home (None), or a PostgreSQL database
# (set by the fixture; in the environment too, for the reader subprocess).
_DB_URL: str | None = os.environ.get("VTR_TEST_DB_URL")


def open_store(home: Path, **kw) -> LibraryStore:
    kw = {"model_name": MODEL, "weights_sha256": WEIGHTS, "dim": DIM, "device": "cpu", "db_url": _DB_URL} | kw
    return LibraryStore.open(home, **kw)


def make_file(path: Path | bytes, data: bytes | None = None) -> str:
    """A stand-in video file (the store never decodes; it hashes and stats)."""
    raw = os.fsencode(path)
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    with open(raw, "wb") as fh:
        fh.write(os.urandom(256) if data is None else data)
    return os.fsdecode(raw)


def info(path: str, duration: float = 3.0) -> VideoInfo:
    return VideoInfo(
        path=path, num_frames=int(duration * 8), fps=8.0, duration=duration, width=64, height=48, backend="test"
    )


def vecs(key: int, n: int) -> np.ndarray:
    """Deterministic embeddings of video ``key``: row j is segment j's."""
    return normalize(np.random.default_rng(key).standard_normal((n, DIM)))


def add(store: LibraryStore, path: str, key: int, duration: float = 3.0, **kw) -> list[tuple[float, float]]:
    windows = segment_windows(duration, 2.0, 1.0)
    store.add_video(info(path, duration), windows, vecs(key, len(windows)), **kw)
    return windows


def abandon(store: LibraryStore) -> None:
    """What kill -9 leaves: no flush, no clean close (only the OS-level lock and connections go away)."""
    store.catalog.engine.dispose()
    if store._lock is not None:
        store._lock.release()


def top(store: LibraryStore, query: np.ndarray, k: int = 5, **kw) -> list[tuple[str, float, float]]:
    return [(h.video_path, h.start_s, h.end_s) for h in store.search(query, k, **kw)[0]]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def library(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A home and three stand-in videos (keys 0, 1, 2) in tmp/videos; the catalog in SQLite or PostgreSQL."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    monkeypatch.setattr(sys.modules[__name__], "_DB_URL", url)
    if url is not None:
        monkeypatch.setenv("VTR_TEST_DB_URL", url)
    paths = [make_file(tmp_path / "videos" / f"v{i}.mp4") for i in range(3)]
    return tmp_path / "home", paths


def filled(home: Path, paths: list[str]) -> LibraryStore:
    store = open_store(home)
    for key, path in enumerate(paths):
        add(store, path, key)
    return store


# --------------------------------------------------------------------------- basics


def test_add_and_search(library) -> None:
    home, paths = library
    with filled(home, paths) as store:
        windows = segment_windows(3.0, 2.0, 1.0)
        assert windows == [(0.0, 2.0), (1.0, 3.0)]
        hits = store.search(vecs(1, 2), k=3)
        assert len(hits) == 2 and all(len(h) == 3 for h in hits)
        for j, per_query in enumerate(hits):
            best = per_query[0]
            assert (best.video_path, best.start_s, best.end_s) == (paths[1], *windows[j])
            assert best.score == pytest.approx(1.0, abs=1e-5)
            assert per_query[0].score >= per_query[1].score >= per_query[2].score
        st = store.status()
        assert st.videos == {"indexed": 3, "failed": 0, "pending": 0}
        assert st.segments == st.vectors == st.faiss_vectors == 6
        assert st.model_name == MODEL and st.factory == "Flat" and st.embedding_dim == DIM
        # re-adding a video replaces its segments and vectors (the old ids disappear)
        old_ids = [h.vector_id for h in store.search(vecs(2, 2), 1)[0]]
        windows = segment_windows(5.0, 2.0, 1.0)
        new_ids = store.add_video(info(paths[2], 5.0), windows, vecs(20, len(windows)))
        assert store.ntotal == 4 + len(windows) and not set(old_ids) & set(new_ids.tolist())
        assert top(store, vecs(20, 4)[3], 1) == [(paths[2], *windows[3])]
        with pytest.raises(ValueError, match="shape"):
            store.add_video(info(paths[0]), [(0.0, 1.0)], vecs(0, 2))
    with open_store(home) as store:  # persisted on close
        assert store.last_check.changed is False and store.ntotal == 4 + len(windows)
        assert top(store, vecs(0, 1)[0], 1) == [(paths[0], 0.0, 2.0)]


def test_stored_embeddings_round_trip_and_no_extra_blob(library) -> None:
    home, paths = library
    with open_store(home) as store:
        ids = store.add_video(info(paths[0]), [(0.0, 2.0), (1.0, 3.0)], vecs(0, 2))
        vectors = store.get_embeddings(ids[::-1])
        np.testing.assert_allclose(vectors, vecs(0, 2)[::-1], atol=1e-6)
        with pytest.raises(KeyError):
            store.get_embeddings([12345])
        with store.catalog.read() as s:  # the per-frame blob column stays in the schema but is never written
            assert s.execute(sa.text("SELECT COUNT(*) FROM embeddings WHERE extra IS NOT NULL")).scalar() == 0


def test_legacy_home_opens_and_searches(tmp_path: Path) -> None:
    """A home written by the pre-redesign code (per-frame blobs stored) opens and answers as it did then."""
    legacy = Path(__file__).parent / "data" / "legacy_home"
    home = tmp_path / "home"
    shutil.copytree(legacy, home)
    expected = json.loads((legacy / "expected.json").read_text())
    queries = np.load(legacy / "queries.npy")
    with LibraryStore.open(home, "default", read_only=True) as store:
        assert store.last_check.changed is False  # the old FAISS file is trusted as it is
        got = [[[round(h.score, 6), os.path.basename(h.video_path), h.start_s, h.end_s] for h in row]
               for row in store.search(queries, 3)]
        assert store.status().videos == {"indexed": 4, "failed": 1, "pending": 0}
        assert store.segment_policy() is None and store.status().segmentation is None  # v2: not recorded
    assert got == expected
    with LibraryStore.open(home, "default", model_name="legacy-model", dim=queries.shape[1]) as store:
        store.remove_video(store.search(queries[:1], 1)[0][0].video_path)  # and a writer can change it
        assert store.ntotal == 4


def test_failures_and_status(library, tmp_path: Path) -> None:
    home, paths = library
    with filled(home, paths) as store:
        store.mark_failed(paths[1], "corrupt: moov atom not found")  # drops the vectors it had
        store.mark_failed(tmp_path / "videos" / "gone.mp4", "missing")
        st = store.status()
        assert st.videos == {"indexed": 2, "failed": 2, "pending": 0}
        assert sorted(st.failures) == sorted(
            [(paths[1], "corrupt: moov atom not found"), (str(tmp_path / "videos" / "gone.mp4"), "missing")]
        )
        assert st.segments == st.vectors == st.faiss_vectors == 4
        assert all(h.video_path != paths[1] for h in store.search(vecs(1, 2), 10)[0])
        store.flush()
        st = store.status()
        assert st.faiss_bytes > 0 and st.schema_version >= 2
        assert st.db_bytes > 0 if _DB_URL is None else st.db_bytes is None  # a server's size is not ours to tell
        assert store.remove_video(paths[0]) and not store.remove_video(paths[0])
        assert store.status().segments == store.ntotal == 2


def test_model_mismatch_is_refused(library) -> None:
    home, paths = library
    filled(home, paths).close()
    with pytest.raises(ConfigError) as err:
        open_store(home, model_name="other-model", weights_sha256="cd" * 32)
    msg = str(err.value)
    assert MODEL in msg and "other-model" in msg and "--reindex" in msg and "abababab" in msg and "cdcdcdcd" in msg
    with pytest.raises(ConfigError, match="--reindex"):
        open_store(home, weights_sha256="cd" * 32)  # same name, other weights
    with pytest.raises(ConfigError, match="--reindex"):
        open_store(home, dim=DIM * 2)
    with open_store(home, model_name="other-model", weights_sha256="cd" * 32, dim=8, reindex=True) as store:
        assert store.ntotal == 0 and store.dim == 8 and store.status().videos["indexed"] == 0
        assert [p.path for p in store.plan([os.path.dirname(paths[0])]).new] == paths  # all new again
    with pytest.raises(ConfigError, match="--reindex"):
        open_store(home)  # now the index belongs to the other model


def test_reindex_drops_vectors(library) -> None:
    home, paths = library
    with filled(home, paths) as store:
        ids_before = store.search(vecs(0, 1), 1)[0][0].vector_id
        store.reindex()
        assert store.ntotal == 0 and store.status().segments == 0 and store.search(vecs(0, 1), 3) == [[]]
        add(store, paths[0], 0)
        assert store.search(vecs(0, 1), 1)[0][0].vector_id > ids_before  # ids are never reused


def test_read_only_store(library) -> None:
    home, paths = library
    with pytest.raises(ConfigError):
        open_store(home, read_only=True)  # no catalog yet
    filled(home, paths).close()
    with pytest.raises(ConfigError, match="no index named"):
        open_store(home, name="other", read_only=True)
    with open_store(home, read_only=True, model_name=None, weights_sha256=None, dim=None) as ro:
        assert top(ro, vecs(2, 1)[0], 1) == [(paths[2], 0.0, 2.0)]
        for write in (lambda: add(ro, paths[0], 0), lambda: ro.flush(), lambda: ro.remove_video(paths[0])):
            with pytest.raises(ConfigError, match="read-only"):
                write()
    with pytest.raises(ConfigError, match="--reindex"):
        open_store(home, read_only=True, model_name="other")


# --------------------------------------------------------------------------- incremental planning


def test_plan_incremental(library, tmp_path: Path) -> None:
    home, paths = library
    folder = str(tmp_path / "videos")
    make_file(tmp_path / "videos" / ".hidden.mp4")
    make_file(tmp_path / "videos" / "notes.txt")
    make_file(tmp_path / "videos" / ".cache" / "x.mp4")
    with open_store(home) as store:
        plan = store.plan([folder])
        assert [p.path for p in plan.new] == paths and not plan.changed and not plan.deleted
        for key, item in enumerate(plan.to_index):
            add(store, item.path, key)

        plan = store.plan([folder])
        assert [p.path for p in plan.unchanged] == paths and not plan.to_index and not plan.touched

        # touched: new mtime, same bytes -> unchanged (hash compared), and the catalog takes the new mtime
        st = os.stat(paths[0])
        os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        plan = store.plan([folder])
        assert [p.path for p in plan.touched] == [paths[0]] and len(plan.unchanged) == 3 and not plan.to_index
        assert not store.plan([folder]).touched  # mtime recorded: no hashing the next time

        # content changed, same size -> changed (with its new hash, ready for add_video)
        data = bytearray(open(paths[1], "rb").read())
        data[0] ^= 0xFF
        st = os.stat(paths[1])
        Path(paths[1]).write_bytes(bytes(data))
        os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))
        # size changed -> changed without hashing
        Path(paths[2]).write_bytes(b"longer" * 100)
        plan = store.plan([folder])
        assert [(p.path, p.reason) for p in plan.changed] == [(paths[1], "content"), (paths[2], "size")]
        assert plan.changed[0].content_hash is not None and plan.changed[1].content_hash is None
        for item in plan.changed:
            store.add_video(info(item.path), [(0.0, 3.0)], vecs(7, 1), content_hash=item.content_hash)
        assert len(store.plan([folder]).unchanged) == 3

        # deleted: reported, removed only with prune=True
        os.unlink(paths[0])
        plan = store.plan([folder])
        assert [p.path for p in plan.deleted] == [paths[0]] and not plan.pruned
        assert top(store, vecs(0, 1)[0], 1)[0][0] == paths[0]  # still in the catalog
        assert store.plan([paths[1]]).deleted == []  # only files under the walked roots count
        plan = store.plan([folder], prune=True)
        assert plan.pruned and [p.path for p in plan.deleted] == [paths[0]]
        assert all(h.video_path != paths[0] for h in store.search(vecs(0, 2), 10)[0])
        assert store.status().videos["indexed"] == 2 and not store.plan([folder]).deleted

        # a failed file is not retried while unchanged (unless asked), but is once it changes
        store.mark_failed(paths[1], "corrupt")
        plan = store.plan([folder])
        assert paths[1] in [p.path for p in plan.unchanged]
        assert [p.path for p in store.plan([folder], retry_failed=True).changed] == [paths[1]]
        st = os.stat(paths[1])
        os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert [p.path for p in store.plan([folder]).changed] == [paths[1]]


# --------------------------------------------------------------------------- crash consistency


@pytest.mark.parametrize("damage", ["delete", "flip", "truncate", "garbage", "unrecorded"])
def test_faiss_file_rebuilt_from_catalog(library, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    home, paths = library
    queries = np.concatenate([vecs(k, 2) for k in range(3)]) + 0.3 * vecs(99, 6)
    with filled(home, paths) as store:
        before = store.search(queries, 4)
        faiss_path = store.faiss_path
    data = faiss_path.read_bytes()
    if damage == "delete":
        faiss_path.unlink()
    elif damage == "flip":
        faiss_path.write_bytes(data[:-40] + bytes(b ^ 0x55 for b in data[-40:]))
    elif damage == "truncate":
        faiss_path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        faiss_path.write_bytes(os.urandom(len(data)))
    else:  # a crash between writing the file and recording its checksum
        with Catalog.open(home, _DB_URL) as cat, cat.write() as s:
            s.execute(sa.text("UPDATE indexes SET faiss_checksum = NULL"))
    with caplog.at_level(logging.WARNING, logger="vtr.index.store"), open_store(home) as store:
        assert store.last_check.rebuilt and store.ntotal == 6
        assert "rebuilding it from the catalog" in caplog.text
        assert store.search(queries, 4) == before
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vtr.index.store"), open_store(home) as store:
        assert not store.last_check.changed and not caplog.text  # the rebuilt file was saved and verifies
        assert store.search(queries, 4) == before


def test_stale_faiss_vectors_are_never_returned(library) -> None:
    home, paths = library
    # The FAISS file holds video 2's vectors but the catalog does not: as if its catalog transaction never
    # committed while a FAISS file with it did get written.
    store = filled(home, paths)
    store.flush()
    abandon(store)
    with Catalog.open(home, _DB_URL) as cat, cat.write() as s:
        video_id = s.scalar(sa.select(Video.id).where(Video.path == paths[2]))
        s.execute(
            sa.delete(Embedding).where(
                Embedding.vector_id.in_(sa.select(Segment.vector_id).where(Segment.video_id == video_id))
            )
        )
        s.execute(sa.delete(Segment).where(Segment.video_id == video_id))
        s.execute(sa.delete(Video).where(Video.id == video_id))

    with open_store(home, read_only=True) as ro:  # a reader drops them in memory
        assert ro.last_check.stale == 2 and ro.ntotal == 4
        assert all(h.video_path != paths[2] for h in ro.search(vecs(2, 2), 6)[0])
    with open_store(home) as store:
        assert store.last_check.stale == 2 and store.ntotal == 4  # removed on the consistency check
        hits = store.search(vecs(2, 2), 10)
        assert all(h.video_path != paths[2] for q in hits for h in q) and all(len(q) == 4 for q in hits)
        # stale vectors appearing in memory (any cause) are filtered out of results and dropped
        store._index.add(vecs(2, 2), [10**15, 10**15 + 1])
        hits = store.search(vecs(2, 2), 3)
        assert all(h.vector_id < 10**15 for q in hits for h in q) and all(len(q) == 3 for q in hits)
        assert store.ntotal == 4
    with open_store(home) as store:
        assert not store.last_check.changed and store.ntotal == 4


def test_commit_without_flush_is_recovered(library) -> None:
    """Killed after the catalog commit but before the FAISS file was saved: the vectors come back."""
    home, paths = library
    store = open_store(home)
    add(store, paths[0], 0)
    store.flush()
    add(store, paths[1], 1)  # committed, never flushed
    store.remove_video(paths[0])  # committed, never flushed
    abandon(store)
    with open_store(home) as store:
        assert (store.last_check.stale, store.last_check.missing) == (2, 2) and store.ntotal == 2
        assert top(store, vecs(1, 1)[0], 5)[0] == (paths[1], 0.0, 2.0)
        assert all(p != paths[0] for p, _, _ in top(store, vecs(0, 1)[0], 5))
    # killed before the first flush ever: no FAISS file at all
    home2 = home.parent / "home2"
    store = open_store(home2, name="fresh")  # (another name too: on PostgreSQL both homes share one catalog)
    add(store, paths[2], 2)
    abandon(store)
    with open_store(home2, name="fresh") as store:
        assert store.last_check.rebuilt and top(store, vecs(2, 1)[0], 1) == [(paths[2], 0.0, 2.0)]


def test_one_writer_at_a_time(library) -> None:
    home, paths = library
    with open_store(home):
        with pytest.raises(IndexBusyError, match="another vtr process"):
            open_store(home)
        open_store(home, name="second").close()  # other indexes are independent
        open_store(home, read_only=True).close()  # readers are welcome
    open_store(home).close()  # released on close


def read_while_writing(home: Path, paths: list[str], ready_file: Path, stop_file: Path) -> dict:
    """A read-only store searching until ``stop_file`` exists; every result must be a committed snapshot.

    Runs in a thread or in another process (see the test below); raises AssertionError on any inconsistency.
    """
    key_of = {p: i for i, p in enumerate(paths)}
    starts = [w[0] for w in segment_windows(3.0, 2.0, 1.0)]
    rng = np.random.default_rng(0)
    checks: dict = {"searches": 0, "hits": 0, "states": set()}
    with open_store(home, read_only=True) as ro:
        ready_file.touch()
        while True:
            finished = stop_file.exists()
            key = int(rng.integers(0, len(paths)))
            query = vecs(key, 2)
            for qi, hits in enumerate(ro.search(query, 5)):
                checks["searches"] += 1
                for hit in hits:  # each hit is a committed (video, segment) whose vector gives that score
                    expected = vecs(key_of[hit.video_path], 2)[starts.index(hit.start_s)]
                    assert abs(hit.score - float(query[qi] @ expected)) < 1e-4, hit
                    checks["hits"] += 1
            st = ro.status()  # one snapshot: the counts agree
            assert st.segments == st.vectors == 2 * st.videos["indexed"], st
            checks["states"].add(st.videos["indexed"])
            if finished:
                break
        final = ro.search(np.concatenate([vecs(i, 1) for i in range(len(paths))]), 1)
        assert [q[0].video_path for q in final] == paths, "the reader did not catch up with the writer"
    checks["states"] = sorted(checks["states"])
    return checks


_READER_PROCESS = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_store import read_while_writing
home, ready, stop = (Path(a) for a in sys.argv[2:5])
print(json.dumps(read_while_writing(home, json.loads(sys.argv[5]), ready, stop)))
"""


@pytest.mark.parametrize("reader_kind", ["thread", "process"])
def test_concurrent_reader_sees_consistent_snapshots(library, tmp_path: Path, reader_kind: str) -> None:
    home, _ = library
    paths = [make_file(tmp_path / "many" / f"m{i:02d}.mp4") for i in range(24)]
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    with open_store(home) as store:
        add(store, paths[0], 0)

    result: dict = {}
    if reader_kind == "thread":
        errors: list[BaseException] = []

        def run() -> None:
            try:
                result.update(read_while_writing(home, paths, ready, stop))
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=run)
        reader.start()
    else:
        reader = subprocess.Popen(
            [sys.executable, "-c", _READER_PROCESS, str(Path(__file__).parent), str(home), str(ready), str(stop),
             json.dumps(paths)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline, "the reader did not start"
            assert reader_kind == "thread" or reader.poll() is None, reader.communicate()
            time.sleep(0.01)
        with open_store(home) as store:  # the writer, meanwhile
            for i in range(1, len(paths)):
                add(store, paths[i], i)
                if i % 4 == 0:
                    store.flush()
                if i % 7 == 0:  # removal and re-adding: ids change, old ones go stale
                    store.remove_video(paths[i - 1])
                    add(store, paths[i - 1], i - 1)
                time.sleep(0.01)
    finally:
        stop.touch()
    if reader_kind == "thread":
        reader.join(timeout=120)
        assert not errors, errors
    else:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
    assert result["searches"] > 0 and result["hits"] > 0
    assert len(result["states"]) >= 2, result  # it did read while the writer was writing


# --------------------------------------------------------------------------- other factories, names, helpers


def test_ivf_factory_trains_and_persists(library, tmp_path: Path) -> None:
    home, _ = library
    paths = [make_file(tmp_path / "ivf" / f"c{i:03d}.mp4") for i in range(90)]
    with open_store(home, factory="IVF4,Flat") as store:  # trains at 156 vectors
        for i, path in enumerate(paths[:60]):
            add(store, path, i)
        assert store._index.pending and store.ntotal == 120
        assert top(store, vecs(5, 1)[0], 1) == [(paths[5], 0.0, 2.0)]  # exact while pending
        for i, path in enumerate(paths[60:], start=60):
            add(store, path, i)
        assert not store._index.pending and store.ntotal == 180
        store.remove_video(paths[0])
    with open_store(home) as store:  # the index keeps its factory
        assert store.factory == "IVF4,Flat" and not store.last_check.changed and not store._index.pending
        assert store.ntotal == 178
        found = [store.search(vecs(i, 1), 1)[0][0].video_path for i in range(1, 90, 9)]
        assert np.mean([f == paths[i] for f, i in zip(found, range(1, 90, 9), strict=True)]) >= 0.8
    with open_store(home, factory="Flat") as store:  # another factory: rebuilt from the stored embeddings
        assert store.factory == "Flat" and store.last_check.rebuilt and store.ntotal == 178
        assert top(store, vecs(7, 1)[0], 1) == [(paths[7], 0.0, 2.0)]
    with open_store(home, factory="IVF4,SQ8,RFlat") as store:  # refined: ids in an id map, removal deferred
        assert store.last_check.rebuilt and not store._index.pending and store.ntotal == 178
        store.remove_video(paths[1])
        assert store.ntotal == 176 and paths[1] not in {h.video_path for h in store.search(vecs(1, 1), 5)[0]}
        assert top(store, vecs(7, 1)[0], 1) == [(paths[7], 0.0, 2.0)]
        assert store._index.search_params()["nprobe"] == 4
        assert top(store, vecs(8, 1)[0], 1, nprobe=1) == [(paths[8], 0.0, 2.0)]
        assert store._index.search_params()["nprobe"] == 1  # the override holds for later searches
    with open_store(home) as store:
        assert store.factory == "IVF4,SQ8,RFlat" and not store.last_check.changed and store.ntotal == 176


@linux_only
def test_non_utf8_video_path(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/vid\xe9os/caf\xe9 \xff.mp4"
    path = make_file(raw)
    with open_store(tmp_path / "home") as store:
        plan = store.plan([os.fsencode(tmp_path) + b"/vid\xe9os"])
        assert [os.fsencode(p.path) for p in plan.new] == [raw]
        add(store, plan.new[0].path, 3)
        hit = store.search(vecs(3, 1), 1)[0][0]
        assert os.fsencode(hit.video_path) == raw and os.path.exists(hit.video_path)
        assert store.plan([os.fsdecode(os.path.dirname(raw))]).unchanged[0].path == path
        store.mark_failed(path, "no_video_stream")
        [(display, reason)] = store.status().failures
        assert display.endswith("caf\ufffd \ufffd.mp4") and reason == "no_video_stream"


def test_list_and_remove_indexes(library) -> None:
    home, paths = library
    assert list_indexes(home, db_url=_DB_URL) == []
    filled(home, paths).close()
    with open_store(home, name="small", model_name="m2", dim=8) as other:
        other.add_video(info(paths[0]), [(0.0, 3.0)], normalize(np.ones((1, 8))))
    names = [(i.name, i.model_name, i.videos, i.vector_count) for i in list_indexes(home, db_url=_DB_URL)]
    assert names == [("default", MODEL, 3, 6), ("small", "m2", 1, 1)]
    with pytest.raises(ConfigError, match="invalid index name"):
        open_store(home, name="../evil")
    assert remove_index(home, "small", db_url=_DB_URL) and not remove_index(home, "small", db_url=_DB_URL)
    assert [i.name for i in list_indexes(home, db_url=_DB_URL)] == ["default"]
    assert not (home / "indexes" / "small.faiss").exists()
    with open_store(home) as store:
        assert store.ntotal == 6  # the other index's removal left this one alone


def test_walk_videos(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    files = ["b.mp4", "a.MKV", "sub/c.webm", "sub/deeper/d.ts", "z/e.avi", "notes.txt", ".hidden.mp4", ".git/f.mp4"]
    for rel in [*files, "sub/.thumbs/g.mov"]:
        make_file(root / rel)
    os.symlink(root / "sub", root / "z" / "link_to_sub")  # a second way to the same folder
    os.symlink(root, root / "sub" / "loop")  # a loop
    os.symlink(root / "b.mp4", root / "z" / "b_link.mp4")  # a second way to the same file
    os.symlink(root / "missing.mp4", root / "broken.mp4")
    got = [os.path.relpath(p, root) for p in walk_videos([root])]
    assert got == ["a.MKV", "b.mp4", "sub/c.webm", "sub/deeper/d.ts", "z/e.avi"]
    assert list(walk_videos([root])) == list(walk_videos([str(root)]))  # deterministic, str or Path
    # files given directly are taken whatever their extension; each file once, the loop followed once
    direct = [os.path.relpath(p, root) for p in walk_videos([root / "notes.txt", root / "b.mp4", root / "sub"])]
    assert direct == ["notes.txt", "b.mp4", "sub/c.webm", "sub/deeper/d.ts", "sub/loop/a.MKV", "sub/loop/z/e.avi"]
    assert [os.path.basename(p) for p in walk_videos([root], extensions=["txt"])] == ["notes.txt"]
    with pytest.raises(ConfigError, match="does not exist"):
        list(walk_videos([root / "nope"]))
    assert list(walk_videos([root / "nope"], missing_ok=True)) == []
    # through a symlinked root, paths keep the name they were reached by
    os.symlink(root, tmp_path / "alias")
    assert list(walk_videos([tmp_path / "alias"]))[0] == str(tmp_path / "alias" / "a.MKV")


@linux_only
def test_walk_videos_non_utf8(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    names = [b"\xff\xfe.mp4", b"caf\xe9.mkv", b"plain.mp4"]
    for name in names:
        make_file(base + b"/" + name)
    got = [os.fsencode(p) for p in walk_videos([tmp_path])]
    assert got == [base + b"/" + n for n in sorted(names)]
    assert all(os.path.exists(p) for p in walk_videos([base]))
