"""VectorIndex (FAISS wrapper) and torch_search: exactness, removal, auto-training, crash-safe persistence."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from vtr.index import vector_index as vi_mod
from vtr.index.vector_index import IndexCorruptError, VectorIndex, normalize, torch_search

DIM = 32


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _data(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _brute(db: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = normalize(queries) @ normalize(db).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), ids[order]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_blas_threshold_is_lowered() -> None:
    VectorIndex(DIM)
    assert faiss.cvar.distance_compute_blas_threshold == vi_mod.BLAS_THRESHOLD <= 20


def test_flat_equals_numpy_brute_force() -> None:
    db, queries = _data(600), _data(40, seed=1)
    ids = np.arange(1000, 1600, dtype=np.int64)
    index = VectorIndex(DIM)
    index.add(db * 3.0, ids)  # scale does not matter: vectors are normalised
    scores, found = index.search(queries, 10)
    want_scores, want_ids = _brute(db, ids, queries, 10)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert index.ntotal == 600 and not index.pending and index.is_trained
    # one query as a vector; k larger than the index pads with -1 / -inf
    small = VectorIndex(DIM)
    small.add(db[:3], [7, 8, 9])
    s, i = small.search(queries[0], 5)
    assert s.shape == (1, 5) and list(i[0, 3:]) == [-1, -1] and np.isneginf(s[0, 3:]).all()
    assert set(i[0, :3]) == {7, 8, 9}


def test_remove_ids() -> None:
    db = _data(200)
    index = VectorIndex(DIM)
    index.add(db, np.arange(200))
    gone = np.arange(0, 200, 3)
    assert index.remove_ids(np.concatenate([gone, [5000]])) == len(gone)
    assert index.ntotal == 200 - len(gone)
    assert not set(index.ids()) & set(gone)
    _, found = index.search(db[gone], 5)
    assert not set(found.ravel()) & set(gone)
    assert index.remove_ids(gone) == 0  # already gone


def test_hnsw_removal_and_save(tmp_path: Path) -> None:
    db = _data(500)
    index = VectorIndex(DIM, "HNSW16")
    index.add(db, np.arange(500))
    assert index.remove_ids([0, 1, 2]) == 3 and index.ntotal == 497  # HNSW cannot remove: hidden until compaction
    _, found = index.search(db[:3], 1)
    assert not set(found.ravel()) & {0, 1, 2}
    index.save(tmp_path / "h.faiss")  # compacts
    loaded = VectorIndex.load(tmp_path / "h.faiss", factory="HNSW16")
    assert loaded.ntotal == 497 and not {0, 1, 2} & set(loaded.ids())
    _, found = loaded.search(db[3:50], 1)
    assert _recall(found, np.arange(3, 50)[:, None]) >= 0.95


def test_ivfpq_pending_buffer_then_auto_training() -> None:
    factory = "IVF8,PQ16x4"
    db, queries = _data(3000), _data(50, seed=1)
    ids = np.arange(3000, dtype=np.int64)
    index = VectorIndex(DIM, factory)
    assert index.needs_training and index.train_threshold == 39 * 16  # 16 PQ centroids > 8 lists
    index.add(db[:400], ids[:400])
    assert index.pending and not index.is_trained and index.ntotal == 400
    scores, found = index.search(queries, 10)  # the pending buffer is searched exactly
    want_scores, want_ids = _brute(db[:400], ids[:400], queries, 10)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert index.remove_ids([0, 1]) == 2

    index.add(db[400:], ids[400:])  # crosses the threshold: trains on everything held, then converts
    assert not index.pending and index.is_trained and index.ntotal == 2998
    assert isinstance(index._inner(), faiss.IndexIVFPQ)
    _, found = index.search(queries, 10)
    _, truth = _brute(db[2:], ids[2:], queries, 10)
    recall = _recall(found, truth)
    print(f"IVF8,PQ16x4 recall@10 vs exact on random {DIM}-d data: {recall:.3f}")
    assert recall >= 0.35
    assert not {0, 1} & set(found.ravel())
    assert index.remove_ids(ids[2:100]) == 98 and index.ntotal == 2900  # IVF removes in place
    _, self_found = index.search(db[100:150], 10)
    assert np.mean([i in row for i, row in zip(ids[100:150], self_found, strict=True)]) >= 0.9


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _vtr_vectors(n: int, nq: int, seed: int = 0, feat: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors and text queries made as vtr.index.vectors makes them (as in benchmarks/search_speed.py).

    A video is 4 frame features around a direction drawn from 200 topics; it is stored as
    ``[m, sqrt(1 - |m|^2), 0 x 63]`` (576-d), a query as ``[q, 0 x 64]`` with ``q`` near one video's direction.
    """
    from vtr.index.vectors import index_vectors, query_vectors

    rng = np.random.default_rng(seed)
    common, gap, topics = _unit(rng, (feat,)), _unit(rng, (feat,)), _unit(rng, (200, feat))
    v = 0.5 * common + 0.7 * topics[rng.integers(0, 200, n)] + 0.6 * _unit(rng, (n, feat))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    frames = v[:, None, :] + rng.uniform(0.4, 1.2, (n, 1, 1)).astype(np.float32) * _unit(rng, (n, 4, feat))
    text = v[rng.integers(0, n, nq)] + 0.8 * _unit(rng, (nq, feat)) + 0.5 * gap
    return index_vectors(torch.from_numpy(frames)), query_vectors(torch.from_numpy(text))


def test_default_ivf_recall_on_vtr_vectors() -> None:
    """The recommended refined IVF-PQ at vtr's default search parameters finds >= 95% of the exact top 10.

    Measured on these 4000 vectors (fixed seed, one thread): 0.998 at the defaults (nprobe 16, k_factor 64);
    0.74 with faiss's own k_factor of 1 (before, vtr left it there; it also could not add to a refined index);
    plain PQ codes 0.73 at the old default nprobe of 8 and 0.745 with every list searched, so the codes, not
    nprobe, cap recall. 0.95 sits well between, with room for k-means differing across platforms.
    """
    db, queries = _vtr_vectors(4000, 200)
    ids = np.arange(4000, dtype=np.int64)
    _, truth = _brute(db, ids, queries, 10)
    factory = vi_mod.RECOMMENDED_IVF_FACTORY.replace("IVF1024", "IVF64")  # nlist sized for 4000 vectors
    index = VectorIndex(db.shape[1], factory)
    index.add(db, ids)  # 4000 >= 39 * 64: trained on the way in
    assert not index.pending and isinstance(index._inner(), faiss.IndexRefineFlat)
    assert index.search_params() == {"nprobe": 16, "k_factor": vi_mod.DEFAULT_REFINE_K_FACTOR}
    recall = _recall(index.search(queries, 10)[1], truth)

    plain = VectorIndex(db.shape[1], "IVF64,PQ64x4fs", nprobe=8)  # the codes alone, at the old default nprobe
    plain.add(db, ids)
    plain_recall = _recall(plain.search(queries, 10)[1], truth)
    plain.nprobe = 64  # every list: exact up to PQ error
    all_lists_recall = _recall(plain.search(queries, 10)[1], truth)
    print(f"recall@10 refined {recall:.3f}, PQ codes {plain_recall:.3f} ({all_lists_recall:.3f} with all lists)")
    assert recall >= 0.95
    assert plain_recall < 0.8 and all_lists_recall < 0.8


def test_nprobe_override_takes_effect(tmp_path: Path) -> None:
    db = _data(3000)
    ids = np.arange(3000, dtype=np.int64)
    queries = _data(100, seed=1)
    _, truth = _brute(db, ids, queries, 10)
    with pytest.raises(ValueError, match="nprobe"):
        VectorIndex(DIM, "IVF64,Flat", nprobe=0)

    index = VectorIndex(DIM, "IVF64,Flat", nprobe=1)
    index.add(db[:100], ids[:100])  # pending: exact, no IVF yet
    assert index.pending and index.search_params() == {} and index.nprobe == 1
    index.add(db[100:], ids[100:])  # trained: the override survives the conversion
    assert not index.pending and index.search_params() == {"nprobe": 1}
    one = _recall(index.search(queries, 10)[1], truth)
    index.nprobe = None
    assert index.search_params() == {"nprobe": vi_mod.default_nprobe(64)} == {"nprobe": 16}
    default = _recall(index.search(queries, 10)[1], truth)
    index.nprobe = 64  # all lists of an IVF-Flat index: exact
    np.testing.assert_array_equal(index.search(queries, 10)[1], truth)
    print(f"IVF64,Flat recall@10 on random {DIM}-d data: nprobe 1 {one:.3f}, default {default:.3f}")
    assert one < default < 1.0

    checksum = index.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss", checksum, factory="IVF64,Flat", nprobe=2)
    assert loaded.search_params() == {"nprobe": 2}


def test_refined_index_removes_without_retraining(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    factory = "IVF16,PQ8x4fs,RFlat"
    db = _data(1000)
    ids = np.arange(1000, dtype=np.int64) + 7
    index = VectorIndex(DIM, factory, k_factor=32)
    index.add(db, ids)
    assert not index.pending and index.search_params() == {"nprobe": 16, "k_factor": 32}
    centroids = faiss.extract_index_ivf(index._inner()).quantizer.reconstruct_n(0, 16)
    # the refinement has no remove_ids: removed ids are hidden, then dropped when saving (no retraining)
    assert index.remove_ids(ids[:10]) == 10 and index.ntotal == 990
    _, found = index.search(db[:20], 5)
    assert not set(found.ravel()) & set(ids[:10])
    np.testing.assert_array_equal(found[10:, 0], ids[10:20])  # exact re-ranking puts each vector first
    checksum = index.save(tmp_path / "r.faiss")
    assert not index._tombstones and index.ntotal == 990
    np.testing.assert_array_equal(faiss.extract_index_ivf(index._inner()).quantizer.reconstruct_n(0, 16), centroids)

    loaded = VectorIndex.load(tmp_path / "r.faiss", checksum)  # factory read from the file
    assert loaded.factory == factory and not loaded.pending and sorted(loaded.ids()) == list(ids[10:])
    _, found = loaded.search(db[10:60], 1)
    np.testing.assert_array_equal(found[:, 0], ids[10:60])

    with caplog.at_level("WARNING", logger=vi_mod.__name__):
        VectorIndex(DIM, "IVF5,PQ8x4")  # PQ codes without refinement: warned about, once
        VectorIndex(DIM, "IVF5,PQ8x4")
    assert sum("RFlat" in r.getMessage() for r in caplog.records) == 1


def test_pending_buffer_survives_save_load(tmp_path: Path) -> None:
    db = _data(800)
    index = VectorIndex(DIM, "IVF4,Flat")  # threshold 156
    index.add(db[:100], np.arange(100))
    assert index.pending
    checksum = index.save(tmp_path / "p.faiss")
    loaded = VectorIndex.load(tmp_path / "p.faiss", checksum, factory="IVF4,Flat")
    assert loaded.pending and loaded.ntotal == 100
    loaded.add(db[100:], np.arange(100, 800))
    assert not loaded.pending and loaded.ntotal == 800
    # a trained IVF index (ids held in its inverted lists) round-trips too, removal included
    checksum = loaded.save(tmp_path / "t.faiss")
    again = VectorIndex.load(tmp_path / "t.faiss", checksum, factory="IVF4,Flat")
    assert not again.pending and sorted(again.ids()) == list(range(800))
    assert again.remove_ids(np.arange(0, 800, 2)) == 400
    _, found = again.search(db[1:200:2], 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(1, 200, 2))


def test_invalid_factory_and_threshold() -> None:
    with pytest.raises(ValueError, match="factory"):
        VectorIndex(DIM, "NotAFactory")
    with pytest.raises(ValueError, match="train_threshold"):
        VectorIndex(DIM, "IVF64,Flat", train_threshold=10)
    with pytest.raises(ValueError, match="width"):
        VectorIndex(DIM).add(_data(2, dim=DIM + 1), [1, 2])


def test_save_load_round_trip_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, queries = _data(300), _data(10, seed=1)
    index = VectorIndex(DIM)
    index.add(db, np.arange(300) * 7)
    path = tmp_path / "sub" / "a.faiss"
    checksum = index.save(path)
    assert checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert os.listdir(path.parent) == ["a.faiss"]  # no temp file left
    loaded = VectorIndex.load(path, checksum)
    assert loaded.factory == "Flat" and loaded.ntotal == 300
    for a, b in zip(index.search(queries, 5), loaded.search(queries, 5), strict=True):
        np.testing.assert_array_equal(a, b)

    # a crash while writing leaves the previous file untouched and no temp file
    bigger = VectorIndex(DIM)
    bigger.add(_data(500, seed=2), np.arange(500))

    real = faiss.write_index

    def dying_write(index, writer):
        real(index, writer)  # the temp file gets the bytes, then the process "dies" before the rename
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(faiss, "write_index", dying_write)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(path)
    monkeypatch.undo()
    assert os.listdir(path.parent) == ["a.faiss"]
    assert VectorIndex.load(path, checksum).ntotal == 300


def test_corrupt_files_are_detected(tmp_path: Path) -> None:
    index = VectorIndex(DIM)
    index.add(_data(100), np.arange(100))
    path = tmp_path / "c.faiss"
    checksum = index.save(path)
    good = path.read_bytes()

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # inside the vector data: FAISS reads it fine, the checksum does not match
    path.write_bytes(bytes(flipped))
    VectorIndex.load(path)  # without a checksum nothing can tell
    with pytest.raises(IndexCorruptError, match="checksum"):
        VectorIndex.load(path, checksum)

    for size in (len(good) - 10, len(good) // 2, 20, 0):
        path.write_bytes(good[:size])
        with pytest.raises(IndexCorruptError, match="cannot read"):
            VectorIndex.load(path)
    path.write_bytes(b"XXXX" + good[4:])
    with pytest.raises(IndexCorruptError):
        VectorIndex.load(path)
    with pytest.raises(IndexCorruptError, match="missing"):
        VectorIndex.load(tmp_path / "nope.faiss")
    path.write_bytes(good + b"trailing")
    with pytest.raises(IndexCorruptError, match="checksum"):
        VectorIndex.load(path, checksum)
    path.write_bytes(good)
    assert VectorIndex.load(path, checksum).ntotal == 100

    other = VectorIndex(DIM, "HNSW8")
    other.add(_data(10), np.arange(10))
    other.save(path)
    with pytest.raises(IndexCorruptError, match="Flat"):  # not the kind the caller expects
        VectorIndex.load(path, factory="Flat")


@pytest.mark.parametrize(("n", "tile"), [(500, 37), (500, 500), (64, 1000)])
def test_torch_search_equals_faiss_flat(n: int, tile: int) -> None:
    db = torch.from_numpy(normalize(_data(n))).to(torch.float16)
    queries = torch.from_numpy(normalize(_data(20, seed=1)))
    k = 10
    scores, pos = torch_search(db, queries, k, tile=tile)
    assert scores.dtype == torch.float32 and pos.dtype == torch.int64 and scores.shape == (20, k)

    flat = faiss.IndexFlatIP(DIM)
    flat.add(db.float().numpy())  # the same fp16-rounded vectors
    want_s, want_i = flat.search(queries.numpy(), k)
    np.testing.assert_allclose(scores.numpy(), want_s, atol=1e-5)
    # ties aside, the same rows: the score of each returned row, recomputed, matches faiss's ranking
    got = pos.numpy()
    recomputed = np.take_along_axis(queries.numpy() @ db.float().numpy().T, got, 1)
    np.testing.assert_allclose(recomputed, want_s, atol=1e-5)
    distinct = np.abs(np.diff(want_s, axis=1)).min(axis=1) > 1e-6
    np.testing.assert_array_equal(got[distinct], want_i[distinct])
    assert (np.diff(scores.numpy(), axis=1) <= 1e-7).all()  # sorted, best first


def test_torch_search_pads_and_vector_index_torch_path() -> None:
    db = torch.from_numpy(normalize(_data(3))).half()
    scores, pos = torch_search(db, torch.from_numpy(_data(2, seed=1)), 5, tile=2)
    assert (pos[:, 3:] == -1).all() and torch.isinf(scores[:, 3:]).all()
    assert sorted(pos[0, :3].tolist()) == [0, 1, 2]

    index = VectorIndex(DIM)
    data = _data(300)
    index.add(data, np.arange(300) + 50)
    queries = normalize(_data(8, seed=3))
    s_faiss, i_faiss = index.search(queries, 5)
    s_torch, i_torch = index._search_torch(queries, 5, "cpu")  # what runs on CUDA without faiss-gpu
    np.testing.assert_allclose(s_torch, s_faiss, atol=2e-3)  # fp16 copy
    assert _recall(i_torch, i_faiss) >= 0.95


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_search_on_cuda() -> None:
    """fp16 tiles on the GPU agree with the CPU; VectorIndex(device="cuda") without faiss-gpu searches through it."""
    db, queries = normalize(_data(5000)), normalize(_data(64, seed=1))
    half = torch.from_numpy(db).half()
    s_cpu, i_cpu = torch_search(half, torch.from_numpy(queries), 10, tile=999)
    s_gpu, i_gpu = torch_search(half.cuda(), torch.from_numpy(queries).cuda(), 10, tile=999)
    assert s_gpu.device.type == "cuda" and s_gpu.dtype == torch.float32
    np.testing.assert_allclose(s_gpu.cpu().numpy(), s_cpu.numpy(), atol=3e-3)  # fp16 products on the GPU
    assert _recall(i_gpu.cpu().numpy(), i_cpu.numpy()) >= 0.95

    ids = np.arange(5000, dtype=np.int64) * 3
    exact = VectorIndex(DIM)
    exact.add(db, ids)
    on_gpu = VectorIndex(DIM, device="cuda")
    on_gpu.add(db, ids)
    s_ref, i_ref = exact.search(queries, 10)
    s, i = on_gpu.search(queries, 10)
    np.testing.assert_allclose(s, s_ref, atol=3e-3)
    assert _recall(i, i_ref) >= 0.95
    if not vi_mod.faiss_gpu_available():
        assert on_gpu._torch_db is not None and on_gpu._torch_db[0].device.type == "cuda"

