"""Out-of-core IVF indexes for large libraries: trained on a sample, filled shard by shard, searched memory-mapped.

The in-memory FAISS index of :class:`vtr.index.store.LibraryStore` holds every vector in RAM. For 100M+ segments
FAISS's answer is an IVF index whose inverted lists live on disk (``faiss.contrib.ondisk``), and that is built
here from the catalog, which keeps every embedding:

1. train the coarse quantiser (and the codec: SQ / PQ) on a sample of the stored vectors (``train_size``, taken
   every ``n // train_size``-th vector id, so the whole library is represented);
2. stream the ``embeddings`` table in shards of ``shard_size`` vectors; each shard is encoded into a copy of the
   trained, empty index and written to its own file (one shard in RAM at a time);
3. merge the shards' inverted lists into one ``lists.ivfdata`` file (``merge_ondisk``: the shards are read
   memory-mapped, so the merge never holds the whole index), and write ``populated.index`` (quantiser + list
   offsets) beside it;
4. search it opened with ``IO_FLAG_ONDISK_SAME_DIR``: the lists are memory-mapped, only the quantiser and the
   list table are in RAM, and the OS page cache holds whatever lists queries touch.

An index can keep no in-memory FAISS index at all: its factory ``ondisk:<IVF factory>`` (e.g.
``ondisk:IVF65536,SQ8``) tells :class:`vtr.index.store.LibraryStore` to commit vectors to the catalog only,
never write a ``.faiss`` file, and search through this build (built with that IVF factory by default).

The build goes to a temporary folder that replaces ``<home>/indexes/<name>.ondisk`` in one rename; ``meta.json``
records the catalog generation it was built from. Factories: ``IVF{nlist},Flat`` (exact codes, 4 x d bytes a
vector), ``IVF{nlist},SQ8`` (d bytes), ``IVF{nlist},PQ{m}`` (m bytes), optionally behind ``OPQ``/``PCA``
transforms; FAISS cannot put fast-scan (``...fs``) or refined (``,RFlat``) indexes on disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import sqlalchemy as sa

from vtr.errors import ConfigError, IndexCorruptError, VtrError
from vtr.index.vector_index import default_nprobe, faiss_reason, normalize, tune_faiss

log = logging.getLogger(__name__)

__all__ = ["ONDISK_PREFIX", "OnDiskIndex", "OnDiskInfo", "build_ondisk", "build_ondisk_from_catalog",
           "check_ondisk_factory", "ondisk_factory", "ondisk_path", "remove_ondisk"]

INDEX_FILE = "populated.index"
LISTS_FILE = "lists.ivfdata"
META_FILE = "meta.json"
DEFAULT_SHARD_SIZE = 1_000_000
DEFAULT_TRAIN_SIZE = 200_000
ONDISK_PREFIX = "ondisk:"  # a store factory of an index searched on disk only (no in-memory FAISS index)


@dataclass
class OnDiskInfo:
    """What was built: vectors, factory, the catalog generation, and the footprint in bytes."""

    factory: str
    dim: int
    ntotal: int
    nlist: int
    generation: int | None
    shards: int
    train_size: int
    build_s: float
    disk_bytes: int
    ram_bytes: int  # what a searcher keeps in RAM: the quantiser, codec tables and list table (populated.index)


@contextlib.contextmanager
def _c_stdout_to_stderr() -> Iterator[None]:
    """FAISS's on-disk lists print progress with C printf: send it to stderr (stdout may carry --json)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def ondisk_path(home: Path, name: str) -> Path:
    return home / "indexes" / f"{name}.ondisk"


def ondisk_factory(factory: str | None) -> str | None:
    """The IVF factory of an on-disk-only store factory (``ondisk:IVF65536,SQ8`` -> ``IVF65536,SQ8``), else None."""
    if factory is None or not factory.lower().startswith(ONDISK_PREFIX):
        return None
    return factory[len(ONDISK_PREFIX):].strip()


def remove_ondisk(home: Path, name: str) -> None:
    """Delete the on-disk build of index ``name`` (and leftovers of an interrupted build or replacement)."""
    folder = ondisk_path(home, name)
    shutil.rmtree(folder.with_name(folder.name + ".old"), ignore_errors=True)
    if folder.exists():  # renamed first, so a reader never sees half a folder
        gone = folder.with_name(f".{folder.name}.removed")
        shutil.rmtree(gone, ignore_errors=True)
        os.replace(folder, gone)
        shutil.rmtree(gone, ignore_errors=True)


def check_ondisk_factory(dim: int, factory: str) -> Any:
    """An empty index of ``factory`` if FAISS can keep its inverted lists on disk; ConfigError otherwise."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except Exception as exc:  # faiss raises RuntimeError with a C++ trace
        raise ConfigError(f"invalid FAISS factory string {factory!r} for dim {dim}: {exc}") from exc
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or isinstance(faiss.downcast_index(index), faiss.IndexRefine):
        raise ConfigError(f"{factory!r} cannot be built on disk: use an IVF factory without ',RFlat', "
                          "e.g. IVF65536,SQ8 or IVF65536,Flat")
    if not isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists):
        raise ConfigError(f"{factory!r} cannot be built on disk (fast-scan codes): use PQ{{m}} without 'fs', or SQ8")
    return index


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def build_ondisk(
    dim: int,
    factory: str,
    folder: str | os.PathLike,
    train: np.ndarray,
    shards: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    generation: int | None = None,
) -> OnDiskInfo:
    """Build an on-disk IVF index in ``folder`` (replaced atomically) from ``train`` vectors and ``shards`` of
    ``(ids, vectors)``."""
    tune_faiss()
    t0 = time.perf_counter()
    folder = Path(folder)
    empty = check_ondisk_factory(dim, factory)
    ivf = faiss.extract_index_ivf(empty)
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False
    train = normalize(train)
    if len(train) < int(ivf.nlist):
        raise ConfigError(f"{factory!r} needs at least {int(ivf.nlist)} vectors to train on, the library has "
                          f"{len(train)}: use fewer lists (IVF{max(1, len(train) // 39)},...)")
    empty.train(train)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        trained = work / "trained.index"
        faiss.write_index(empty, str(trained))
        shard_files = []
        for k, (ids, vectors) in enumerate(shards):
            part = faiss.read_index(str(trained))
            part.add_with_ids(normalize(vectors), np.ascontiguousarray(ids, np.int64))
            shard_files.append(str(work / f"shard_{k:05d}.index"))
            faiss.write_index(part, shard_files[-1])
            del part
            log.info("ondisk: shard %d written (%d vectors)", k, len(ids))
        index = faiss.read_index(str(trained))
        with _c_stdout_to_stderr():
            _merge(index, shard_files, work / LISTS_FILE)
        faiss.write_index(index, str(work / INDEX_FILE))
        ntotal = int(index.ntotal)
        del index
        for f in [*shard_files, str(trained)]:
            os.unlink(f)
        info = OnDiskInfo(factory=factory, dim=dim, ntotal=ntotal, nlist=int(ivf.nlist), generation=generation,
                          shards=len(shard_files), train_size=len(train), build_s=round(time.perf_counter() - t0, 3),
                          disk_bytes=_dir_bytes(work), ram_bytes=(work / INDEX_FILE).stat().st_size)
        (work / META_FILE).write_text(json.dumps(asdict(info), indent=1))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(work, folder)
        shutil.rmtree(old, ignore_errors=True)
        return info
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _merge(index: Any, shard_files: list[str], lists_file: Path) -> None:
    """Merge the shards' inverted lists into ``lists_file`` and make them ``index``'s (``faiss.contrib.ondisk``)."""
    if shard_files:
        from faiss.contrib.ondisk import merge_ondisk

        merge_ondisk(index, shard_files, str(lists_file))
        return
    ivf = faiss.extract_index_ivf(index)  # an empty library still gets a valid (empty) on-disk index
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_file))
    ivf.replace_invlists(lists, True)
    lists.this.disown()


# --------------------------------------------------------------------------- from the catalog


def _decode(rows: list[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    blob = b"".join(bytes(r[1]) for r in rows)
    return ids, np.frombuffer(blob, np.float32).reshape(len(rows), dim)


def iter_catalog_shards(catalog: Any, index_id: int, dim: int, shard_size: int,
                        where: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, vectors)`` of the index's stored embeddings, ``shard_size`` at a time, from one snapshot."""
    from vtr.index.catalog import Embedding

    stmt = sa.select(Embedding.vector_id, Embedding.vector).where(Embedding.index_id == index_id)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(Embedding.vector_id).execution_options(yield_per=min(shard_size, 65536))
    with catalog.read() as s:
        ids_parts, vec_parts, n = [], [], 0
        for part in s.execute(stmt).partitions():
            ids, vectors = _decode(part, dim)
            ids_parts.append(ids)
            vec_parts.append(vectors)
            n += len(ids)
            if n >= shard_size:
                yield np.concatenate(ids_parts), np.concatenate(vec_parts)
                ids_parts, vec_parts, n = [], [], 0
        if n:
            yield np.concatenate(ids_parts), np.concatenate(vec_parts)


def build_ondisk_from_catalog(store: Any, factory: str | None = None, *, train_size: int = DEFAULT_TRAIN_SIZE,
                              shard_size: int = DEFAULT_SHARD_SIZE, folder: Path | None = None) -> OnDiskInfo:
    """Build ``<home>/indexes/<name>.ondisk`` for ``store``'s index from its catalog embeddings (``factory``
    None: the IVF factory of an ``ondisk:`` index)."""
    from vtr.index.catalog import Embedding, IndexRecord

    factory = factory or ondisk_factory(store.factory)
    if not factory:
        raise ConfigError(f"index {store.name!r} (factory {store.factory!r}) has no on-disk factory: give one, "
                          "e.g. vtr index ondisk --factory IVF65536,SQ8 (see docs/scale.md)")
    factory = ondisk_factory(factory) or factory  # `--factory ondisk:IVF...` means the same build

    with store.catalog.read() as s:
        record = s.get(IndexRecord, store.index_id)
        generation = int(record.generation)
        total = int(s.scalar(sa.select(sa.func.count()).select_from(Embedding)
                             .where(Embedding.index_id == store.index_id)) or 0)
    step = max(1, total // max(1, train_size))
    sample = [v for _, v in iter_catalog_shards(store.catalog, store.index_id, store.dim, 1 << 20,
                                                where=(Embedding.vector_id % step) == 0)]
    train = np.concatenate(sample) if sample else np.zeros((0, store.dim), np.float32)
    shards = iter_catalog_shards(store.catalog, store.index_id, store.dim, shard_size)
    return build_ondisk(store.dim, factory, folder or ondisk_path(store.home, store.name), train, shards,
                        generation=generation)


# --------------------------------------------------------------------------- searching


class OnDiskIndexError(IndexCorruptError):
    """An on-disk build that cannot be read (damaged, truncated, half-copied)."""

    def __init__(self, folder: Path, detail: str) -> None:
        self.path, self.detail = str(folder), " ".join(str(detail).split())
        VtrError.__init__(self, f"the on-disk index {self.path!r} cannot be read ({self.detail}): rebuild it with "
                          "`vtr index ondisk` (or `vtr index repair`)")


class OnDiskIndex:
    """A built on-disk IVF index, opened memory-mapped (inner product over normalised vectors, vtr's ids)."""

    def __init__(self, folder: str | os.PathLike, nprobe: int | None = None) -> None:
        tune_faiss()
        self.folder = Path(folder)
        try:
            self.info = OnDiskInfo(**json.loads((self.folder / META_FILE).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            if (self.folder / META_FILE).exists():  # there, but not what a build writes
                raise OnDiskIndexError(self.folder, f"{META_FILE}: {exc}") from exc
            raise ConfigError(f"no on-disk index at {str(self.folder)!r} (build it with `vtr index ondisk`)") from exc
        try:
            with _c_stdout_to_stderr():
                self.index = faiss.read_index(str(self.folder / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR)
            self.ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError as exc:  # a damaged or truncated file: FAISS's C++ reason
            raise OnDiskIndexError(self.folder, faiss_reason(exc)) from exc
        if int(self.index.ntotal) != self.info.ntotal or (self.info.ntotal and not (self.folder / LISTS_FILE).exists()):
            raise OnDiskIndexError(self.folder, f"{LISTS_FILE} is missing or the build is incomplete")
        self.nprobe = nprobe or default_nprobe(int(self.ivf.nlist))

    @property
    def nprobe(self) -> int:
        return int(self.ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.ivf.nprobe = int(value)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query, best first (-1 ids where fewer were found)."""
        return self.index.search(normalize(queries), k)

    def footprint(self) -> dict[str, int]:
        """``ram_bytes`` (quantiser + list table held by a searcher) and ``disk_bytes`` (all files)."""
        return {"ram_bytes": (self.folder / INDEX_FILE).stat().st_size, "disk_bytes": _dir_bytes(self.folder)}


def search_with_catalog(store: Any, ondisk: OnDiskIndex, queries: np.ndarray, k: int) -> list[list[Any]]:
    """Search ``ondisk`` and resolve its ids through ``store``'s catalog (one snapshot), as
    :meth:`LibraryStore.search` does with the index's own build: ids whose rows are gone (removed since the
    build) are dropped."""
    return store._search_ondisk(ondisk, normalize(queries), k)
