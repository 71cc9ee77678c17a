"""What the server asks of a library: searches and catalog look-ups by id, safe to call from many threads.

One :class:`~vtr.library.Library` per server process (model and read-only store loaded once). The store is not
thread-safe, so searches and status take one lock; catalog look-ups by id run in their own read sessions.
Files are found only through the catalog: a video id or segment id, never a path from the request.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from vtr.errors import ConfigError, VtrError
from vtr.index.catalog import Segment, Video, decode_path
from vtr.index.vectors import EXTRA_DIMS
from vtr.library import Library, SearchHit


class NotReadyError(VtrError):
    """The library has no index (or catalog) yet: the page says what to run."""

    exit_code = 2


class NotFoundError(VtrError):
    """An id that is not in this index's catalog."""


@dataclass(frozen=True)
class VideoRow:
    id: int
    path: str  # the OS path (surrogateescape), only ever taken from the catalog
    display: str
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    duration: float | None
    fps: float | None
    width: int | None
    height: int | None
    status: str
    error: str | None


@dataclass(frozen=True)
class SegmentRow:
    id: int
    vector_id: int
    start_s: float
    end_s: float
    video: VideoRow


def _video_row(v: Video) -> VideoRow:
    return VideoRow(v.id, decode_path(v.path_bytes), v.path, v.size, v.mtime_ns, v.content_hash, v.duration, v.fps,
                    v.width, v.height, v.status, v.error)


MAX_BATCH = 32  # text queries answered together at most


@dataclass(eq=False)
class _Pending:
    """A text query waiting for its batch."""

    q: str
    k: int
    nprobe: int | None
    hits: list[SearchHit] | None = None
    error: Exception | None = None
    done: bool = False


class Backend:
    """Searches, status and catalog look-ups of one library, serialised where the store needs it."""

    def __init__(self, library: Library, home: os.PathLike | str, index: str) -> None:
        self.library = library
        self.home = home
        self.index = index
        self._lock = threading.RLock()
        self._queue_cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._batch_running = False

    def index_hint(self) -> str:
        return f"vtr index VIDEO_FOLDER --home {os.fspath(self.home)}" + (
            f" --index {self.index}" if self.index != "default" else "")

    def _store(self):
        """The library's read-only store; NotReadyError (with what to run) while there is no index."""
        with self._lock:
            try:
                return self.library.store
            except ConfigError as e:
                raise NotReadyError(f"{e} — run `{self.index_hint()}` (this server picks it up when done)") from e

    # ------------------------------------------------------------------ searches

    def search(self, q: str, k: int, rerank: bool, nprobe: int | None) -> list[dict[str, Any]]:
        """Text search. Queries that arrive while another search runs are answered together in one batch
        (one text-encoder call, one FAISS call), which is what lets concurrent clients share the CPU."""
        if rerank:
            store = self._store()
            with self._lock:
                store.nprobe = nprobe
                return self.records(self.library.search(q, k=k, rerank=True)[0])
        item = _Pending(q, k, nprobe)
        with self._queue_cv:
            self._queue.append(item)
        while True:
            with self._queue_cv:
                if item.done:
                    break
                if self._batch_running:
                    self._queue_cv.wait()
                    continue
                self._batch_running = True
                batch = [x for x in self._queue if x.nprobe == item.nprobe][:MAX_BATCH]
                self._queue = [x for x in self._queue if x not in batch]
            try:
                self._run_batch(batch)
            finally:
                with self._queue_cv:
                    self._batch_running = False
                    self._queue_cv.notify_all()
        if item.error is not None:
            raise item.error
        return self.records(item.hits)

    def _run_batch(self, batch: list[_Pending]) -> None:
        """Answer ``batch`` with one search. The store is looked up here, not before queueing: a request waiting
        for the store's lock behind a running batch could not join the next one."""
        try:
            store = self._store()
            with self._lock:
                store.nprobe = batch[0].nprobe  # this batch's (None: the index's default), not the last request's
                results = self.library.search([x.q for x in batch], k=max(x.k for x in batch))
            for x, hits in zip(batch, results, strict=True):
                x.hits = hits[:x.k]
        except Exception as e:  # every request of the batch gets the error
            for x in batch:
                x.error = e
        for x in batch:
            x.done = True

    def similar_to_segment(self, segment_id: int, k: int) -> list[dict[str, Any]]:
        seg = self.segment(segment_id)
        return self._similar([seg.vector_id], k, exclude={seg.vector_id})

    def similar_to_video(self, video_id: int, k: int) -> list[dict[str, Any]]:
        video, segments = self.video(video_id)
        if not segments:
            raise NotFoundError(f"video {video_id} has no indexed segments ({video.status}: {video.error or ''})")
        ids = [s.vector_id for s in segments]
        return self._similar(ids, k, exclude=set(ids))

    def _similar(self, vector_ids: list[int], k: int, exclude: set[int]) -> list[dict[str, Any]]:
        """The library's segments nearest the mean feature of ``vector_ids`` (those excluded), best first."""
        store = self._store()
        with self._lock:
            stored = store.get_embeddings(vector_ids)
            width = stored.shape[1] - EXTRA_DIMS
            m = stored[:, :width].mean(0)  # the mean frame feature (the stored vectors hold it in front)
            query = np.zeros((1, stored.shape[1]), np.float32)
            query[0, :width] = m / max(float(np.linalg.norm(m)), 1e-12)
            hits = self.library.search_vectors(query, k + len(exclude))[0]
        hits = [h for h in hits if h.vector_id not in exclude][:k]
        for r, h in enumerate(hits):
            h.rank = r + 1
        return self.records(hits)

    def status(self) -> dict[str, Any]:
        """Counts, failures with reasons and the generation; ``ready: false`` and what to run without an index."""
        t0 = time.perf_counter()
        try:
            store = self._store()
            with self._lock:
                status = self.library.status()
                generation = store.generation
        except NotReadyError as e:
            return {"ready": False, "index": self.index, "message": str(e), "hint": self.index_hint()}
        status["failures"] = [{"path": p, "reason": r} for p, r in status.get("failures", [])]
        indexed = status.get("videos", {}).get("indexed", 0)
        return {"ready": True, "index": self.index, "generation": generation, **status,
                "message": None if indexed else f"no videos indexed yet: run `{self.index_hint()}`",
                "hint": self.index_hint(), "took_ms": round(1000 * (time.perf_counter() - t0), 2)}

    # ------------------------------------------------------------------ catalog look-ups

    def records(self, hits: list[SearchHit]) -> list[dict[str, Any]]:
        """``vtr search --json`` records plus the catalog ids and the URLs of each hit's thumbnail and video."""
        store = self._store()
        ids = [h.vector_id for h in hits if h.vector_id is not None]
        found: dict[int, tuple[int, int]] = {}
        if ids:
            with store.catalog.read() as s:
                stmt = (sa.select(Segment.vector_id, Segment.id, Segment.video_id)
                        .join(Video, Segment.video_id == Video.id)
                        .where(Video.index_id == store.index_id, Segment.vector_id.in_(ids)))
                found = {int(v): (int(sid), int(vid)) for v, sid, vid in s.execute(stmt)}
        out = []
        for h in hits:
            seg_id, video_id = found.get(h.vector_id, (None, None)) if h.vector_id is not None else (None, None)
            rec = h.to_dict()
            rec.update(segment_id=seg_id, video_id=video_id, name=os.path.basename(h.path),
                       thumbnail_url=f"/api/segments/{seg_id}/thumbnail.jpg" if seg_id is not None else None,
                       video_url=f"/api/videos/{video_id}/file" if video_id is not None else None)
            out.append(rec)
        return out

    def video(self, video_id: int) -> tuple[VideoRow, list[SegmentRow]]:
        store = self._store()
        with store.catalog.read() as s:
            v = s.scalar(sa.select(Video).where(Video.id == video_id, Video.index_id == store.index_id))
            if v is None:
                raise NotFoundError(f"no video with id {video_id} in index {self.index!r}")
            row = _video_row(v)
            segs = s.execute(sa.select(Segment.id, Segment.vector_id, Segment.start_s, Segment.end_s)
                             .where(Segment.video_id == v.id).order_by(Segment.start_s)).all()
        return row, [SegmentRow(int(i), int(vid), float(a), float(b), row) for i, vid, a, b in segs]

    def segment(self, segment_id: int) -> SegmentRow:
        store = self._store()
        with store.catalog.read() as s:
            found = s.execute(sa.select(Segment, Video).join(Video, Segment.video_id == Video.id)
                              .where(Segment.id == segment_id, Video.index_id == store.index_id)).first()
            if found is None:
                raise NotFoundError(f"no segment with id {segment_id} in index {self.index!r}")
            seg, v = found
            return SegmentRow(int(seg.id), int(seg.vector_id), float(seg.start_s), float(seg.end_s), _video_row(v))

    def video_file(self, video_id: int) -> VideoRow:
        """The catalog's file of ``video_id`` if it is still the regular file that was indexed (size and mtime)."""
        row, _ = self.video(video_id)
        check_unchanged(row)
        return row


class FileChangedError(VtrError):
    """The file on disk is not the one the catalog indexed."""


def check_unchanged(row: VideoRow) -> os.stat_result:
    """The file's stat, if it is a regular file with the size and mtime the catalog recorded."""
    import stat

    try:
        st = os.stat(row.path)
    except OSError as e:
        raise NotFoundError(f"video {row.id} ({row.display}) is gone from disk: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode) or (row.size is not None and st.st_size != row.size) or (
            row.mtime_ns is not None and st.st_mtime_ns != row.mtime_ns):
        raise FileChangedError(f"video {row.id} ({row.display}) changed since it was indexed: run `vtr index` again")
    return st
