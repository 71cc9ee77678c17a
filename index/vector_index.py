"""FAISS vector index over L2-normalised float32 embeddings (inner product = cosine similarity).

:class:`VectorIndex` wraps ``faiss.IndexIDMap2`` over ``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)``
so vectors carry vtr's own int64 ids (IVF indexes keep the ids in their inverted lists instead: with an
``IndexIDMap2`` around them, ``remove_ids`` renumbers the map but not the lists, and ids get mixed up).
``"Flat"`` (exact) is the default. For large libraries of vtr's 576-d vectors :data:`RECOMMENDED_IVF_FACTORY`
(``IVF1024,PQ64x4fs,RFlat``: 4-bit fast-scan PQ codes shortlist ``k_factor * k`` candidates, which are re-ranked
with the exact vectors) gives recall@10 0.98 against Flat at 100k and 1M vectors in about 1 ms a query on one
core (Flat: 310 ms at 1M), keeping the exact vectors in memory too; ``HNSW{M}`` also suits. Plain PQ without
``,RFlat`` caps recall whatever ``nprobe`` is (recall@10 0.74 at 100k and 0.43 at 1M for ``IVF1024,PQ64``; see
``benchmarks/search_speed.py``), so vtr logs a warning for it. Search knobs go through
``faiss.ParameterSpace``: ``nprobe`` (IVF), ``k_factor_rf`` (refinement), ``efSearch`` (HNSW). A factory that
needs training starts as an exact flat index (the *pending buffer*, searched by brute force, so nothing is
ever missed) and is trained and converted automatically once it holds ``train_threshold`` vectors.

Persistence is crash-safe: :meth:`VectorIndex.save` writes a temporary file in the same folder, fsyncs it,
renames it over the target (atomic) and fsyncs the folder, returning the file's sha256;
:meth:`VectorIndex.load` raises :class:`IndexCorruptError` for a file FAISS cannot read or whose checksum
differs from the expected one.

:func:`torch_search` is an exact tiled brute-force search in torch, which vtr uses on CUDA when faiss-gpu is
not installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from vtr.errors import IndexCorruptError
from vtr.index.durable import atomic_replace
from vtr.runtime import resolve_device

__all__ = ["IndexCorruptError", "VectorIndex", "normalize", "torch_search"]

log = logging.getLogger(__name__)

DEFAULT_FACTORY = "Flat"
# faiss-cpu 1.15.1 switches from its own SIMD loops to BLAS only for >= 128000 queries at once by default,
# which makes batched queries of 10-100 3-13x slower; BLAS wins from a few dozen queries on.
BLAS_THRESHOLD = 20
# k-means wants about this many training points per centroid (faiss warns below 39).
POINTS_PER_CENTROID = 39
DEFAULT_HNSW_EF_SEARCH = 64
# IndexRefine shortlist: k_factor * k candidates from the codes are re-scored exactly (faiss's default, 1,
# re-ranks only the k it found and gains no recall). With 4-bit PQ64 codes of 576-d vtr vectors recall@10 at
# 1M vectors is 0.88 / 0.97 / 0.98 for k_factor 16 / 32 / 64 (benchmarks/search_speed.py), +0.3 ms a query.
DEFAULT_REFINE_K_FACTOR = 64
# IVF lists searched by default: 1/16 of them, at least this many (cheap: small nlist means a small index).
MIN_DEFAULT_NPROBE = 16
RECOMMENDED_IVF_FACTORY = "IVF1024,PQ64x4fs,RFlat"
# torch_search's default tile: about this many scores (Q x rows) at once (64 Mi float32 = 256 MiB).
TORCH_TILE_SCORES = 1 << 26


_tuned = False


def tune_faiss() -> None:
    """Process-wide FAISS settings vtr relies on (idempotent)."""
    global _tuned
    if not _tuned:
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        _tuned = True


def faiss_gpu_available() -> bool:
    """True when the installed FAISS has GPU support and sees a GPU."""
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - defensive: odd builds
        return False


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as C-contiguous float32 (all-zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True, ndmin=2)
    if x.ndim != 2:
        raise ValueError(f"expected a [N, D] array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _unwrap(index: Any) -> Any:
    """The innermost index of pre-transforms / id maps / refinements, downcast."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform | faiss.IndexIDMap | faiss.IndexIDMap2 | faiss.IndexRefine):
        index = faiss.downcast_index(index.base_index if isinstance(index, faiss.IndexRefine) else index.index)
    return index


def _refine_of(index: Any) -> Any:
    """The ``IndexRefine`` a factory index is (``,RFlat`` puts it outermost), or None."""
    index = _inner_of(index)
    return index if isinstance(index, faiss.IndexRefine) else None


def default_nprobe(nlist: int) -> int:
    """vtr's default IVF ``nprobe``: 1/16 of the lists, at least :data:`MIN_DEFAULT_NPROBE`, at most ``nlist``."""
    return min(nlist, max(MIN_DEFAULT_NPROBE, nlist // 16))


def _inner_of(index: Any) -> Any:
    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        return faiss.downcast_index(index.index)
    return faiss.downcast_index(index)


def _ids_of(index: Any) -> np.ndarray:
    """The external ids ``index`` holds: an id map's, or those in an IVF index's inverted lists."""
    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    from faiss.contrib.inspect_tools import get_invlist

    ivf = faiss.extract_index_ivf(index)
    parts = [get_invlist(ivf.invlists, list_no)[0] for list_no in range(int(ivf.nlist))
             if ivf.invlists.list_size(list_no)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def train_threshold_for(index: Any) -> int:
    """How many vectors to collect before training ``index`` (0 when it needs no training)."""
    if index.is_trained:
        return 0
    need = 256 * POINTS_PER_CENTROID  # unknown trainable kind: a generous default
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        need = POINTS_PER_CENTROID * int(ivf.nlist)
        inner = faiss.downcast_index(ivf)
    else:
        inner = _unwrap(index)
    pq = getattr(inner, "pq", None)
    if pq is not None:
        need = max(need, POINTS_PER_CENTROID * int(pq.ksub))
    return need


def _min_train_points(index: Any) -> int:
    """The fewest vectors FAISS can train ``index`` on at all (one per centroid)."""
    need = 1
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        need = int(ivf.nlist)
        inner = faiss.downcast_index(ivf)
    else:
        inner = _unwrap(index)
    pq = getattr(inner, "pq", None)
    if pq is not None:
        need = max(need, int(pq.ksub))
    return need


def faiss_reason(exc: BaseException) -> str:
    """The human part of a FAISS C++ error ("could not parse index string X"), on one line."""
    text = " ".join(str(exc).split())
    text = re.split(r"\.(?:cpp|h):\d+: ", text)[-1]
    return re.sub(r"^Error: '.*?' failed: ", "", text)


class VectorIndex:
    """Inner-product search over L2-normalised float32 vectors with int64 ids.

    Parameters
    ----------
    dim: embedding width.
    factory: a ``faiss.index_factory`` string (``"Flat"``, ``"IVF1024,PQ32"``, ``"HNSW32"``, ...).
    device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when torch or FAISS sees a GPU). On CUDA, searches run
        on faiss-gpu when installed (and it takes the index kind), else flat indexes (and the pending buffer)
        on :func:`torch_search` over an fp16 copy, and other kinds on the CPU. Adds, removals and saves
        always work on the CPU index.
    nprobe: IVF lists visited per query (default :func:`default_nprobe`: ``clamp(nlist // 16, 16, nlist)``);
        settable later through the :attr:`nprobe` property.
    k_factor: for refined factories (``...,RFlat``), candidates re-ranked exactly per result (default
        :data:`DEFAULT_REFINE_K_FACTOR`).
    ef_search: HNSW ``efSearch`` (default 64, raised to ``k`` when needed).
    train_threshold: vectors to collect before training a trainable factory (default
        :func:`train_threshold_for`: 39 per IVF list and per PQ centroid).

    Vectors are normalised on :meth:`add` and queries on :meth:`search`. Not thread-safe.
    """

    def __init__(
        self,
        dim: int,
        factory: str = DEFAULT_FACTORY,
        *,
        device: str = "cpu",
        nprobe: int | None = None,
        k_factor: int | None = None,
        ef_search: int | None = None,
        train_threshold: int | None = None,
    ) -> None:
        tune_faiss()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        for name, value in (("nprobe", nprobe), ("k_factor", k_factor), ("ef_search", ef_search)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.dim = int(dim)
        self.factory = factory
        self._nprobe = nprobe
        self._k_factor = k_factor
        self.ef_search = ef_search
        try:
            probe = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except Exception as exc:  # faiss raises RuntimeError with a C++ trace
            raise ValueError(f"invalid FAISS factory string {factory!r} for dim {dim}: {faiss_reason(exc)}") from exc
        self._probe = probe  # an empty index of the factory's kind
        _warn_unrefined_pq(factory, probe)
        self.needs_training = not probe.is_trained
        self.train_threshold = 0
        if self.needs_training:
            minimum = _min_train_points(probe)
            if train_threshold is not None and train_threshold < minimum:
                raise ValueError(f"train_threshold must be >= {minimum} for {factory!r}, got {train_threshold}")
            self.train_threshold = train_threshold if train_threshold is not None else train_threshold_for(probe)
        self.device = _resolve_device(device)
        # While a trainable factory is untrained, vectors live in an exact flat index (the pending buffer).
        self._index = self._new_target() if not self.needs_training else self._new_flat()
        self._tombstones: set[int] = set()  # removed ids of indexes without remove_ids (HNSW)
        self._gpu_index: Any = None
        self._gpu_failed = False
        self._torch_db: Any = None
        self._configure()

    # ------------------------------------------------------------------ construction helpers

    def _new_flat(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_target(self) -> Any:
        index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.try_extract_index_ivf(index)
        inner = faiss.downcast_index(ivf) if ivf is not None else _unwrap(index)
        if hasattr(inner, "do_polysemous_training"):
            # Polysemous codes only serve Hamming pre-filtering, which vtr never enables, and training them
            # takes ~5x longer than the PQ itself (same as the factory suffix "np").
            inner.do_polysemous_training = False
        # IVF indexes store ids natively (and IndexIDMap2.remove_ids would desynchronise them, see above); a
        # refinement takes no ids (it looks its base's results up by position), so it gets the id map.
        return index if ivf is not None and _refine_of(index) is None else faiss.IndexIDMap2(index)

    def _inner(self) -> Any:
        """The index inside the id map (the index itself for IVF indexes, which hold their ids)."""
        return _inner_of(self._index)

    def _configure(self) -> None:
        """Apply the search parameters to the current index, through ``faiss.ParameterSpace``."""
        params = []
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            params.append(f"nprobe={int(self._nprobe or default_nprobe(int(ivf.nlist)))}")
        if _refine_of(self._index) is not None:
            params.append(f"k_factor_rf={int(self._k_factor or DEFAULT_REFINE_K_FACTOR)}")
        if isinstance(_unwrap(self._index), faiss.IndexHNSW):
            params.append(f"efSearch={int(self.ef_search or DEFAULT_HNSW_EF_SEARCH)}")
        if params:
            faiss.ParameterSpace().set_index_parameters(self._index, ",".join(params))

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (None: :func:`default_nprobe`); setting it takes effect at once."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"nprobe must be >= 1, got {value}")
        if value != self._nprobe:
            self._nprobe = value
            self._configure()
            self._changed()  # a GPU copy holds the old setting

    @property
    def k_factor(self) -> int | None:
        """Refinement shortlist per result (None: :data:`DEFAULT_REFINE_K_FACTOR`); takes effect at once."""
        return self._k_factor

    @k_factor.setter
    def k_factor(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"k_factor must be >= 1, got {value}")
        if value != self._k_factor:
            self._k_factor = value
            self._configure()
            self._changed()  # a GPU copy holds the old setting

    def search_params(self) -> dict[str, int]:
        """The search parameters in effect (``nprobe``, ``k_factor``, ``ef_search``, those that apply)."""
        out = {}
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            out["nprobe"] = int(ivf.nprobe)
        refine = _refine_of(self._index)
        if refine is not None:
            out["k_factor"] = int(refine.k_factor)
        hnsw = _unwrap(self._index)
        if isinstance(hnsw, faiss.IndexHNSW):
            out["ef_search"] = int(hnsw.hnsw.efSearch)
        return out

    def _mismatch(self, index: Any) -> str:
        """Why a loaded ``index`` is not one this object's factory makes ("" when it is)."""
        inner = _inner_of(index)
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            return "not an inner-product index"
        if isinstance(inner, faiss.IndexFlat) and (self.needs_training or isinstance(self._probe, faiss.IndexFlat)):
            return ""  # a flat index, or the pending buffer of a trainable one
        if type(inner) is not type(faiss.downcast_index(self._probe)):
            return f"holds a {type(inner).__name__}, not the {self.factory!r} index it should"
        return ""

    def _changed(self) -> None:
        self._gpu_index = None
        self._torch_db = None

    # ------------------------------------------------------------------ state

    @property
    def pending(self) -> bool:
        """True while a trainable factory is still untrained (vectors in the exact pending buffer)."""
        return self.needs_training and self._is_flat_buffer()

    def _is_flat_buffer(self) -> bool:
        return self.needs_training and isinstance(self._inner(), faiss.IndexFlat)

    @property
    def is_trained(self) -> bool:
        return not self.pending

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    def __len__(self) -> int:
        return self.ntotal

    def ids(self) -> np.ndarray:
        """The ids held, int64 (insertion order; removed ones excluded)."""
        ids = _ids_of(self._index)
        if self._tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self._tombstones, np.int64))]
        return ids

    # ------------------------------------------------------------------ writes

    def add(self, vectors: np.ndarray, ids: Any) -> None:
        """Add ``vectors`` ([N, dim], normalised here) under ``ids`` (int64, not already present)."""
        x = normalize(vectors)
        ids = _as_ids(ids)
        if x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of width {self.dim}, got {x.shape[1]}")
        if len(ids) != len(x):
            raise ValueError(f"{len(x)} vectors but {len(ids)} ids")
        if len(x) == 0:
            return
        if self._tombstones:
            back = [i for i in ids.tolist() if i in self._tombstones]
            if back:  # re-adding a removed id: purge the old copy first
                self._compact()
        self._index.add_with_ids(x, ids)
        self._changed()
        if self._is_flat_buffer() and self._index.ntotal >= self.train_threshold:
            self._train_from_buffer()

    def _buffer_contents(self) -> tuple[np.ndarray, np.ndarray]:
        flat = faiss.downcast_index(self._index.index)
        n = int(flat.ntotal)
        xb = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim).copy() if n else None
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return (xb if xb is not None else np.zeros((0, self.dim), np.float32)), ids

    def _train_from_buffer(self) -> None:
        xb, ids = self._buffer_contents()
        log.info("training FAISS %r on %d vectors", self.factory, len(xb))
        target = self._new_target()
        target.train(xb)
        target.add_with_ids(xb, ids)
        self._index = target
        self._configure()
        self._changed()

    def train_now(self) -> None:
        """Train the pending buffer now (needs at least one vector per centroid)."""
        if not self.pending:
            return
        need = _min_train_points(faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT))
        if self._index.ntotal < need:
            raise ValueError(f"{self.factory!r} needs at least {need} vectors to train, have {self._index.ntotal}")
        self._train_from_buffer()

    def remove_ids(self, ids: Any) -> int:
        """Remove ``ids``; returns how many were present."""
        ids = np.unique(_as_ids(ids))
        if len(ids) == 0 or self.ntotal == 0:
            return 0
        present = ids[np.isin(ids, self.ids())]
        if len(present) == 0:
            return 0
        try:
            self._index.remove_ids(present)
        except RuntimeError:  # e.g. HNSW: no removal; hide them until the next compaction
            self._tombstones.update(int(i) for i in present)
            if len(self._tombstones) > max(1000, self._index.ntotal // 10):
                self._compact()
        self._changed()
        return int(len(present))

    def _compact(self) -> None:
        """Re-add all but the tombstoned ids (indexes that cannot remove in place); training is kept."""
        if not self._tombstones:
            return
        all_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        keep = all_ids[~np.isin(all_ids, np.fromiter(self._tombstones, np.int64))]
        vectors = self._index.reconstruct_batch(keep) if len(keep) else None
        self._index.reset()  # drops the vectors (and ids), keeps trained quantizers
        self._tombstones.clear()
        if vectors is not None:
            self._index.add_with_ids(np.ascontiguousarray(vectors, np.float32), keep)
        self._changed()

    # ------------------------------------------------------------------ search

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores [Q, k] float32, ids [Q, k] int64)``, best first; missing slots are ``-inf`` / -1."""
        q = normalize(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"expected queries of width {self.dim}, got {q.shape[1]}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        nq = len(q)
        scores = np.full((nq, k), -np.inf, np.float32)
        ids = np.full((nq, k), -1, np.int64)
        raw_total = int(self._index.ntotal)
        if nq == 0 or raw_total == 0:
            return scores, ids
        kk = min(raw_total, k + len(self._tombstones))
        hnsw = _unwrap(self._index)
        if isinstance(hnsw, faiss.IndexHNSW) and hnsw.hnsw.efSearch < kk:
            hnsw.hnsw.efSearch = kk
        d, i = self._search_backend(q, kk)
        if self._tombstones:
            dead = np.isin(i, np.fromiter(self._tombstones, np.int64))
            i = np.where(dead, -1, i)
            d = np.where(dead, -np.inf, d)
            order = np.argsort(-d, axis=1, kind="stable")
            d = np.take_along_axis(d, order, 1)
            i = np.take_along_axis(i, order, 1)
        d = np.where(i < 0, -np.inf, d).astype(np.float32)
        m = min(k, d.shape[1])
        scores[:, :m] = d[:, :m]
        ids[:, :m] = i[:, :m]
        return scores, ids

    def _search_backend(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.device == "cuda":
            if faiss_gpu_available() and not self._gpu_failed:
                gpu = self._gpu()
                if gpu is not None:
                    return gpu.search(q, k)
            # Flat / pending buffer: exact, on the GPU
            if isinstance(self._inner(), faiss.IndexFlat) and _torch_cuda_available():
                return self._search_torch(q, k, "cuda")
        return self._index.search(q, k)

    def _gpu(self) -> Any:  # pragma: no cover - needs faiss-gpu
        """A faiss-gpu copy of the index for searching (None, once, if faiss-gpu cannot take this kind)."""
        if self._gpu_index is None:
            try:
                res = faiss.StandardGpuResources()
                self._gpu_index = (res, faiss.index_cpu_to_gpu(res, 0, self._index))
            except Exception as exc:
                log.warning("faiss-gpu cannot take the %r index (%s); searching without it", self.factory, exc)
                self._gpu_failed = True
                return None
        return self._gpu_index[1]

    def _search_torch(self, q: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of a flat index with :func:`torch_search` over an fp16 copy on ``device``."""
        import torch

        if self._torch_db is None or self._torch_db[0].device.type != torch.device(device).type:
            xb, ids = self._buffer_contents()
            self._torch_db = (torch.from_numpy(xb).to(device=device, dtype=torch.float16), ids)
        db, ids = self._torch_db
        s, pos = torch_search(db, torch.from_numpy(q).to(device), k)
        pos = pos.cpu().numpy()
        return s.float().cpu().numpy(), np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> str:
        """Write the index to ``path`` atomically (temp file, fsync, rename, fsync folder); return its sha256."""
        self._compact()
        path = Path(os.fspath(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with atomic_replace(path) as tmp, open(tmp, "wb") as fh:

            def write(chunk: bytes) -> None:
                fh.write(chunk)
                digest.update(chunk)

            faiss.write_index(self._index, faiss.PyCallbackIOWriter(write))
        return digest.hexdigest()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expected_checksum: str | None = None,
        *,
        factory: str | None = None,
        device: str = "cpu",
        nprobe: int | None = None,
        k_factor: int | None = None,
        ef_search: int | None = None,
        train_threshold: int | None = None,
    ) -> VectorIndex:
        """Read an index written by :meth:`save`.

        Raises :class:`IndexCorruptError` when the file is missing, FAISS cannot read it (truncated,
        garbled), its sha256 differs from ``expected_checksum``, or it is not an id-mapped index.
        ``factory`` (what the index was created with) lets an index saved while still in its pending flat
        buffer resume training once it has enough vectors; by default it is taken from the file.
        """
        tune_faiss()
        path = Path(os.fspath(path))
        digest = hashlib.sha256()
        try:
            fh = open(path, "rb")
        except FileNotFoundError as exc:
            raise IndexCorruptError(path, "missing") from exc
        except OSError as exc:
            raise IndexCorruptError(path, f"unreadable ({exc.strerror})") from exc
        with fh:

            def read(n: int) -> bytes:
                chunk = fh.read(n)
                digest.update(chunk)
                return chunk

            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(read))
            except Exception as exc:
                first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise IndexCorruptError(path, f"FAISS cannot read it ({first[:200]})") from exc
            while rest := fh.read(1 << 20):  # trailing bytes count toward the checksum
                digest.update(rest)
        checksum = digest.hexdigest()
        if expected_checksum is not None and checksum != expected_checksum:
            detail = f"checksum mismatch (sha256 {checksum[:12]}..., expected {expected_checksum[:12]}...)"
            raise IndexCorruptError(path, detail)
        # (read_index already returns the concrete class; keep this owning reference, not a downcast copy.)
        if not isinstance(index, faiss.IndexIDMap2) and faiss.try_extract_index_ivf(index) is None:
            raise IndexCorruptError(path, f"not an id-mapped index ({type(index).__name__})")
        self = cls(
            int(index.d),
            factory or _describe_factory(index),
            device=device,
            nprobe=nprobe,
            k_factor=k_factor,
            ef_search=ef_search,
            train_threshold=train_threshold,
        )
        problem = self._mismatch(index)
        if problem:
            raise IndexCorruptError(path, problem)
        self._index = index
        self._configure()
        if self._is_flat_buffer() and self._index.ntotal >= self.train_threshold:
            self._train_from_buffer()
        return self


def _describe_factory(index: Any) -> str:
    """A factory string good enough to recreate ``index``'s kind (used only when the caller gives none)."""
    refine = _refine_of(index)
    if refine is not None and isinstance(faiss.downcast_index(refine.refine_index), faiss.IndexFlat):
        return _describe_factory(refine.base_index) + ",RFlat"
    inner = _unwrap(index)
    if isinstance(inner, faiss.IndexFlat):
        return "Flat"
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        if isinstance(ivf, faiss.IndexIVFPQ):
            return f"IVF{ivf.nlist},PQ{ivf.pq.M}x{ivf.pq.nbits}"
        if isinstance(ivf, faiss.IndexIVFPQFastScan):
            return f"IVF{ivf.nlist},PQ{ivf.pq.M}x4fs"
        if isinstance(ivf, faiss.IndexIVFFlat):
            return f"IVF{ivf.nlist},Flat"
    if isinstance(inner, faiss.IndexHNSWFlat):
        return f"HNSW{inner.hnsw.nb_neighbors(1)}"
    if isinstance(inner, faiss.IndexPQ):
        return f"PQ{inner.pq.M}x{inner.pq.nbits}"
    # Trained indexes never go back to training, so any trained-kind description will do.
    return "Flat" if not inner.is_trained else type(inner).__name__


_warned_factories: set[str] = set()


def _warn_unrefined_pq(factory: str, probe: Any) -> None:
    """Once per factory: PQ codes without a refinement step cap recall whatever nprobe is."""
    if factory in _warned_factories or _refine_of(probe) is not None:
        return
    inner = faiss.try_extract_index_ivf(probe)
    inner = faiss.downcast_index(inner) if inner is not None else _unwrap(probe)
    if getattr(inner, "pq", None) is not None:
        _warned_factories.add(factory)
        log.warning(
            "FAISS factory %r ranks by PQ codes alone, which caps recall whatever nprobe is (IVF1024,PQ64: recall@10 "
            "0.74 at 100k, 0.43 at 1M vtr vectors); append ',RFlat' to re-rank a shortlist exactly, e.g. %r",
            factory,
            RECOMMENDED_IVF_FACTORY,
        )


def _torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _resolve_device(device: str) -> str:
    """Where FAISS searches: the torch device rule (:func:`vtr.runtime.resolve_device`), and ``auto`` also picks
    CUDA when only faiss-gpu sees a GPU."""
    if device == "auto" and faiss_gpu_available():
        return "cuda"
    return resolve_device(device).type


# --------------------------------------------------------------------------- torch brute force


def torch_search(db: Any, queries: Any, k: int, tile: int | None = None) -> tuple[Any, Any]:
    """Exact top-``k`` inner-product search of ``queries`` [Q, D] in ``db`` [N, D] (e.g. fp16 on CUDA).

    ``db`` is scanned in tiles of ``tile`` rows (one ``[Q, tile]`` score matrix at a time, kept in ``db``'s
    dtype); each tile's top-k is merged into the running best. By
    default a tile holds ``TORCH_TILE_SCORES // Q`` rows on the CPU and ``2**30 // Q`` on a GPU (a 2 GiB fp16
    score matrix: 1M rows x 1024 queries in one tile). Returns ``(scores [Q, k] float32, positions [Q, k]
    int64)`` on ``db``'s device, best first; positions are row numbers of ``db``, and slots beyond ``N`` are
    ``-inf`` / -1. On the CPU the products are computed in float32.
    """
    import torch

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if db.ndim != 2 or queries.ndim != 2 or db.shape[1] != queries.shape[1]:
        raise ValueError(f"expected db [N, D] and queries [Q, D], got {tuple(db.shape)} and {tuple(queries.shape)}")
    device = db.device
    nq, n = int(queries.shape[0]), int(db.shape[0])
    if tile is None:
        budget = TORCH_TILE_SCORES if device.type == "cpu" else 2**30
        tile = max(65536, budget // max(1, nq))
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    compute = torch.float32 if device.type == "cpu" else db.dtype
    q = queries.to(device=device, dtype=compute)
    best_s = torch.full((nq, k), float("-inf"), dtype=torch.float32, device=device)
    best_i = torch.full((nq, k), -1, dtype=torch.int64, device=device)
    for start in range(0, n, tile):
        block = db[start : start + tile]
        scores = q @ block.to(compute).T
        ts, ti = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        cand_s = torch.cat([best_s, ts.float()], dim=1)
        cand_i = torch.cat([best_i, ti + start], dim=1)
        best_s, pick = torch.topk(cand_s, k, dim=1)
        best_i = torch.gather(cand_i, 1, pick)
    return best_s, best_i
