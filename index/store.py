"""A video library: the catalog (point of truth) and the FAISS index derived from it, for one named index.

Crash consistency
-----------------
* Every change (add / re-add / fail / remove a video, reindex) is ONE catalog transaction that writes the
  videos, segments and embeddings rows together; its commit is the point of truth. Only after it commits is
  the in-memory FAISS index updated.
* The FAISS file is derived data, written by :meth:`LibraryStore.flush` atomically (temp file, fsync, rename,
  fsync folder) and its sha256 then recorded in ``indexes.faiss_checksum``.
* On open, the FAISS file is loaded and verified (readable, sha256 as recorded, right kind and width); if it is
  not, it is rebuilt from the ``embeddings`` table (with a warning). Its id set is then reconciled with the
  catalog's: ids not in the catalog are removed, catalog ids not in the file are added from ``embeddings``.
  Vector ids are never reused, so an id that is in both always means the same vector.
* Searches only return vectors whose catalog rows exist in the snapshot they read (stale ids are dropped).

So whatever point a writer is killed at, the next open sees an index consistent with the last committed
catalog state.

Large libraries (:mod:`vtr.index.ondisk`)
------------------------------------------
* When an on-disk IVF build exists (``<home>/indexes/<name>.ondisk``, ``vtr index ondisk``), searches use it
  (``exact=True`` asks for the in-memory index instead). Stores opened with ``lazy=True`` (what
  :class:`vtr.Library` does) load the in-memory FAISS file only when a search needs it, so searching through
  the on-disk build never reads the ``.faiss`` file.
* An index whose factory is ``ondisk:<IVF factory>`` keeps no in-memory FAISS index at all: writers commit
  vectors to the catalog only (no ``.faiss`` file is written; one left from before is deleted), and searches
  go through the on-disk build, which ``vtr index ondisk`` (re)builds from the catalog.

One writer per index at a time (a lock file in ``<home>/indexes/``, or a PostgreSQL advisory lock); any number
of read-only stores may read meanwhile, each seeing committed snapshots (SQLite WAL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from vtr.errors import ConfigError, IndexBusyError, IndexCorruptError, VideoDecodeError, VtrError
from vtr.hashing import sha256_file as file_sha256
from vtr.home import data_home
from vtr.index.catalog import (
    CATALOG_FILE,
    Catalog,
    Embedding,
    IndexRecord,
    Segment,
    Video,
    decode_path,
    encode_path,
    utcnow,
)
from vtr.index.files import VIDEO_EXTENSIONS, walk_videos
from vtr.index.integrity import end_writing, home_writable, start_writing, writable_home
from vtr.index.lock import FileLock
from vtr.index.ondisk import OnDiskIndex, check_ondisk_factory, ondisk_factory, ondisk_path, remove_ondisk
from vtr.index.pg_lock import AdvisoryLock, index_lock
from vtr.index.plan import CatalogRow, Plan, PlanItem, check_prune_roots, check_prune_share, make_plan, stat_file
from vtr.index.vector_index import VectorIndex, default_nprobe, normalize
from vtr.index.vectors import stored_width
from vtr.segmentation import SegmentPolicy

if TYPE_CHECKING:  # decoding (PyAV) is not needed to search: searches do not import it
    from vtr.data.decode import VideoInfo

log = logging.getLogger(__name__)

__all__ = [
    "Hit",
    "IndexBusyError",
    "IndexSummary",
    "LibraryStore",
    "Plan",
    "PlanItem",
    "StoreStatus",
    "VIDEO_EXTENSIONS",
    "list_indexes",
    "remove_index",
    "walk_videos",
]

INDEX_DIR = "indexes"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ID_SHIFT = 40  # vector ids of index i are (i << 40) + 0, 1, 2, ...
_CHUNK = 500  # ids per IN (...) list
_REBUILD_BATCH = 16384


@dataclass(frozen=True)
class Hit:
    """One search result: a segment ``[start_s, end_s)`` of ``video_path`` (a ``str`` the OS accepts)."""

    score: float
    vector_id: int
    video_path: str
    start_s: float
    end_s: float


class VideoEntry(NamedTuple):
    """One video for :meth:`LibraryStore.add_videos` (the arguments of :meth:`LibraryStore.add_video`)."""

    info: VideoInfo
    segments: Sequence[tuple[float, float]]
    embeddings: np.ndarray
    content_hash: str | None = None


@dataclass(frozen=True)
class IndexSummary:
    name: str
    model_name: str
    weights_sha256: str | None
    embedding_dim: int
    factory: str
    vector_count: int
    videos: int
    created_at: Any
    updated_at: Any


@dataclass
class StoreStatus:
    name: str
    model_name: str
    weights_sha256: str | None
    embedding_dim: int
    factory: str
    videos: dict[str, int]  # by status: indexed / failed / pending
    failures: list[tuple[str, str]]  # (display path, reason)
    segments: int
    vectors: int  # embeddings in the catalog
    faiss_vectors: int | None  # vectors in the in-memory FAISS index (None: not loaded, or not kept)
    db_bytes: int | None
    faiss_bytes: int | None
    schema_version: int
    segmentation: dict[str, Any] | None = None  # the recorded SegmentPolicy (None: not recorded yet)


@dataclass(frozen=True)
class ConsistencyReport:
    """What :meth:`LibraryStore.check` found: ids removed (stale) and added (missing), or a full rebuild."""

    stale: int = 0
    missing: int = 0
    rebuilt: bool = False
    reason: str = ""

    @property
    def changed(self) -> bool:
        return self.rebuilt or self.stale > 0 or self.missing > 0


# --------------------------------------------------------------------------- helpers


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid index name {name!r}: use letters, digits, '.', '_' or '-' (up to 128, not starting with '.')"
        )
    return name


def _abspath(path: str | os.PathLike | bytes) -> str:
    return os.path.abspath(os.fsdecode(os.fspath(path)))


def _chunks(values: Sequence[int] | np.ndarray, size: int = _CHUNK) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield [int(v) for v in values[start : start + size]]


def _faiss_path(home: Path, name: str) -> Path:
    return home / INDEX_DIR / f"{name}.faiss"


def _lock_path(home: Path, name: str) -> Path:
    return home / INDEX_DIR / f"{name}.lock"


def _drop_video_vectors(session: Session, video_id: int) -> list[int]:
    """Delete a video's segments and embeddings (not the video row); return the vector ids dropped."""
    ids = list(session.scalars(sa.select(Segment.vector_id).where(Segment.video_id == video_id)))
    if ids:
        session.execute(
            sa.delete(Embedding).where(
                Embedding.vector_id.in_(sa.select(Segment.vector_id).where(Segment.video_id == video_id))
            )
        )
        session.execute(sa.delete(Segment).where(Segment.video_id == video_id))
    return ids


# --------------------------------------------------------------------------- the store


class LibraryStore:
    """Catalog + FAISS index of one named index in a vtr home. Use :meth:`open`; not thread-safe."""

    def __init__(
        self,
        catalog: Catalog,
        home: Path,
        record: IndexRecord,
        *,
        read_only: bool,
        device: str,
        lock: FileLock | AdvisoryLock | None,
    ) -> None:
        self.catalog = catalog
        self.home = home
        self.read_only = read_only
        self.device = device
        self._lock = lock
        self.index_id = int(record.id)
        self.name = record.name
        self._set_record(record)
        self.faiss_path = _faiss_path(home, self.name)
        self.ondisk_path = ondisk_path(home, self.name)
        self._nprobe: int | None = None
        self._index = self._new_index()
        self._generation = -1  # the catalog generation the in-memory index reflects (-1: not loaded yet)
        self._seen = -1  # the catalog generation the last search / catch-up saw (either index)
        self._ondisk: OnDiskIndex | None = None
        self._ondisk_key: tuple[int, int] | None = None
        self._last_total = 0
        self._checksum: str | None = None
        self._dirty = False
        self._suspect = False
        self.last_check = ConsistencyReport()

    def _set_record(self, record: IndexRecord) -> None:
        self.model_name = record.model_name
        self.weights_sha256 = record.weights_sha256
        self.dim = int(record.embedding_dim)
        self.factory = record.factory

    @property
    def ram_index(self) -> bool:
        """Whether this index keeps an in-memory FAISS index (False: ``ondisk:`` factory, searched on disk only)."""
        return ondisk_factory(self.factory) is None

    def _new_index(self) -> VectorIndex:
        """An empty in-memory index of this index's factory (a Flat stand-in, never saved, when it keeps none)."""
        index = VectorIndex(self.dim, self.factory if self.ram_index else "Flat", device=self.device)
        if self._nprobe is not None:
            index.nprobe = self._nprobe
        return index

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        home: str | os.PathLike | None = None,
        name: str = "default",
        *,
        model_name: str | None = None,
        weights_sha256: str | None = None,
        dim: int | None = None,
        embed_dim: int | None = None,
        factory: str | None = None,
        db_url: str | None = None,
        read_only: bool = False,
        reindex: bool = False,
        device: str = "auto",
        lock_timeout_s: float = 0.0,
        lazy: bool = False,
    ) -> LibraryStore:
        """Open (creating it if needed, unless ``read_only``) the index ``name`` in ``home``.

        ``model_name`` / ``weights_sha256`` / ``dim`` are what the query and video embeddings come from: a new
        index needs ``model_name`` and ``dim``; an existing one refuses different ones with ConfigError unless
        ``reindex`` (which drops all its vectors and takes the new model). ``factory`` (FAISS factory string)
        defaults to ``"Flat"`` for a new index and to the index's own otherwise; a different one given for an
        existing index rebuilds its FAISS index from the stored embeddings (no re-embedding).
        ``read_only`` stores never write (several may read while one process writes). ``embed_dim`` (a model's
        feature width) may be given instead of ``dim``: the stored vectors are then
        :func:`~vtr.index.vectors.stored_width` wide (the padded format of :mod:`vtr.index.vectors`).
        ``lazy`` (read-only stores): do not load the in-memory FAISS index now, only when a search needs it
        (never when an on-disk build answers). A ``factory`` of ``ondisk:<IVF factory>`` (e.g.
        ``ondisk:IVF65536,SQ8``) keeps no in-memory index at all (module docstring).
        """
        _check_name(name)
        if embed_dim is not None:
            if dim is not None and dim != stored_width(embed_dim):
                raise ValueError(f"dim {dim} does not match embed_dim {embed_dim} ({stored_width(embed_dim)} stored)")
            dim = stored_width(embed_dim)
        home_path = data_home(home, create=False) if read_only else writable_home(home)
        catalog = Catalog.open(home_path, db_url, read_only=read_only)
        lock = None
        try:
            if not read_only:  # a file lock for SQLite, an advisory lock in a PostgreSQL server
                lock = index_lock(catalog.engine, _lock_path(home_path, name), name, lock_timeout_s, f"index {name!r}")
                start_writing(home_path, name)  # stale temp files go; the unclean-shutdown marker is set
            record = cls._prepare_record(
                catalog, name, model_name, weights_sha256, dim, factory, read_only=read_only, reindex=reindex
            )
            store = cls(catalog, home_path, record, read_only=read_only, device=device, lock=lock)
            if reindex and not read_only:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(store.faiss_path)
                store._drop_ondisk()
            if not (lazy and read_only):
                store.check()
        except BaseException:
            if lock is not None:
                lock.release()
            catalog.close()
            raise
        return store

    @staticmethod
    def _prepare_record(
        catalog: Catalog,
        name: str,
        model_name: str | None,
        weights_sha256: str | None,
        dim: int | None,
        factory: str | None,
        *,
        read_only: bool,
        reindex: bool,
    ) -> IndexRecord:
        if read_only:
            with catalog.read() as s:
                record = s.scalar(sa.select(IndexRecord).where(IndexRecord.name == name))
            if record is None:
                raise ConfigError(f"no index named {name!r} in the catalog: build it first with `vtr index`")
            _check_model(record, model_name, weights_sha256, dim)
            return record
        with catalog.write() as s:
            record = s.scalar(sa.select(IndexRecord).where(IndexRecord.name == name))
            now = utcnow()
            if factory is not None:  # a bad factory string fails here, with FAISS's reason
                width = int(dim or (record.embedding_dim if record is not None else 0) or 1)
                if ondisk_factory(factory) is not None:
                    check_ondisk_factory(width, ondisk_factory(factory))
                else:
                    try:
                        VectorIndex(width, factory)
                    except ValueError as exc:
                        raise ConfigError(f"--factory: {exc}") from exc
            if record is None:
                if model_name is None or dim is None:
                    raise ConfigError(f"index {name!r} does not exist yet: creating it needs a model name and width")
                record = IndexRecord(
                    name=name,
                    model_name=model_name,
                    weights_sha256=weights_sha256,
                    embedding_dim=int(dim),
                    factory=factory or "Flat",
                    created_at=now,
                    updated_at=now,
                    vector_count=0,
                    next_vector_id=0,
                    generation=0,
                )
                s.add(record)
                s.flush()
                record.next_vector_id = int(record.id) << _ID_SHIFT
                log.info("created index %r (model %s, dim %d, %s)", name, model_name, dim, record.factory)
                return record
            if reindex:
                _reset_index(s, record)
                record.model_name = model_name or record.model_name
                record.weights_sha256 = weights_sha256 if model_name is not None else record.weights_sha256
                record.embedding_dim = int(dim or record.embedding_dim)
                record.factory = factory or record.factory
                log.warning("index %r: dropped all vectors for re-indexing with %s", name, record.model_name)
                return record
            _check_model(record, model_name, weights_sha256, dim)
            if factory is not None and factory != record.factory:
                log.info("index %r: FAISS factory %r -> %r (%s)", name, record.factory, factory,
                         "no in-memory index from now on: `vtr index ondisk` builds what searches use"
                         if ondisk_factory(factory) is not None else "rebuilt from stored embeddings")
                record.factory = factory
                record.faiss_checksum = None
                record.updated_at = now
            return record

    def check_model(self, model_name: str | None, weights_sha256: str | None = None, dim: int | None = None) -> None:
        """ConfigError (with the fix) when the given model is not the one this index was built with."""
        with self.catalog.read() as s:
            _check_model(self._record(s), model_name, weights_sha256, dim)

    # ------------------------------------------------------------------ segmentation policy

    def segment_policy(self) -> SegmentPolicy | None:
        """How this index cuts videos into segments (None: not recorded, an index built before vtr did)."""
        with self.catalog.read() as s:
            return self._policy(s)

    def _policy(self, s: Session) -> SegmentPolicy | None:
        if self.catalog.schema < 3:  # a read-only store over a catalog from before policies were recorded
            return None
        row = s.execute(sa.select(IndexRecord.segment_s, IndexRecord.stride_s, IndexRecord.whole_up_to_s)
                        .where(IndexRecord.id == self.index_id)).one_or_none()
        if row is None or row[0] is None:
            return None
        return SegmentPolicy(float(row[0]), float(row[1] or 0.0), float(row[2] or 0.0))

    def set_segment_policy(self, policy: SegmentPolicy) -> None:
        """Record ``policy`` (the caller checks it may change: see :func:`vtr.segmentation.settle_policy`)."""
        self._require_writable()
        with self.catalog.write() as s:
            record = self._record(s)
            record.segment_s, record.stride_s, record.whole_up_to_s = (
                policy.window_s, policy.stride_s, policy.whole_up_to_s)

    def segment_counts(self) -> tuple[int, int]:
        """``(segments, videos with more than one segment)`` of this index."""
        with self.catalog.read() as s:
            per_video = (sa.select(sa.func.count().label("n")).select_from(Segment)
                         .join(Video, Segment.video_id == Video.id)
                         .where(Video.index_id == self.index_id).group_by(Segment.video_id).subquery())
            total, multi = s.execute(sa.select(sa.func.coalesce(sa.func.sum(per_video.c.n), 0),
                                               sa.func.count().filter(per_video.c.n > 1))).one()
        return int(total), int(multi)

    # ------------------------------------------------------------------ consistency

    def check(self) -> ConsistencyReport:
        """Make the in-memory FAISS index agree with the catalog (loading the file first if needed).

        Loads ``<home>/indexes/<name>.faiss`` when this store has not yet, verifying its checksum; rebuilds from
        the ``embeddings`` table when it is missing, corrupt or of the wrong kind; then removes ids the
        catalog lacks and adds catalog vectors the index lacks. A writable store saves the result. An index that
        keeps no in-memory index (``ondisk:`` factory) has nothing to check: a writable store deletes a FAISS
        file left from before.
        """
        if not self.ram_index:
            with self.catalog.read() as s:
                self._generation = self._seen = int(self._record(s).generation)
            if not self.read_only:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.faiss_path)
            self._dirty = self._suspect = False
            self.last_check = ConsistencyReport()
            return self.last_check
        with self.catalog.read() as s:
            record = self._record(s)
            loaded = self._generation >= 0
            reason = ""
            catalog_ids = self._catalog_ids(s)
            if not loaded:
                index, reason = self._load_file(record)
                if index is None and (reason or len(catalog_ids)):
                    reason = reason or "no FAISS file was saved yet"
                    log.warning(
                        "index %r: %s; rebuilding it from the catalog (%d vectors)", self.name, reason, len(catalog_ids)
                    )
                    index = self._rebuild(s)
                    report = ConsistencyReport(rebuilt=True, reason=reason)
                elif index is None:
                    index = VectorIndex(self.dim, self.factory, device=self.device)
                    report = ConsistencyReport()
                else:
                    self._checksum = record.faiss_checksum
                    index, report = self._reconcile(s, index, catalog_ids)
            else:
                index, report = self._reconcile(s, self._index, catalog_ids)
            self._set_index(index)
            self._generation = self._seen = int(record.generation)
        self._suspect = False
        if report.changed:
            self._dirty = True
            if report.stale or report.missing:
                log.warning(
                    "index %r: the FAISS index disagreed with the catalog (%d stale, %d missing vectors); fixed",
                    self.name,
                    report.stale,
                    report.missing,
                )
        if not self.read_only and (self._dirty or (not self.faiss_path.exists() and self._index.ntotal)):
            self.flush()
        self.last_check = report
        return report

    def _set_index(self, index: VectorIndex) -> None:
        if self._nprobe is not None and index is not self._index:
            index.nprobe = self._nprobe
        self._index = index

    def _ensure_loaded(self) -> None:
        """Load (and check) the in-memory FAISS index if this (lazy) store has not yet."""
        if self._generation < 0:
            self.check()

    @property
    def loaded(self) -> bool:
        """Whether the in-memory FAISS index is loaded (always False for an ``ondisk:`` index)."""
        return self.ram_index and self._generation >= 0

    def _record(self, s: Session) -> IndexRecord:
        record = s.get(IndexRecord, self.index_id)
        if record is None or record.name != self.name:
            raise ConfigError(f"index {self.name!r} was removed from the catalog")
        return record

    def _catalog_ids(self, s: Session) -> np.ndarray:
        rows = s.execute(sa.select(Embedding.vector_id).where(Embedding.index_id == self.index_id)).scalars()
        return np.fromiter(rows, np.int64)

    def _load_file(self, record: IndexRecord) -> tuple[VectorIndex | None, str]:
        """The verified FAISS file, or ``(None, why not)`` (``why`` empty: nothing was ever saved)."""
        exists = self.faiss_path.exists()
        if record.faiss_checksum is None:
            return None, ("the FAISS file was not recorded in the catalog" if exists else "")
        if not exists:
            return None, f"the FAISS file {str(self.faiss_path)!r} is missing"
        try:
            index = VectorIndex.load(self.faiss_path, record.faiss_checksum, factory=self.factory, device=self.device)
        except IndexCorruptError as exc:
            return None, exc.detail
        if index.dim != self.dim:
            return None, f"the FAISS file holds {index.dim}-d vectors, the index is {self.dim}-d"
        return index, ""

    def _rebuild(self, s: Session) -> VectorIndex:
        """A new FAISS index with every embedding of this index (one snapshot, streamed in batches)."""
        index = VectorIndex(self.dim, self.factory, device=self.device)
        stmt = (
            sa.select(Embedding.vector_id, Embedding.vector)
            .where(Embedding.index_id == self.index_id)
            .order_by(Embedding.vector_id)
            .execution_options(yield_per=_REBUILD_BATCH)
        )
        for part in s.execute(stmt).partitions():
            ids, vectors = self._decode_rows(part)
            index.add(vectors, ids)
        return index

    def _decode_rows(self, rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        blob = b"".join(bytes(r[1]) for r in rows)
        if len(blob) != len(rows) * self.dim * 4:
            raise VtrError(f"index {self.name!r}: stored embeddings are not {self.dim}-d float32 (catalog damaged?)")
        return ids, np.frombuffer(blob, np.float32).reshape(len(rows), self.dim)

    def _fetch(self, s: Session, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        got_ids, got_vecs = [], []
        for chunk in _chunks(ids):
            rows = s.execute(
                sa.select(Embedding.vector_id, Embedding.vector).where(
                    Embedding.index_id == self.index_id, Embedding.vector_id.in_(chunk)
                )
            ).all()
            if rows:
                i, v = self._decode_rows(rows)
                got_ids.append(i)
                got_vecs.append(v)
        if not got_ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.concatenate(got_ids), np.concatenate(got_vecs)

    def _reconcile(
        self, s: Session, index: VectorIndex, catalog_ids: np.ndarray
    ) -> tuple[VectorIndex, ConsistencyReport]:
        """``index`` brought in line with ``catalog_ids`` (the same object, or a rebuilt one)."""
        faiss_ids = index.ids()
        if len(np.unique(faiss_ids)) != len(faiss_ids):
            log.warning("index %r: duplicate ids in the FAISS index; rebuilding it from the catalog", self.name)
            return self._rebuild(s), ConsistencyReport(rebuilt=True, reason="duplicate ids")
        stale = np.setdiff1d(faiss_ids, catalog_ids, assume_unique=True)
        missing = np.setdiff1d(catalog_ids, faiss_ids, assume_unique=True)
        if len(missing) > max(_REBUILD_BATCH, len(catalog_ids) // 2):
            return self._rebuild(s), ConsistencyReport(stale=int(len(stale)), missing=int(len(missing)), rebuilt=True)
        if len(stale):
            index.remove_ids(stale)
        if len(missing):
            ids, vectors = self._fetch(s, missing)
            index.add(vectors, ids)
        return index, ConsistencyReport(stale=int(len(stale)), missing=int(len(missing)))

    # ------------------------------------------------------------------ writes

    def _require_writable(self) -> None:
        if self.read_only:
            raise ConfigError(f"index {self.name!r} was opened read-only")

    def _bump(self, record: IndexRecord, added: int, removed: int) -> int:
        record.vector_count = int(record.vector_count) + added - removed
        record.generation = int(record.generation) + 1
        record.updated_at = utcnow()
        return int(record.generation)

    def _apply(self, generation: int, remove: Sequence[int] = (), add: tuple[np.ndarray, np.ndarray] | None = None):
        """Mirror a committed catalog change into the in-memory FAISS index."""
        if not self.ram_index:  # the catalog is all there is to update; the on-disk build is a snapshot
            self._generation = self._seen = generation
            return
        try:
            if len(remove):
                self._index.remove_ids(np.asarray(remove, np.int64))
            if add is not None and len(add[1]):
                self._index.add(add[0], add[1])
        except BaseException:
            self._suspect = True  # the catalog committed: reconcile before the next flush / search
            raise
        self._generation = self._seen = generation
        self._dirty = True

    def add_video(
        self,
        info: VideoInfo,
        segments: Sequence[tuple[float, float]],
        embeddings: np.ndarray,
        *,
        content_hash: str | None = None,
    ) -> np.ndarray:
        """Store a video's segments and their embeddings ([S, dim]) in one transaction; return the vector ids.

        Replaces what the catalog held for the same path. ``content_hash`` is the file's sha256 when the caller
        has it (:class:`PlanItem`); it is computed otherwise.
        """
        return self.add_videos([VideoEntry(info, segments, embeddings, content_hash)])[0]

    def add_videos(self, entries: Sequence[VideoEntry]) -> list[np.ndarray]:
        """Store several videos (see :meth:`add_video`) in one transaction; return each one's vector ids.

        All or none of them are committed. One transaction per batch rather than per video is what keeps the
        catalog from being the bottleneck of indexing (a SQLite commit and the ORM round trips cost ~5 ms a video).
        """
        self._require_writable()
        prepared = [self._prepare(e) for e in entries]
        if not prepared:
            return []
        raws = [p["raw"] for p in prepared]
        if len(set(raws)) != len(raws):
            raise ValueError("the same path is given twice in one add_videos batch")
        with self.catalog.write() as s:
            record = self._record(s)
            existing = {v.path_bytes: v for v in s.scalars(
                sa.select(Video).where(Video.index_id == self.index_id, Video.path_bytes.in_(raws)))}
            old: list[int] = []
            videos = []
            for p in prepared:
                video = existing.get(p["raw"])
                if video is None:
                    video = Video(index_id=self.index_id, path=p["display"], path_bytes=p["raw"])
                    s.add(video)
                else:
                    old += _drop_video_vectors(s, video.id)
                info = p["info"]
                video.size, video.mtime_ns = p["stat"]
                video.content_hash = p["digest"]
                video.duration, video.fps = float(info.duration), float(info.fps)
                video.width, video.height = int(info.width), int(info.height)
                video.status, video.error, video.updated_at = "indexed", None, utcnow()
                videos.append(video)
            s.flush()
            start = int(record.next_vector_id)
            total = sum(len(p["segs"]) for p in prepared)
            all_ids = np.arange(start, start + total, dtype=np.int64)
            record.next_vector_id = start + total
            segment_rows, embedding_rows, out = [], [], []
            offset = 0
            for p, video in zip(prepared, videos, strict=True):
                ids = all_ids[offset:offset + len(p["segs"])]
                offset += len(ids)
                out.append(ids)
                segment_rows += [{"video_id": video.id, "start_s": a, "end_s": b, "vector_id": int(i)}
                                 for (a, b), i in zip(p["segs"], ids, strict=True)]
                embedding_rows += [{"vector_id": int(i), "index_id": self.index_id, "vector": p["vectors"][j].tobytes()}
                               for j, i in enumerate(ids)]
            s.execute(sa.insert(Segment), segment_rows)
            s.execute(sa.insert(Embedding), embedding_rows)
            generation = self._bump(record, total, len(old))
        self._apply(generation, old, (np.concatenate([p["vectors"] for p in prepared]), all_ids))
        return out

    def _prepare(self, entry: VideoEntry) -> dict[str, Any]:
        """Validate one entry of :meth:`add_videos` and compute what its rows need (before the transaction)."""
        path = _abspath(entry.info.path)
        raw, display = encode_path(path)
        segs = [(float(a), float(b)) for a, b in entry.segments]
        if not segs:
            raise ValueError(f"no segments given for {display!r}")
        for a, b in segs:
            if not (np.isfinite(a) and np.isfinite(b)) or b < a or a < 0:
                raise ValueError(f"invalid segment ({a}, {b}) for {display!r}")
        vectors = normalize(entry.embeddings)
        if vectors.shape != (len(segs), self.dim):
            raise ValueError(f"expected embeddings of shape ({len(segs)}, {self.dim}), got {tuple(vectors.shape)}")
        st = stat_file(path)
        if st is None:
            raise VideoDecodeError(path, "missing")
        digest = entry.content_hash or file_sha256(path)
        return {"info": entry.info, "raw": raw, "display": display, "segs": segs, "vectors": vectors,
                "stat": st, "digest": digest}

    def mark_failed(self, path: str | os.PathLike | bytes, reason: str) -> None:
        """Record that ``path`` could not be indexed (and drop any vectors it had)."""
        self._require_writable()
        path = _abspath(path)
        raw, display = encode_path(path)
        st = stat_file(path)
        with self.catalog.write() as s:
            record = self._record(s)
            video = s.scalar(sa.select(Video).where(Video.index_id == self.index_id, Video.path_bytes == raw))
            old: list[int] = []
            if video is None:
                video = Video(index_id=self.index_id, path=display, path_bytes=raw)
                s.add(video)
            else:
                old = _drop_video_vectors(s, video.id)
            video.size, video.mtime_ns = st if st is not None else (None, None)
            video.content_hash = None
            video.status, video.error, video.updated_at = "failed", str(reason), utcnow()
            generation = self._bump(record, 0, len(old)) if old else self._generation
        if old:
            self._apply(generation, old)

    def remove_video(self, path: str | os.PathLike | bytes) -> bool:
        """Forget ``path`` (its row, segments and vectors); False if it was not in the catalog."""
        return self._remove_paths([encode_path(_abspath(path))[0]]) > 0

    def _remove_paths(self, raws: Sequence[bytes]) -> int:
        self._require_writable()
        if not raws:
            return 0
        removed_ids: list[int] = []
        count = 0
        with self.catalog.write() as s:
            record = self._record(s)
            for raw in raws:
                video = s.scalar(sa.select(Video).where(Video.index_id == self.index_id, Video.path_bytes == raw))
                if video is None:
                    continue
                removed_ids += _drop_video_vectors(s, video.id)
                s.delete(video)
                count += 1
            generation = self._bump(record, 0, len(removed_ids)) if count else self._generation
        if count:
            self._apply(generation, removed_ids)
        return count

    def reindex(self) -> None:
        """Drop every video and vector of this index (the files are then all new to :meth:`plan`)."""
        self._require_writable()
        with self.catalog.write() as s:
            record = self._record(s)
            _reset_index(s, record)
            generation = int(record.generation)
        self._index = self._new_index()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.faiss_path)
        self._drop_ondisk()
        self._checksum = None
        self._generation = self._seen = generation
        self._dirty = True
        self.flush()

    def flush(self) -> str | None:
        """Save the FAISS index atomically and record its checksum in the catalog; returns the checksum (None for
        an index that keeps no in-memory FAISS index: the catalog commits are all there is)."""
        self._require_writable()
        if not self.ram_index:
            return None
        if self._suspect:
            self.check()
        if not self._dirty and self._checksum is not None and self.faiss_path.exists():
            return self._checksum
        checksum = self._index.save(self.faiss_path)
        # A crash here leaves a file whose checksum the catalog does not know: the next open rebuilds it.
        with self.catalog.write() as s:
            record = self._record(s)
            record.faiss_checksum = checksum
            record.faiss_generation = self._generation
        self._checksum = checksum
        self._dirty = False
        return checksum

    # ------------------------------------------------------------------ planning

    def plan(
        self,
        paths: Iterable[str | os.PathLike | bytes],
        *,
        prune: bool = False,
        retry_failed: bool = False,
        extensions: Iterable[str] = VIDEO_EXTENSIONS,
        yes: bool = False,
    ) -> Plan:
        """Decide, for the video files under ``paths``, what indexing has to do (:func:`vtr.index.plan.make_plan`).

        A writable store records the new mtime of ``touched`` files; ``deleted`` files are removed from the
        catalog only with ``prune`` (``plan.pruned``), never below a missing or unreadable root, and not more
        than :data:`~vtr.index.plan.PRUNE_GUARD_SHARE` of the index unless ``yes`` (PruneRefusedError).
        """
        roots = [os.fsencode(_abspath(p)) for p in paths]
        if prune:
            check_prune_roots(roots)
        files = list(walk_videos([os.fsdecode(r) for r in roots], extensions, missing_ok=True))
        with self.catalog.read() as s:
            rows = {
                bytes(r.path_bytes): CatalogRow(r.size, r.mtime_ns, r.content_hash, r.status, r.error)
                for r in s.execute(
                    sa.select(
                        Video.path_bytes, Video.size, Video.mtime_ns, Video.content_hash, Video.status, Video.error
                    ).where(
                        Video.index_id == self.index_id
                    )
                )
            }
        plan = make_plan(rows, files, roots, retry_failed=retry_failed, decode=decode_path)
        if not self.read_only and plan.touched:
            with self.catalog.write() as s:
                for item in plan.touched:
                    s.execute(
                        sa.update(Video)
                        .where(
                            Video.index_id == self.index_id,
                            Video.path_bytes == os.fsencode(item.path),
                            Video.content_hash == item.content_hash,
                        )
                        .values(mtime_ns=item.mtime_ns, updated_at=utcnow())
                    )
        if prune and plan.deleted:
            check_prune_share(len(plan.deleted), len(rows), yes=yes)
            self._remove_paths([os.fsencode(item.path) for item in plan.deleted])
            plan.pruned = True
        return plan

    # ------------------------------------------------------------------ reads

    def search(self, query_vectors: np.ndarray, k: int = 10, nprobe: int | None = None, *,
               exact: bool = False) -> list[list[Hit]]:
        """The ``k`` best segments for each query ([Q, dim] or [dim]; normalised here), best first.

        Only vectors whose catalog rows exist are returned. The on-disk build answers when there is one (the
        in-memory FAISS index is then never loaded), unless ``exact``: then the in-memory FAISS index does
        (loaded now if needed; exact with the default Flat factory). A read-only store first catches up with
        what writers committed since it last looked. ``nprobe`` (IVF indexes): lists visited per query, kept
        for later searches (None: the current setting, by default ``vector_index.default_nprobe``).
        """
        queries = normalize(query_vectors)
        if queries.shape[1] != self.dim:
            raise ValueError(f"expected queries of width {self.dim}, got {queries.shape[1]}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if nprobe is not None:
            self.nprobe = nprobe
        if not exact and (ondisk := self.ondisk()) is not None:
            return self._search_ondisk(ondisk, queries, k)
        if not self.ram_index:
            raise ConfigError(
                f"index {self.name!r} keeps no in-memory FAISS index (factory {self.factory!r}) "
                + ("and exact search needs one: search its on-disk index with --nprobe set to its number of lists "
                   "for an exhaustive scan" if exact else
                   f"and its on-disk index is not built yet: run `vtr index ondisk --index {self.name}`"))
        self._ensure_loaded()
        if self._suspect:
            self.check()
        stale_seen: set[int] = set()
        with self.catalog.read() as s:
            self._catch_up(s)
            self._last_total = self._index.ntotal
            results: list[list[Hit]] = [[] for _ in range(len(queries))]
            k = min(k, self._index.ntotal)  # FAISS allocates k results per query: never more than it holds
            if k == 0:
                return results
            kk = k
            while True:
                scores, ids = self._index.search(queries, kk)
                wanted = np.unique(ids[ids >= 0])
                rows = self._segment_rows(s, wanted)
                stale = [int(i) for i in wanted if int(i) not in rows]
                stale_seen.update(stale)
                for qi in range(len(queries)):
                    hits = []
                    for score, vid in zip(scores[qi], ids[qi], strict=True):
                        row = rows.get(int(vid)) if vid >= 0 else None
                        if row is None:
                            continue
                        hits.append(Hit(float(score), int(vid), row[0], row[1], row[2]))
                        if len(hits) == k:
                            break
                    results[qi] = hits
                short = any(len(h) < k for h in results)
                if not short or not stale or kk >= self._index.ntotal:
                    break
                kk = min(self._index.ntotal, kk * 2 + len(stale))
        if stale_seen:
            # In the catalog's snapshot these ids are gone (a writer removed them, or a crash left them in
            # the FAISS file); ids are never reused, so they can go from this in-memory index for good.
            self._index.remove_ids(np.fromiter(stale_seen, np.int64))
            self._dirty = True
            if not self.read_only:
                log.warning("index %r: dropped %d stale FAISS vectors", self.name, len(stale_seen))
        return results

    def _search_ondisk(self, ondisk: OnDiskIndex, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Search the on-disk build and resolve its ids through one catalog snapshot: ids removed since the build
        are skipped (asking the build for more until ``k`` live ones are found or it is exhausted)."""
        results: list[list[Hit]] = [[] for _ in range(len(queries))]
        with self.catalog.read() as s:
            self._seen = int(self._record(s).generation)
            total = self._last_total = ondisk.ntotal
            k = min(k, total)
            kk = k
            while k:
                scores, ids = ondisk.search(queries, kk)
                rows = self._segment_rows(s, np.unique(ids[ids >= 0]))
                results = [[Hit(float(sc), int(i), *rows[int(i)]) for sc, i in zip(srow, irow, strict=True)
                            if int(i) in rows][:k] for srow, irow in zip(scores, ids, strict=True)]
                gone = int(np.sum((ids >= 0) & ~np.isin(ids, np.fromiter(rows, np.int64, len(rows)))))
                if not gone or kk >= total or all(len(h) >= k for h in results):
                    break
                kk = min(total, kk * 2 + gone)
        return results

    def ondisk(self) -> OnDiskIndex | None:
        """The on-disk IVF build of this index (None: none built), opened memory-mapped on first use and again
        after ``vtr index ondisk`` replaced it; a warning when it is older than the catalog."""
        try:
            st = (self.ondisk_path / "meta.json").stat()
        except OSError:
            if self._ondisk is not None and self.ondisk_path.with_name(self.ondisk_path.name + ".old").exists():
                return self._ondisk  # a rebuild is swapping the folder this very moment: the open build still works
            self._ondisk, self._ondisk_key = None, None
            return None
        key = (st.st_ino, st.st_mtime_ns)
        if self._ondisk is None or key != self._ondisk_key:
            ondisk = OnDiskIndex(self.ondisk_path, nprobe=self._nprobe)
            if ondisk.info.dim != self.dim:
                log.warning("index %r: its on-disk build holds %d-d vectors, the index is %d-d: ignored (rebuild it "
                            "with `vtr index ondisk`)", self.name, ondisk.info.dim, self.dim)
                return None
            self._ondisk, self._ondisk_key = ondisk, key
            with self.catalog.read() as s:
                generation = int(self._record(s).generation)
            if ondisk.info.generation != generation:
                log.warning("the on-disk index of %r was built from an older catalog state (generation %s, now %s): "
                            "removed videos are skipped, new ones are missing until `vtr index ondisk` rebuilds it",
                            self.name, ondisk.info.generation, generation)
        return self._ondisk

    def _drop_ondisk(self) -> None:
        """Delete the on-disk build (its vectors are gone from the catalog: a reindex, a removed index)."""
        self._ondisk, self._ondisk_key = None, None
        remove_ondisk(self.home, self.name)

    def catch_up(self) -> None:
        """Bring the in-memory FAISS index (when loaded) up to what writers committed since this store last
        looked; a store that has not loaded it only notes the catalog's generation."""
        with self.catalog.read() as s:
            if self.loaded:
                self._catch_up(s)
            else:
                self._seen = int(self._record(s).generation)

    def _catch_up(self, s: Session) -> None:
        record = self._record(s)
        if int(record.generation) != self._generation:
            if not self.read_only:
                log.warning("index %r changed under this writer; reconciling", self.name)
            index, report = self._reconcile(s, self._index, self._catalog_ids(s))
            self._set_index(index)
            if report.changed:
                self._dirty = True
            self._generation = int(record.generation)
        self._seen = self._generation

    def _segment_rows(self, s: Session, ids: np.ndarray) -> dict[int, tuple[str, float, float]]:
        rows: dict[int, tuple[str, float, float]] = {}
        for chunk in _chunks(ids):
            stmt = (
                sa.select(Segment.vector_id, Video.path_bytes, Segment.start_s, Segment.end_s)
                .join(Video, Segment.video_id == Video.id)
                .where(Video.index_id == self.index_id, Segment.vector_id.in_(chunk))
            )
            for vid, raw, a, b in s.execute(stmt):
                rows[int(vid)] = (decode_path(raw), float(a), float(b))
        return rows

    def get_embeddings(self, vector_ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors ``[N, dim]`` of ``vector_ids``, in order.

        Raises KeyError for an id this index does not hold.
        """
        wanted = [int(i) for i in vector_ids]
        found: dict[int, bytes] = {}
        with self.catalog.read() as s:
            for chunk in _chunks(wanted):
                stmt = sa.select(Embedding.vector_id, Embedding.vector).where(
                    Embedding.index_id == self.index_id, Embedding.vector_id.in_(chunk)
                )
                for vid, vec in s.execute(stmt):
                    found[int(vid)] = bytes(vec)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"vector ids not in index {self.name!r}: {missing[:10]}")
        vectors = np.zeros((len(wanted), self.dim), np.float32)
        for j, i in enumerate(wanted):
            vectors[j] = np.frombuffer(found[i], np.float32)
        return vectors

    def status(self) -> StoreStatus:
        """Counts from one catalog snapshot, plus the sizes of the database and FAISS files."""
        with self.catalog.read() as s:
            record = self._record(s)
            by_status = dict.fromkeys(("indexed", "failed", "pending"), 0)
            for st, n in s.execute(
                sa.select(Video.status, sa.func.count()).where(Video.index_id == self.index_id).group_by(Video.status)
            ):
                by_status[st] = int(n)
            failures = [
                (p, e or "")
                for p, e in s.execute(
                    sa.select(Video.path, Video.error)
                    .where(Video.index_id == self.index_id, Video.status == "failed")
                    .order_by(Video.path)
                )
            ]
            segments = s.scalar(
                sa.select(sa.func.count())
                .select_from(Segment)
                .join(Video, Segment.video_id == Video.id)
                .where(Video.index_id == self.index_id)
            )
            vectors = s.scalar(
                sa.select(sa.func.count()).select_from(Embedding).where(Embedding.index_id == self.index_id)
            )
            version = int(s.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar() or 0)
            model, weights = record.model_name, record.weights_sha256
            dim, factory = record.embedding_dim, record.factory
            policy = self._policy(s)
        try:
            faiss_bytes: int | None = self.faiss_path.stat().st_size
        except OSError:
            faiss_bytes = None
        return StoreStatus(
            name=self.name,
            model_name=model,
            weights_sha256=weights,
            embedding_dim=int(dim),
            factory=factory,
            videos=by_status,
            failures=failures,
            segments=int(segments or 0),
            vectors=int(vectors or 0),
            faiss_vectors=self._index.ntotal if self.loaded else None,
            db_bytes=self.catalog.size_on_disk(),
            faiss_bytes=faiss_bytes,
            schema_version=version,
            segmentation=policy.to_dict() if policy is not None else None,
        )

    @property
    def generation(self) -> int:
        """The catalog generation the last search or catch-up saw (-1: none yet)."""
        return self._seen

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (None: the default), by the on-disk build and the in-memory index alike;
        a search's ``nprobe`` argument sets it too."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"nprobe must be >= 1, got {value}")
        self._nprobe = value
        self._index.nprobe = value
        if self._ondisk is not None:
            self._ondisk.nprobe = value or default_nprobe(int(self._ondisk.ivf.nlist))

    @property
    def ntotal(self) -> int:
        """Vectors in the in-memory FAISS index (loaded now if this store is lazy; 0 when it keeps none)."""
        if self.ram_index:
            self._ensure_loaded()
        return self._index.ntotal

    @property
    def last_search_total(self) -> int:
        """Vectors in the index that answered the last search (the on-disk build or the in-memory index)."""
        return self._last_total

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Flush (writable stores) and release the catalog and the write lock."""
        try:
            if not self.read_only and (self._dirty or self._suspect):
                self.flush()
        finally:
            self.catalog.close()
            if self._lock is not None:
                end_writing(self.home, self.name)
                self._lock.release()
                self._lock = None

    def __enter__(self) -> LibraryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_model(record: IndexRecord, model_name: str | None, weights_sha256: str | None, dim: int | None) -> None:
    """ConfigError when the caller's model is not the one ``record`` was built with."""

    def short(h: str | None) -> str:
        return f"{h[:16]}..." if h else "unknown"

    differs = model_name is not None and model_name != record.model_name
    differs |= (
        weights_sha256 is not None
        and record.weights_sha256 is not None
        and weights_sha256.lower() != record.weights_sha256.lower()
    )
    differs |= dim is not None and int(dim) != int(record.embedding_dim)
    if differs:
        raise ConfigError(
            f"index {record.name!r} was built with model {record.model_name!r} (weights sha256 "
            f"{short(record.weights_sha256)}, {record.embedding_dim}-d) but this run uses model "
            f"{model_name or record.model_name!r} (weights sha256 {short(weights_sha256)}"
            f"{f', {dim}-d' if dim is not None else ''}): embeddings of different models cannot be mixed. "
            "Re-run with --reindex to rebuild the index with the new model, or use another index name"
        )


def _reset_index(s: Session, record: IndexRecord) -> None:
    """Delete every video, segment and embedding of ``record`` (ids are not reused afterwards)."""
    video_ids = sa.select(Video.id).where(Video.index_id == record.id)
    s.execute(sa.delete(Segment).where(Segment.video_id.in_(video_ids)))
    s.execute(sa.delete(Embedding).where(Embedding.index_id == record.id))
    s.execute(sa.delete(Video).where(Video.index_id == record.id))
    record.vector_count = 0
    record.generation = int(record.generation) + 1
    record.faiss_checksum = None
    record.faiss_generation = None
    record.updated_at = utcnow()


# --------------------------------------------------------------------------- whole-home helpers


def _catalog_exists(home: Path, db_url: str | None) -> bool:
    return db_url is not None or (home / CATALOG_FILE).exists()


def list_indexes(home: str | os.PathLike | None = None, db_url: str | None = None) -> list[IndexSummary]:
    """The indexes in ``home``'s catalog (empty when there is none yet), by name."""
    home_path = data_home(home, create=False)
    if not _catalog_exists(home_path, db_url):
        return []
    read_only = db_url is None and not home_writable(home_path)  # a read-only home can be listed
    with Catalog.open(home_path, db_url, read_only=read_only) as catalog, catalog.read() as s:
        counts = {i: n for i, n in s.execute(sa.select(Video.index_id, sa.func.count()).group_by(Video.index_id))}
        return [
            IndexSummary(
                name=r.name,
                model_name=r.model_name,
                weights_sha256=r.weights_sha256,
                embedding_dim=int(r.embedding_dim),
                factory=r.factory,
                vector_count=int(r.vector_count),
                videos=int(counts.get(r.id, 0)),
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in s.scalars(sa.select(IndexRecord).order_by(IndexRecord.name))
        ]


def remove_index(
    home: str | os.PathLike | None = None, name: str = "default", db_url: str | None = None, lock_timeout_s: float = 0.0
) -> bool:
    """Delete the index ``name`` (catalog rows and FAISS file); False if there was no such index."""
    _check_name(name)
    home_path = data_home(home, create=False)
    if not _catalog_exists(home_path, db_url):
        return False
    with Catalog.open(home_path, db_url) as catalog:
        lock = index_lock(catalog.engine, _lock_path(home_path, name), name, lock_timeout_s, f"index {name!r}")
        try:
            with catalog.write() as s:
                record = s.scalar(sa.select(IndexRecord).where(IndexRecord.name == name))
                if record is not None:
                    _reset_index(s, record)
                    s.delete(record)
            # The catalog commit is what counts; a FAISS file left behind by a crash here is never trusted
            # (a later index of that name has no checksum recorded for it, so it is rebuilt).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_faiss_path(home_path, name))
            remove_ondisk(home_path, name)
            return record is not None
        finally:
            lock.release()  # the lock file stays: unlinking it would let two processes hold "the" lock
