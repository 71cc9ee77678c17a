"""Out-of-core IVF index built from the catalog (vtr.index.ondisk): exact at full nprobe, shards, footprint, and
ids resolved through the catalog (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from test_store import info, make_file

from vtr.errors import ConfigError
from vtr.index.ondisk import OnDiskIndex, build_ondisk_from_catalog, ondisk_path, search_with_catalog
from vtr.index.store import LibraryStore, VideoEntry
from vtr.index.vector_index import normalize

DIM = 16


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path: Path):
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
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
    want = store.search(q, 10)
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
    want = [{h.vector_id for h in row} for row in store.search(q, 10)]
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
