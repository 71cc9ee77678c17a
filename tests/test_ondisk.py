"""Out-of-core IVF index built from the catalog (vtr.index.ondisk): exact at full nprobe, shards, footprint, and
ids resolved through the catalog (SQLite and PostgreSQL); searching through it never opens the in-memory FAISS
file; an ``ondisk:`` index keeps no FAISS file at all."""

from __future__ import annotations

import builtins
import json
import logging
from pathlib import Path

import faiss
import numpy as np
import pytest
from test_store import info, make_file

from vtr.errors import ConfigError
from vtr.index.ondisk import OnDiskIndex, build_ondisk_from_catalog, ondisk_path, search_with_catalog
from vtr.index.store import LibraryStore, VideoEntry, remove_index
from vtr.index.vector_index import normalize
from vtr.library import Library

DIM = 16


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request) -> str | None:
    """The catalog: None (SQLite in the home) or a fresh PostgreSQL database."""
    return request.getfixturevalue("pg_url") if request.param == "postgresql" else None


@pytest.fixture
def store(url, tmp_path: Path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, DIM))
    s = LibraryStore.open(tmp_path / "home", model_name="m", dim=DIM, device="cpu", db_url=url)
    entries = []
    for v in range(300):  # 300 videos x 10 segments, clustered like real embeddings
        path = make_file(tmp_path / "videos" / f"v{v:03d}.mp4")
        x = normalize(centres[rng.integers(0, 20, 10)] + 0.5 * rng.standard_normal((10, DIM)))
        entries.append(VideoEntry(info(path, 10.0), [(float(j), float(j + 1)) for j in range(10)], x))
    for i in range(0, len(entries), 50):
        s.add_videos(entries[i:i + 50])
    yield s
    s.close()


def test_ondisk_ivf_flat_at_full_nprobe_is_exact(store, tmp_path: Path) -> None:
    built = build_ondisk_from_catalog(store, "IVF16,Flat", train_size=1000, shard_size=700)
    assert (built.ntotal, built.shards, built.nlist) == (3000, 5, 16)
    assert 0 < built.train_size <= 1000 + 16  # every (3000 // 1000)-th vector id
    folder = ondisk_path(store.home, store.name)
    assert json.loads((folder / "meta.json").read_text())["ntotal"] == 3000
    assert not list(folder.glob("shard_*")) and not list(folder.parent.glob(".default.ondisk.*"))
    ondisk = OnDiskIndex(folder, nprobe=16)
    q = normalize(np.random.default_rng(1).standard_normal((20, DIM)))
    want = store.search(q, 10, exact=True)  # the in-memory Flat index
    got = search_with_catalog(store, ondisk, q, 10)
    assert [[h.vector_id for h in row] for row in got] == [[h.vector_id for h in row] for row in want]
    np.testing.assert_allclose([[h.score for h in r] for r in got], [[h.score for h in r] for r in want], atol=1e-5)
    fp = ondisk.footprint()
    assert fp["disk_bytes"] >= 3000 * (DIM * 4 + 8) and 0 < fp["ram_bytes"] < fp["disk_bytes"] / 10
    # a video removed after the build is never returned (its ids are gone from the catalog)
    gone = want[0][0].video_path
    store.remove_video(gone)
    assert all(h.video_path != gone for h in search_with_catalog(store, ondisk, q, 10)[0])


def test_ondisk_sq8_recall_and_rebuild_replaces(store) -> None:
    build_ondisk_from_catalog(store, "IVF16,SQ8", train_size=2000, shard_size=1000)
    ondisk = OnDiskIndex(ondisk_path(store.home, store.name), nprobe=4)
    q = normalize(np.random.default_rng(2).standard_normal((50, DIM)))
    want = [{h.vector_id for h in row} for row in store.search(q, 10, exact=True)]
    got = [{h.vector_id for h in row} for row in search_with_catalog(store, ondisk, q, 10)]
    assert np.mean([len(a & b) / 10 for a, b in zip(got, want, strict=True)]) >= 0.9
    rebuilt = build_ondisk_from_catalog(store, "IVF8,Flat", train_size=500)
    assert rebuilt.nlist == 8 and OnDiskIndex(ondisk_path(store.home, store.name)).info.factory == "IVF8,Flat"


def test_factories_that_cannot_live_on_disk(store) -> None:
    for factory in ("Flat", "IVF16,PQ4x4fs", "IVF16,SQ8,RFlat", "HNSW8"):
        with pytest.raises(ConfigError, match="on disk"):
            build_ondisk_from_catalog(store, factory)
    with pytest.raises(ConfigError, match="fewer lists"):
        build_ondisk_from_catalog(store, "IVF1024,Flat", train_size=500)


def ranked(rows) -> list[list[tuple[int, int]]]:
    return [[(h.rank, h.vector_id) for h in row] for row in rows]


def test_searching_through_the_ondisk_build_never_opens_the_faiss_file(store, url, monkeypatch) -> None:
    store.flush()
    assert store.faiss_path.exists()  # the in-memory index of the Flat library, with every vector
    q = normalize(np.random.default_rng(3).standard_normal((8, DIM)))
    with Library(home=store.home, db_url=url, exact=True) as exact:
        want = exact.search_vectors(q, 10, all_windows=True)
    Library(home=store.home, db_url=url).build_ondisk("IVF16,Flat", train_size=1000, shard_size=1000)
    opened: list[Path] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        if str(file).endswith(".faiss"):
            opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    with Library(home=store.home, db_url=url, nprobe=16) as lib:  # nprobe = nlist: every list, exact codes
        got = lib.search_vectors(q, 10, all_windows=True)
        status = lib.status()
        assert not lib.store.loaded
    assert opened == []
    assert ranked(got) == ranked(want)
    np.testing.assert_allclose([[h.score for h in r] for r in got], [[h.score for h in r] for r in want], atol=1e-5)
    assert (status["searched_by"], status["faiss_vectors"], status["vectors"]) == ("ondisk", None, 3000)
    assert status["ondisk"]["current"] and status["ondisk"]["ntotal"] == 3000 and status["ondisk"]["nprobe"] == 16
    assert 0 < status["ondisk"]["ram_bytes"] < status["ondisk"]["disk_bytes"] / 10
    with Library(home=store.home, db_url=url, exact=True) as lib:  # asked for: the in-memory index is read
        assert ranked(lib.search_vectors(q, 10, all_windows=True)) == ranked(want)
        assert lib.store.loaded and lib.status()["searched_by"] == "faiss"
    assert opened and set(opened) == {store.faiss_path}


def test_an_ondisk_only_index_keeps_no_faiss_file(url, tmp_path: Path, caplog) -> None:
    home, indexes = tmp_path / "home", tmp_path / "home" / "indexes"
    rng = np.random.default_rng(4)
    entries = []
    for v in range(60):
        path = make_file(tmp_path / "videos" / f"v{v:02d}.mp4")
        entries.append(VideoEntry(info(path, 10.0), [(float(j), float(j + 1)) for j in range(10)],
                                  normalize(rng.standard_normal((10, DIM)))))
    kw = {"model_name": "m", "dim": DIM, "device": "cpu", "db_url": url}
    with LibraryStore.open(home, factory="ondisk:IVF8,Flat", **kw) as writer:
        assert not writer.ram_index
        for i in range(0, 60, 20):
            writer.add_videos(entries[i:i + 20])
        writer.remove_video(entries[0].info.path)
        assert writer.flush() is None
    assert not list(indexes.glob("*faiss*")) and not list(indexes.glob(".*faiss*"))

    q = normalize(rng.standard_normal((6, DIM)))
    with Library(home=home, db_url=url, nprobe=8) as lib:
        with pytest.raises(ConfigError, match="vtr index ondisk"):
            lib.search_vectors(q, 5)
        built = lib.build_ondisk(train_size=1000)  # the factory the index records
        assert (built["factory"], built["ntotal"]) == ("IVF8,Flat", 590)
        got = lib.search_vectors(q, 10, all_windows=True)
        status = lib.status()
    with LibraryStore.open(home, read_only=True, lazy=True, db_url=url) as reader:
        ids = np.concatenate([np.arange(10) + (reader.index_id << 40) + 10 * v for v in range(1, 60)])
        scores = q @ reader.get_embeddings(ids).T  # exact inner products over what the catalog holds
    want = [[int(ids[j]) for j in np.argsort(-row)[:10]] for row in scores]
    assert [[h.vector_id for h in row] for row in got] == want
    np.testing.assert_allclose([[h.score for h in row] for row in got], np.sort(scores)[:, ::-1][:, :10], atol=1e-5)
    assert status["factory"] == "ondisk:IVF8,Flat" and status["searched_by"] == "ondisk"
    assert (status["faiss_ram_bytes"], status["faiss_bytes"], status["faiss_vectors"]) == (0, None, None)
    assert status["ondisk"]["disk_bytes"] >= 590 * (DIM * 4 + 8) and status["ondisk"]["ram_bytes"] > 0
    with pytest.raises(ConfigError, match="no in-memory"):
        Library(home=home, db_url=url, exact=True).search_vectors(q, 1)

    # a video added after the build is committed to the catalog, and found once the build is redone
    target = make_file(tmp_path / "videos" / "new.mp4")
    with LibraryStore.open(home, **kw) as writer:
        writer.add_video(info(target, 1.0), [(0.0, 1.0)], q[:1])
    with Library(home=home, db_url=url, nprobe=8) as lib, caplog.at_level(logging.WARNING):
        assert target not in {h.path for h in lib.search_vectors(q[:1], 3)[0]}
        assert "older catalog state" in caplog.text and not lib.status()["ondisk"]["current"]
        lib.build_ondisk()
        best = lib.search_vectors(q[:1], 1)[0][0]  # the new build is picked up by the open library
        assert best.path == target and best.score == pytest.approx(1.0, abs=1e-5)
    assert not list(indexes.glob("*faiss*")) and not list(indexes.glob(".*faiss*"))

    # the catalog is the truth: an in-memory factory rebuilds the FAISS file from it; ondisk: deletes it again
    with LibraryStore.open(home, factory="Flat", **kw) as writer:
        assert writer.ram_index and writer.ntotal == 591 and writer.last_check.rebuilt
    assert (indexes / "default.faiss").exists()
    with LibraryStore.open(home, factory="ondisk:IVF8,Flat", **kw) as writer:
        assert not writer.ram_index
    assert not (indexes / "default.faiss").exists() and (indexes / "default.ondisk").exists()
    assert remove_index(home, db_url=url) and not (indexes / "default.ondisk").exists()
