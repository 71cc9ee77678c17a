"""``vtr.Library``: a searchable video library (one named index of a data home, one model).

``Library(home).index(paths)`` embeds videos into the index; ``.search(text, k)`` answers queries. The library
opens its read-only store once, on first use, and keeps it (searches catch up with what writers committed, by
generation) until :meth:`Library.close` or the end of a ``with`` block. The CLI is a thin layer over this class.
Re-ranking re-encodes the few candidate clips with the ITM head at query time. The stored-vector format is
:mod:`vtr.index.vectors`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vtr.data.clips import ClipDataset, ClipRequest, clip_loader
from vtr.data.decode import read_frames
from vtr.data.transforms import eval_transform
from vtr.errors import ConfigError, VideoDecodeError
from vtr.index.vectors import index_vectors, query_vectors
from vtr.runtime import inference_dtype, resolve_device

log = logging.getLogger(__name__)

@dataclass
class IndexReport:
    """What ``Library.index`` did."""

    indexed: int = 0
    segments: int = 0
    unchanged: int = 0
    touched: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    pruned: int = 0
    wall_s: float = 0.0
    videos_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchHit:
    rank: int
    score: float
    path: str
    start_s: float
    end_s: float
    dual_score: float | None = None
    vector_id: int | None = None  # the segment's vector in the index (catalog ``segments.vector_id``)
    model: str | None = None  # the model the index was built with
    generation: int | None = None  # the index generation the search saw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Library:
    """A searchable video library in a data home: one named index, one model.

    >>> lib = Library(home="~/.vtr", model="my-model")        # doctest: +SKIP
    >>> lib.index(["./videos"]); lib.search("person chopping onions", k=5)
    """

    def __init__(self, home: str | os.PathLike | None = None, index: str = "default",
                 model: str | os.PathLike | None = None, device: str = "auto", db_url: str | None = None,
                 factory: str | None = None, nprobe: int | None = None) -> None:
        self.home, self.index_name, self.model_ref = home, index, model
        self.device = resolve_device(device)
        self.db_url, self.factory, self.nprobe = db_url, factory, nprobe  # nprobe: IVF lists searched (None: default)
        self._model = None
        self._reader = None  # the read-only store: opened on first use, kept until close()
        self._model_checked = False

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the read-only store (the model stays loaded; a later search opens the store again)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _store(self):
        """The read-only store, opened once; each search catches up with what writers committed since."""
        if self._reader is None:
            self._reader = self._open_store(read_only=True, write=False)
        return self._reader

    # ------------------------------------------------------------------ model

    def _adopt_index_model(self) -> None:
        """With no model given, use the one the index was built with; a given one must be that one."""
        store = self._store()
        if self.model_ref is None:
            self.model_ref = store.model_name
        elif not self._model_checked:
            name, sha = self._model_identity()
            store.check_model(name, sha)
        self._model_checked = True

    @property
    def model(self):
        if self._model is None:
            from vtr.model.registry import create_model

            model = create_model(self.model_ref, home=self.home)
            if not getattr(model, "weights_sha256", None):
                raise ConfigError(f"model {self.model_ref!r} has no trained weights (a bare architecture): pass "
                                  "--model with a model directory or an installed model (vtr models list)")
            self._model = model.to(self.device, inference_dtype(self.device)).eval()
        return self._model

    def _model_identity(self) -> tuple[str, str | None]:
        """(name, weights sha256) of the model as the index records it, without loading the weights."""
        from vtr.model.registry import read_meta, resolve_model_path

        path = resolve_model_path(self.model_ref, self.home)
        if path is None:
            raise ConfigError("no model: pass --model NAME|DIR, or set a default with `vtr models default NAME`")
        meta = read_meta(path)
        return str(self.model_ref or path.name), meta.get("weights_sha256")

    def _open_store(self, read_only: bool, reindex: bool = False, write: bool = True):
        from vtr.index.store import LibraryStore

        kw: dict[str, Any] = {}
        if write:
            name, sha = self._model_identity()
            kw = {"model_name": name, "weights_sha256": sha, "embed_dim": self.model.cfg.embed_dim,
                  "factory": self.factory}
        return LibraryStore.open(self.home, self.index_name, db_url=self.db_url, read_only=read_only,
                                 reindex=reindex, device=self.device.type, **kw)

    @torch.no_grad()
    def _encode_clips(self, video: torch.Tensor) -> torch.Tensor:
        model = self.model
        dtype = next(model.parameters()).dtype
        return model.encode_video(video.to(self.device, dtype, non_blocking=True)).embeds

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.model.tokenize(list(texts))
        return self.model.encode_text(tok["input_ids"], tok["attention_mask"]).embeds

    # ------------------------------------------------------------------ indexing

    def index(
        self,
        paths: Iterable[str | os.PathLike],
        segment: float | None = None,
        stride: float | None = None,
        frames: int | None = None,
        workers: int = 2,
        batch_size: int = 16,
        prune: bool = False,
        reindex: bool = False,
        retry_failed: bool = False,
        flush_every: int = 64,
        flush_interval_s: float = 20.0,
        progress: bool = True,
        on_video: Callable[[str], None] | None = None,
    ) -> IndexReport:
        """Index the videos under ``paths`` (incremental: unchanged files are skipped; resumable after a crash).

        ``segment``/``stride`` (seconds): cut videos longer than ``segment`` into windows, one vector each.
        Bad files are recorded with their reason and skipped. The catalog commits each encoder batch of videos
        atomically (all or none of them).
        """
        from vtr.index.store import VideoEntry

        t0 = time.perf_counter()
        report = IndexReport()
        model = self.model
        frames = frames or model.cfg.num_frames
        with self._open_store(read_only=False, reindex=reindex) as store:
            if reindex:
                store.reindex()
            plan = store.plan([os.fspath(p) for p in paths], prune=prune, retry_failed=retry_failed)
            report.unchanged, report.touched = len(plan.unchanged), len(plan.touched)
            report.pruned = len(plan.deleted) if plan.pruned else 0
            todo = plan.to_index
            clips = ClipDataset([ClipRequest(p.path, content_hash=p.content_hash) for p in todo], frames,
                                model.cfg.img_size, segment=segment, stride=stride, probe=True, hash_content=True,
                                dtype=torch.float16)
            loader = clip_loader(clips, workers, pin_memory=self.device.type == "cuda",
                                 videos_per_item=max(1, min(8, batch_size)))
            pending: list[dict[str, Any]] = []  # decoded videos waiting for a full encoder batch
            # A launched batch whose embeddings are still on their way back from the GPU; it is written to the
            # catalog when the next batch has been launched, so the main process never waits on the encoder.
            inflight: tuple[list[dict[str, Any]], torch.Tensor, Any] | None = None
            done_since_flush, last_flush = 0, time.perf_counter()

            def write_inflight() -> None:
                nonlocal inflight, done_since_flush, last_flush
                if inflight is None:
                    return
                batch, embeds, ready = inflight
                inflight = None
                if ready is not None:
                    ready.synchronize()
                vectors = index_vectors(embeds)
                entries, start = [], 0
                for p in batch:  # one catalog transaction for the whole batch
                    n = len(p["windows"])
                    entries.append(VideoEntry(p["info"], p["windows"], vectors[start:start + n], p["sha256"]))
                    start += n
                store.add_videos(entries)
                report.indexed += len(batch)
                report.segments += start
                done_since_flush += len(batch)
                if on_video:
                    for p in batch:
                        on_video(todo[p["i"]].path)
                # Saving FAISS rewrites the whole file: do it at most every flush_interval_s (the catalog is the
                # commit point; after a crash the index is rebuilt from it), so big libraries do not go quadratic.
                if done_since_flush >= flush_every and time.perf_counter() - last_flush >= flush_interval_s:
                    store.flush()
                    done_since_flush, last_flush = 0, time.perf_counter()

            def encode_pending() -> None:
                nonlocal inflight
                if not pending:
                    return
                clips = torch.cat([p.pop("video") for p in pending])
                embeds = torch.cat([self._encode_clips(clips[i:i + batch_size])
                                    for i in range(0, len(clips), batch_size)]).float()
                ready = None
                if embeds.is_cuda:  # copy back without waiting: pinned buffer + an event to wait on later
                    host = torch.empty(embeds.shape, dtype=embeds.dtype, pin_memory=True)
                    host.copy_(embeds, non_blocking=True)
                    ready = torch.cuda.Event()
                    ready.record()
                    embeds = host
                write_inflight()
                inflight = (list(pending), embeds, ready)
                pending.clear()

            bar = tqdm(total=len(todo), desc="index", unit="video", file=sys.stderr, disable=not progress)
            try:
                for group in loader:
                    video = group["video"]
                    if video is not None and self.device.type == "cuda":  # pinned -> GPU now (async): the batch
                        video = video.to(self.device, non_blocking=True)  # is joined there, not by a CPU copy
                    start = 0
                    for item in group["items"]:
                        if "error" in item:
                            path = todo[item["i"]].path
                            store.mark_failed(path, item["error"])
                            report.failed.append({"path": path, "reason": item["error"], "error": item["message"]})
                        else:
                            n = len(item["windows"])
                            item["video"] = video[start:start + n]
                            start += n
                            pending.append(item)
                            if sum(len(p["windows"]) for p in pending) >= batch_size:
                                encode_pending()
                        bar.update(1)
                encode_pending()
                write_inflight()
            finally:
                bar.close()
                store.flush()
        report.wall_s = round(time.perf_counter() - t0, 3)
        report.videos_per_s = round(report.indexed / report.wall_s, 3) if report.wall_s else 0.0
        return report

    # ------------------------------------------------------------------ search

    def search(self, queries: str | Sequence[str], k: int = 10, rerank: bool = False,
               rerank_candidates: int = 16) -> list[list[SearchHit]]:
        """Text-to-video search; ``rerank`` re-scores the top candidates with the ITM head (slower)."""
        self._adopt_index_model()
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts:
            return []
        text_embeds = self.encode_text(texts)
        results = self._search_vectors(query_vectors(text_embeds), max(k, rerank_candidates) if rerank else k)
        if rerank:
            results = [self._rerank(t, hits)[:k] for t, hits in zip(texts, results, strict=True)]
        return results

    def search_video(self, path: str | os.PathLike, k: int = 10) -> list[SearchHit]:
        """Video-to-video search: the query clip's mean frame feature against the library."""
        self._adopt_index_model()
        frames = self.model.cfg.num_frames
        clip = eval_transform(read_frames(os.fspath(path), frames, "middle").frames, self.model.cfg.img_size)
        m = torch.nn.functional.normalize(self._encode_clips(clip[None]).float(), dim=-1).mean(1)
        return self._search_vectors(query_vectors(m), k)[0]

    def search_vectors(self, queries: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """Search with ready query vectors (:func:`~vtr.index.vectors.query_vectors` format, [Q, width])."""
        return self._search_vectors(queries, k)

    def _search_vectors(self, q: np.ndarray, k: int) -> list[list[SearchHit]]:
        store = self._store()
        hits = store.search(q, k, nprobe=self.nprobe)
        return [[SearchHit(r + 1, h.score, h.video_path, h.start_s, h.end_s, vector_id=h.vector_id,
                           model=store.model_name, generation=store.generation) for r, h in enumerate(row)]
                for row in hits]

    @torch.no_grad()
    def _rerank(self, text: str, hits: list[SearchHit]) -> list[SearchHit]:
        if not hits:
            return hits
        model = self.model
        dtype = next(model.parameters()).dtype
        tok = model.tokenize([text])
        states = model.encode_text(tok["input_ids"], tok["attention_mask"]).states
        scored = []
        for hit in hits:
            try:
                window = (hit.start_s, hit.end_s)
                clip = read_frames(hit.path, model.cfg.num_frames, "middle", window=window)
            except VideoDecodeError:
                continue  # the file changed or vanished since indexing: drop it
            video = eval_transform(clip.frames, model.cfg.img_size)[None].to(self.device, dtype)
            tokens = model.encode_video(video).tokens
            logit = model.itm_logits(tokens, states, tok["attention_mask"])[0, 1].float().item()
            scored.append(SearchHit(0, logit, hit.path, hit.start_s, hit.end_s, dual_score=hit.score,
                                    vector_id=hit.vector_id, model=hit.model, generation=hit.generation))
        scored.sort(key=lambda h: -h.score)
        for r, h in enumerate(scored):
            h.rank = r + 1
        return scored

    # ------------------------------------------------------------------ management

    @property
    def store(self):
        """The read-only :class:`~vtr.index.store.LibraryStore` (opened on first use, kept until close())."""
        return self._store()

    def status(self) -> dict[str, Any]:
        store = self._store()
        store.catch_up()
        return asdict(store.status())


def list_libraries(home=None, db_url: str | None = None) -> list[dict[str, Any]]:
    from vtr.index.store import list_indexes

    return [asdict(s) for s in list_indexes(home, db_url=db_url)]


def remove_library(home=None, name: str = "default", db_url: str | None = None) -> bool:
    from vtr.index.store import remove_index

    return remove_index(home, name, db_url=db_url)


def read_queries(path: str | os.PathLike) -> list[str]:
    """Queries from a text file, one per line (blank lines and #-comments skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [q.strip() for q in lines if q.strip() and not q.lstrip().startswith("#")]
