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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vtr.collapse import collapse_windows
from vtr.errors import ConfigError, VideoDecodeError
from vtr.estimate import RunEstimate
from vtr.index.vectors import index_vectors, query_vectors
from vtr.index_progress import IndexProgress
from vtr.runtime import inference_dtype, resolve_device
from vtr.segmentation import default_policy, requested_policy, settle_policy
from vtr.threads import indexing_threads

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
    segmentation: dict[str, Any] | None = None  # the index's SegmentPolicy (vtr.segmentation)
    known_failures: list[dict[str, str | None]] = field(default_factory=list)  # failed before, not retried
    missing: int = 0  # catalog files under the roots gone from disk and not pruned (searchable until --prune)

    def to_dict(self) -> dict[str, Any]:
        """The ``vtr index --json`` report (:mod:`vtr.schema`)."""
        from vtr.schema import index_document

        return index_document(self)


@dataclass
class SearchHit:
    rank: int
    score: float
    path: str
    start_s: float
    end_s: float
    dual_score: float | None = None  # with re-ranking: the dual-encoder cosine the hit was found with
    score_kind: str = "cosine"  # "cosine" (dual encoder) or "itm_logit" (re-ranked)
    windows: int = 1  # indexed windows of this video this hit stands for (neighbours collapsed into the best)
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
                 factory: str | None = None, nprobe: int | None = None, exact: bool = False) -> None:
        self.home, self.index_name, self.model_ref = home, index, model
        self.device = resolve_device(device)
        self.db_url, self.factory, self.nprobe = db_url, factory, nprobe  # nprobe: IVF lists searched (None: default)
        # exact: search the in-memory FAISS index even when an on-disk build exists (loads every vector in RAM)
        self.exact = exact
        self._model = None
        self._tower = None  # the cached text tower (CPU searches without the full model), see vtr.model.text_tower
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
        """The read-only store, opened once (lazily: its in-memory FAISS index is loaded only if a search needs
        it, never when the on-disk build answers); each search catches up with what writers committed since."""
        if self._reader is None:
            self._reader = self._open_store(read_only=True, write=False, lazy=True)
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

    def _existing_index_model(self) -> str | None:
        """The model name the index was built with, or None when there is no such index yet."""
        from vtr.index.store import list_indexes

        return next((i.model_name for i in list_indexes(self.home, db_url=self.db_url) if i.name == self.index_name),
                    None)

    def _model_identity(self) -> tuple[str, str | None]:
        """(name, weights sha256) of the model as the index records it, without loading the weights."""
        from vtr.model.registry import default_model, read_meta, resolve_model_path

        path = resolve_model_path(self.model_ref, self.home)
        if path is None:
            raise ConfigError("no model: pass --model NAME|DIR, or set a default with `vtr models default NAME`")
        meta = read_meta(path)  # the default model is recorded by its registered name (searches resolve it)
        return str(self.model_ref or default_model(self.home) or path.name), meta.get("weights_sha256")

    def _model_config(self):
        """The model's config (config.json), without loading its weights."""
        if self._model is not None:
            return self._model.cfg
        import json

        from vtr.model.registry import CONFIG_FILE, resolve_model_path
        from vtr.model.retrieval import RetrievalConfig

        path = resolve_model_path(self.model_ref, self.home)
        if path is None:
            return self.model.cfg  # not a model directory: create_model says what is wrong
        return RetrievalConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))

    def _open_store(self, read_only: bool, reindex: bool = False, write: bool = True, lock_timeout_s: float = 0.0,
                    lazy: bool = False):
        from vtr.index.store import LibraryStore

        kw: dict[str, Any] = {}
        if write:
            name, sha = self._model_identity()
            kw = {"model_name": name, "weights_sha256": sha, "embed_dim": self._model_config().embed_dim,
                  "factory": self.factory, "lock_timeout_s": lock_timeout_s}
        return LibraryStore.open(self.home, self.index_name, db_url=self.db_url, read_only=read_only,
                                 reindex=reindex, device=self.device.type, lazy=lazy, **kw)

    @torch.no_grad()
    def _encode_clips(self, video: torch.Tensor) -> torch.Tensor:
        """Embeddings of clips ``[B, T, 3, H, W]``: normalised floats, or uint8 pixels (:func:`eval_pixels`),
        which are moved as bytes and normalised on the model's device."""
        model = self.model
        dtype = next(model.parameters()).dtype
        if video.dtype == torch.uint8:
            from vtr.data.transforms import normalize

            video = normalize(video.to(self.device, non_blocking=True).float())
        return model.encode_video(video.to(self.device, dtype, non_blocking=True)).embeds

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings: from the cached text tower when the full model is not loaded (CPU), else the model
        (whose tower is then cached for the next search process)."""
        if self._model is None and (tower := self._text_tower(load=True)) is not None:
            return tower.encode(list(texts))
        tok = self.model.tokenize(list(texts))
        embeds = self.model.encode_text(tok["input_ids"], tok["attention_mask"]).embeds
        self._text_tower(load=False)
        return embeds

    def _text_tower(self, load: bool):
        """``load``: the cached tower (or None); else write the cache from the loaded model. CPU fp32 only."""
        if self.device.type != "cpu" or self._tower is not None:
            return self._tower
        if self._model is not None and not hasattr(self._model, "text_encoder"):
            return None  # not a RetrievalModel (a stand-in): no text tower to cache
        from vtr.model.text_tower import cache_path, load_text_tower, save_text_tower

        sha = self._model_identity()[1]
        if not sha:
            return None
        max_len = self._model_config().max_txt_l
        path = cache_path(self.home, sha, max_len)
        if load:
            self._tower = load_text_tower(path, max_len)
        elif not path.exists() and self._model is not None and next(self._model.parameters()).dtype == torch.float32:
            save_text_tower(self._model, path, max_len)
        return self._tower

    # ------------------------------------------------------------------ indexing

    def index(
        self,
        paths: Iterable[str | os.PathLike],
        segment: float | None = None,
        stride: float | None = None,
        frames: int | None = None,
        workers: int | None = None,
        batch_size: int = 16,
        prune: bool = False,
        reindex: bool = False,
        retry_failed: bool = False,
        flush_every: int = 64,
        flush_interval_s: float = 20.0,
        progress: bool = True,
        on_video: Callable[[str], None] | None = None,
        max_windows: int | None = None,
        yes: bool = False,
        wait_s: float = 0.0,
        engine: str = "local",
        ray_options: Any = None,
    ) -> IndexReport:
        """Index the videos under ``paths`` (incremental: unchanged files are skipped; resumable after a crash).

        Videos are cut into segments (one vector each) by the index's :class:`~vtr.segmentation.SegmentPolicy`:
        the one it recorded, else the model's default (long videos become overlapping windows).
        ``segment``/``stride`` (seconds) ask for another one (``segment=0``: whole videos); an index that holds
        vectors refuses a different policy unless ``reindex``. Bad files are recorded with their reason and
        skipped. A video is decoded in chunks of at most ``max_windows`` windows (default ``batch_size``), so
        memory does not grow with its length; the catalog commits each encoder batch of complete videos
        atomically (a video is committed with all its segments or not at all). ``prune`` removes files gone from
        disk (refused below a missing or unreadable root, and for most of an index unless ``yes``). ``wait_s``:
        how long to wait for another writer of this index. The model is loaded only when there is something to
        encode. ``workers``: decode processes; None picks them and torch's threads from the core count
        (:mod:`vtr.threads`). ``engine="ray"`` decodes and encodes on a Ray cluster (:mod:`vtr.engines.ray_engine`,
        ``ray_options``: its :class:`~vtr.engines.ray_engine.RayOptions`); the plan and the catalog writes are the
        same.
        """
        if engine not in ("local", "ray"):
            raise ConfigError(f"unknown engine {engine!r}: use local or ray")
        if engine == "ray":
            from vtr.engines.ray_engine import require_ray

            require_ray()  # before any work: the fix is an install
        from vtr.data.clips import ClipDataset, ClipRequest, clip_loader
        from vtr.index.store import VideoEntry

        t0 = time.perf_counter()
        report = IndexReport()
        if self.model_ref is None and not reindex:
            self.model_ref = self._existing_index_model()  # an existing index goes on with its own model
        frames = frames or self._model_config().num_frames
        default = default_policy(frames)
        requested = requested_policy(segment, stride, default)
        with self._open_store(read_only=False, reindex=reindex, lock_timeout_s=wait_s) as store, \
                indexing_threads(workers, self.device) as workers:  # None: chosen from the core count
            if reindex:
                store.reindex()
            total, multi = store.segment_counts()
            stored = store.segment_policy()
            policy = settle_policy(self.index_name, stored, requested, default, has_vectors=total > 0,
                                   legacy_windows=multi > 0)
            if policy != stored:
                store.set_segment_policy(policy)
            report.segmentation = policy.to_dict()
            plan = store.plan([os.fspath(p) for p in paths], prune=prune, retry_failed=retry_failed, yes=yes)
            known = plan.known_failures
            report.known_failures = [{"path": i.path, "reason": i.error or "", "message": None} for i in known]
            report.unchanged, report.touched = len(plan.unchanged) - len(known), len(plan.touched)
            report.pruned = len(plan.deleted) if plan.pruned else 0
            report.missing = 0 if plan.pruned else len(plan.deleted)
            todo = plan.to_index
            if not todo:
                store.flush()
                report.wall_s = round(time.perf_counter() - t0, 3)
                return report
            if engine == "ray":
                from vtr.engines.ray_engine import RayOptions, index_with_ray

                opts = ray_options or RayOptions()
                try:
                    index_with_ray(self, store, todo, report, frames=frames, policy=policy, batch_size=batch_size,
                                   flush_every=flush_every, flush_interval_s=flush_interval_s, on_video=on_video,
                                   opts=opts, progress=progress)
                finally:
                    store.flush()
                report.wall_s = round(time.perf_counter() - t0, 3)
                report.videos_per_s = round(report.indexed / report.wall_s, 3) if report.wall_s else 0.0
                return report
            model = self.model
            clips = ClipDataset([ClipRequest(p.path, content_hash=p.content_hash) for p in todo], frames,
                                model.cfg.img_size, policy=policy, probe=True, hash_content=True,
                                dtype=torch.uint8, max_windows=max_windows or batch_size)
            loader = clip_loader(clips, workers, pin_memory=self.device.type == "cuda",
                                 videos_per_item=max(1, min(8, batch_size)))
            pending: list[dict[str, Any]] = []  # decoded chunks waiting for a full encoder batch
            # A launched batch whose embeddings are still on their way back from the GPU; it is written to the
            # catalog when the next batch has been launched, so the main process never waits on the encoder.
            inflight: tuple[list[dict[str, Any]], torch.Tensor, Any] | None = None
            # Videos with some chunks encoded and more to come: their windows' vectors wait here (a few KB per
            # window) until the last chunk, so a video is committed whole or not at all.
            partial: dict[int, tuple[list[tuple[float, float]], list[np.ndarray]]] = {}
            dropped: set[int] = set()  # videos that failed after some of their chunks were decoded
            seen: set[int] = set()  # videos whose first chunk arrived
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
                entries, done, start = [], [], 0
                for p in batch:  # the complete videos of the batch: one catalog transaction
                    n = len(p["windows"])
                    part, start = vectors[start:start + n], start + n
                    if p["i"] in dropped:
                        continue
                    windows, vecs = partial.setdefault(p["i"], ([], []))
                    windows += p["windows"]
                    vecs.append(part)
                    if p["first"] + n == p["total"]:
                        del partial[p["i"]]
                        entries.append(VideoEntry(p["info"], windows, np.concatenate(vecs), p["sha256"]))
                        done.append(p["i"])
                if entries:
                    store.add_videos(entries)
                report.indexed += len(entries)
                eta.update(report.indexed)
                report.segments += sum(len(e.segments) for e in entries)
                done_since_flush += len(entries)
                for i in done:
                    bar.video_done()
                    if on_video:
                        on_video(todo[i].path)
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

            if not store.ram_index:
                log.warning("index %r keeps no in-memory FAISS index (%s): what this run adds is searchable after "
                            "`vtr index ondisk --index %s` rebuilds its on-disk index", self.index_name,
                            store.factory, self.index_name)
            bar = IndexProgress(len(todo), enable=progress)
            eta = RunEstimate(len(todo), bar.bar.write if progress else None)
            try:
                for group in loader:
                    video = group["video"]
                    if video is not None and self.device.type == "cuda":  # pinned -> GPU now (async): the batch
                        video = video.to(self.device, non_blocking=True)  # is joined there, not by a CPU copy
                    start = 0
                    for item in group["items"]:
                        if "error" in item:
                            if item["error"] == "window_too_short":
                                raise ConfigError(item["message"])
                            path = todo[item["i"]].path
                            if item["i"] not in seen:
                                bar.video_seen(0)  # failed before its first chunk
                            dropped.add(item["i"])
                            partial.pop(item["i"], None)
                            store.mark_failed(path, item["error"])
                            report.failed.append({"path": path, "reason": item["error"], "message": item["message"]})
                            bar.video_done()
                        else:
                            n = len(item["windows"])
                            item["video"] = video[start:start + n]
                            start += n
                            if item["i"] not in seen:
                                seen.add(item["i"])
                                bar.video_seen(item["total"])
                            pending.append(item)
                            bar.segments_done(n)
                            if sum(len(p["windows"]) for p in pending) >= batch_size:
                                encode_pending()
                encode_pending()
                write_inflight()
            finally:
                bar.close()
                store.flush()
        if self.db_url is None:  # a successful run: refresh the catalog's safety copy (for `vtr index repair`)
            from vtr.index.repair import save_safety_copy_or_warn

            save_safety_copy_or_warn(store.home, changed=bool(report.indexed or report.failed or report.pruned
                                                              or report.touched or reindex))
        report.wall_s = round(time.perf_counter() - t0, 3)
        report.videos_per_s = round(report.indexed / report.wall_s, 3) if report.wall_s else 0.0
        return report

    # ------------------------------------------------------------------ search

    def search(self, queries: str | Sequence[str], k: int = 10, rerank: bool = False,
               rerank_candidates: int = 16, all_windows: bool = False) -> list[list[SearchHit]]:
        """Text-to-video search; ``rerank`` re-scores the top candidates with the ITM head (slower).

        Neighbouring windows of one video are collapsed into one hit with the best window's start-end
        (:func:`vtr.collapse.collapse_windows`); ``all_windows`` lists every window instead.
        """
        texts = [queries] if isinstance(queries, str) else list(queries)
        blank = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if blank:
            raise ConfigError(f"empty query{'' if len(texts) == 1 else f' (number {blank[0] + 1})'}: "
                              "say in words what to look for, e.g. vtr search \"person chopping onions\"")
        self._adopt_index_model()
        if not texts:
            return []
        text_embeds = self.encode_text(texts)
        want = max(k, rerank_candidates) if rerank else k
        results = self._search_vectors(query_vectors(text_embeds), want, all_windows)
        if rerank:
            results = [self._rerank(t, hits)[:k] for t, hits in zip(texts, results, strict=True)]
        return results

    def search_video(self, path: str | os.PathLike, k: int = 10, all_windows: bool = False) -> list[SearchHit]:
        """Video-to-video search: the query clip's mean frame feature against the library."""
        from vtr.data.decode import read_frames
        from vtr.data.transforms import eval_transform

        self._adopt_index_model()
        frames = self.model.cfg.num_frames
        clip = eval_transform(read_frames(os.fspath(path), frames, "middle").frames, self.model.cfg.img_size)
        m = torch.nn.functional.normalize(self._encode_clips(clip[None]).float(), dim=-1).mean(1)
        return self._search_vectors(query_vectors(m), k, all_windows)[0]

    def search_vectors(self, queries: np.ndarray, k: int = 10, all_windows: bool = False) -> list[list[SearchHit]]:
        """Search with ready query vectors (:func:`~vtr.index.vectors.query_vectors` format, [Q, width])."""
        return self._search_vectors(queries, k, all_windows)

    def _search_vectors(self, q: np.ndarray, k: int, all_windows: bool = False) -> list[list[SearchHit]]:
        """The ``k`` best hits per query; collapsed (unless ``all_windows``), asking for more windows until ``k``
        distinct moments are found or the index is exhausted. An on-disk index (`vtr index ondisk`) answers when
        one was built (the in-memory FAISS index is then never loaded), unless ``exact``; else the store's FAISS
        index."""
        store = self._store()
        kk = k if all_windows else 4 * k
        while True:
            rows = store.search(q, kk, nprobe=self.nprobe, exact=self.exact)
            hits = [[SearchHit(r + 1, h.score, h.video_path, h.start_s, h.end_s, vector_id=h.vector_id,
                               model=store.model_name, generation=store.generation) for r, h in enumerate(row)]
                    for row in rows]
            if all_windows:
                return hits
            collapsed = [collapse_windows(row) for row in hits]
            total = store.last_search_total
            exhausted = kk >= total or all(len(row) < kk for row in hits)
            if exhausted or all(len(row) >= k for row in collapsed):
                return [row[:k] for row in collapsed]
            kk = min(total, kk * 4)

    @torch.no_grad()
    def _rerank(self, text: str, hits: list[SearchHit]) -> list[SearchHit]:
        if not hits:
            return hits
        from vtr.data.decode import read_frames
        from vtr.data.transforms import eval_transform

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
                                    score_kind="itm_logit", windows=hit.windows, vector_id=hit.vector_id,
                                    model=hit.model, generation=hit.generation))
        scored.sort(key=lambda h: -h.score)
        for r, h in enumerate(scored):
            h.rank = r + 1
        return scored

    # ------------------------------------------------------------------ management

    def build_ondisk(self, factory: str | None = None, train_size: int | None = None,
                     shard_size: int | None = None) -> dict:
        """Build the out-of-core IVF index of this library from its catalog (:mod:`vtr.index.ondisk`); ``factory``
        None: the one an ``ondisk:`` index records. The next search opens the new build."""
        from vtr.index.ondisk import DEFAULT_SHARD_SIZE, DEFAULT_TRAIN_SIZE, build_ondisk_from_catalog

        info = build_ondisk_from_catalog(self._store(), factory, train_size=train_size or DEFAULT_TRAIN_SIZE,
                                         shard_size=shard_size or DEFAULT_SHARD_SIZE)
        return asdict(info)

    @property
    def store(self):
        """The read-only :class:`~vtr.index.store.LibraryStore` (opened on first use, kept until close())."""
        return self._store()

    def status(self) -> dict[str, Any]:
        """Counts and sizes of the index; ``searched_by`` says which index answers searches (``ondisk``: the
        on-disk build, whose ``ram_bytes`` / ``disk_bytes`` are in ``ondisk``; ``faiss``: the in-memory index,
        ``faiss_ram_bytes`` of RAM). The in-memory index is loaded only when it is the one searches use."""
        store = self._store()
        ondisk = store.ondisk()
        if (ondisk is None or self.exact) and store.ram_index:
            store.ntotal  # noqa: B018 - loads the in-memory index: searches use it, its count is reported
        store.catch_up()
        status = asdict(store.status())
        # RAM of the in-memory FAISS index when searches use it: about the size of its file (FAISS serialises its
        # arrays as they are); 0 for an index that keeps none
        status["faiss_ram_bytes"] = (status["faiss_bytes"] or 0) if store.ram_index else 0
        status["searched_by"] = ("ondisk" if ondisk is not None and not self.exact else "faiss" if store.ram_index
                                 else "nothing yet: run `vtr index ondisk`")
        if ondisk is not None:
            status["ondisk"] = {**asdict(ondisk.info), **ondisk.footprint(), "nprobe": ondisk.nprobe,
                                "current": ondisk.info.generation == store.generation}
        return status


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
