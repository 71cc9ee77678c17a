"""The one inference clip loader: decode ``middle`` frames + the eval transform, for indexing, evaluation and
training-time validation.

One item per video. A video is optionally cut into time windows (a :class:`~vtr.segmentation.SegmentPolicy`:
one clip per window, for indexing long videos; decoded in chunks of a bounded number of windows) and optionally
content-hashed in the worker (the catalog's change key). Bad files come back as an ``error`` item with the typed
reason, never raised. A still image (``.jpg``, ``.png``, ...) is a one-frame clip. Items can be grouped several
per loader item (one shared-memory transfer instead of one per video).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from vtr.data.decode import is_image_path, probe_video, read_frames, read_image
from vtr.data.transforms import eval_pixels, eval_transform
from vtr.errors import VideoDecodeError
from vtr.hashing import sha256_file
from vtr.segmentation import SegmentPolicy, WindowTooShortError

log = logging.getLogger(__name__)

__all__ = ["ClipBatch", "ClipDataset", "ClipRequest", "clip_loader", "iter_clip_batches"]


@dataclass(frozen=True)
class ClipRequest:
    """One video to encode: a file, and optionally a time window (seconds) inside it."""

    path: str
    window: tuple[float, float] | None = None
    content_hash: str | None = None  # known already (skip hashing it again)


@dataclass
class ClipBatch:
    """Decoded clips of a batch (``video`` [B, T, 3, H, W], their positions in the request list) and the
    requests that failed, as ``(position, reason, message)``."""

    video: torch.Tensor | None
    positions: list[int]
    failures: list[tuple[int, str, str]]


class ClipDataset(Dataset):
    """Official inference input (``strategy`` sampling, eval transform) for a list of :class:`ClipRequest`.

    Item ``i`` is ``{"i", "video" [W, T, 3, H, W], "windows", "info", "sha256"}`` or ``{"i", "error", "message"}``.
    ``probe``: probe each video first (``info``) and give its windows (seconds) from ``policy``
    (:class:`~vtr.segmentation.SegmentPolicy`; default: whole videos). ``segment``/``stride`` are the older
    spelling of a policy: windows of ``segment`` every ``stride`` seconds for videos longer than ``segment``.
    ``hash_content``: compute each file's sha256 in the worker (unless the request has it).
    ``dtype``: what the clips travel as: ``torch.uint8`` gives the resized pixels before normalisation
    (:func:`~vtr.data.transforms.eval_pixels`, exact, a quarter of float32's bytes: indexing normalises them on
    the encoder's device), a float dtype the normalised clip.
    ``max_windows``: :meth:`video_items` decodes a video in chunks of at most this many windows, so the memory
    of a worker does not grow with the length of the video (``__getitem__`` joins the chunks).
    ``backend``: the decoder (:data:`vtr.data.decode.BACKENDS`). A still image (not probed) gives ``T = 1``.
    """

    def __init__(self, requests: Sequence[ClipRequest], num_frames: int = 8, size: int = 224,
                 max_seconds: float | None = None, strategy: str = "middle", segment: float | None = None,
                 stride: float | None = None, probe: bool = False, hash_content: bool = False,
                 dtype: torch.dtype = torch.float32, policy: SegmentPolicy | None = None,
                 max_windows: int = 16, backend: str = "auto") -> None:
        self.requests = list(requests)
        self.num_frames, self.size, self.max_seconds, self.strategy = num_frames, size, max_seconds, strategy
        if policy is None and segment:
            policy = SegmentPolicy(float(segment), float(stride or segment), float(segment))
        self.policy, self.probe = policy, probe
        self.hash_content, self.dtype = hash_content, dtype
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        self.max_windows = int(max_windows)
        self.backend = backend

    def __len__(self) -> int:
        return len(self.requests)

    def _windows(self, req: ClipRequest) -> tuple[Any, list[tuple[float, float] | None]]:
        if not self.probe:
            return None, [req.window]
        info = probe_video(req.path)
        if self.policy is None:
            return info, [(0.0, float(info.duration))]
        return info, self.policy.windows(info.duration, info.fps)

    def _frames(self, req: ClipRequest, window: tuple[float, float] | None) -> Any:
        if not self.probe and is_image_path(req.path):
            return read_image(req.path)
        return read_frames(req.path, self.num_frames, self.strategy, max_seconds=self.max_seconds, window=window,
                           backend=self.backend).frames

    def video_items(self, i: int) -> Iterator[dict[str, Any]]:
        """Video ``i`` as chunks of at most ``max_windows`` clips, in window order.

        A chunk is ``{"i", "info", "windows", "first", "total", "video"}`` (``first``: its first window's position
        among the video's ``total`` windows); the last chunk also has ``sha256`` (with ``hash_content``). A
        failure gives ``{"i", "error", "message"}``, possibly after some chunks: the consumer drops those.
        """
        req = self.requests[i]
        try:
            info, windows = self._windows(req)
            single = len(windows) == 1 and self.probe  # a whole video: sampled as in evaluation
            total = len(windows)
            for first in range(0, total, self.max_windows):
                part = windows[first:first + self.max_windows]
                prepare = eval_pixels if self.dtype == torch.uint8 else eval_transform
                clips = [prepare(self._frames(req, None if single else w), self.size) for w in part]
                item: dict[str, Any] = {"i": i, "info": info, "windows": part, "first": first, "total": total,
                                        "video": torch.stack(clips).to(self.dtype)}
                del clips
                if first + len(part) == total and self.hash_content:  # read here, in parallel, not in the main process
                    item["sha256"] = req.content_hash or sha256_file(req.path)
                yield item
        except VideoDecodeError as err:
            yield {"i": i, "error": err.reason, "message": str(err)}
        except WindowTooShortError as err:
            yield {"i": i, "error": "window_too_short", "message": f"{req.path}: {err}"}
        except OSError as err:  # the file vanished or became unreadable between decoding and hashing
            yield {"i": i, "error": "unreadable", "message": f"{req.path}: {err}"}

    def __getitem__(self, i: int) -> dict[str, Any]:
        chunks = list(self.video_items(i))
        if "error" in chunks[-1]:
            return chunks[-1]
        item = chunks[-1]
        if len(chunks) > 1:
            item = {**item, "windows": [w for c in chunks for w in c["windows"]], "first": 0,
                    "video": torch.cat([c["video"] for c in chunks])}
        return item


def _group(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Several decoded videos (or chunks of them) as one loader item: their clips in one tensor and metadata."""
    clips = [it.pop("video") for it in items if "video" in it]
    return {"items": items, "video": torch.cat(clips) if clips else None}


class _ChunkStream(IterableDataset):
    """The videos of a :class:`ClipDataset` as groups of chunks, each group at most ``max_clips`` clips.

    Worker ``w`` of ``n`` decodes videos ``w, w + n, ...``; a video's chunks stay in order (one worker makes
    them all, and the loader keeps each worker's order).
    """

    def __init__(self, dataset: ClipDataset, videos_per_item: int, max_clips: int) -> None:
        self.dataset, self.videos_per_item, self.max_clips = dataset, videos_per_item, max_clips

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        ids = range(len(self.dataset)) if info is None else range(info.id, len(self.dataset), info.num_workers)
        group: list[dict[str, Any]] = []
        clips = 0
        for i in ids:
            for item in self.dataset.video_items(i):
                n = len(item["windows"]) if "video" in item else 0
                if group and (len(group) >= self.videos_per_item or clips + n > self.max_clips):
                    yield _group(group)
                    group, clips = [], 0
                group.append(item)
                clips += n
        if group:
            yield _group(group)


def clip_loader(dataset: ClipDataset, workers: int, pin_memory: bool, videos_per_item: int = 8,
                prefetch_factor: int = 2) -> DataLoader:
    """``workers`` decode processes; each loader item groups ``videos_per_item`` videos (see :func:`_group`).

    A probing dataset (indexing) streams chunks (:meth:`ClipDataset.video_items`): a loader item then holds at
    most ``max(videos_per_item, dataset.max_windows)`` clips, however long the videos are; its ``items`` may be
    chunks of a video (``first``/``total``), a long video spanning several loader items.
    """
    if dataset.probe:
        stream = _ChunkStream(dataset, videos_per_item, max(videos_per_item, dataset.max_windows))
        return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                          prefetch_factor=prefetch_factor if workers else None)
    return DataLoader(dataset, batch_size=videos_per_item, num_workers=workers, pin_memory=pin_memory,
                      collate_fn=_group, prefetch_factor=prefetch_factor if workers else None)


def iter_clip_batches(requests: Sequence[ClipRequest], batch_size: int = 16, num_workers: int = 0,
                      **dataset_kw) -> Iterator[ClipBatch]:
    """Batches of one clip per request, in request order; decode errors come back in ``failures``, never raised."""
    loader = clip_loader(ClipDataset(requests, **dataset_kw), num_workers, pin_memory=torch.cuda.is_available(),
                         videos_per_item=batch_size, prefetch_factor=4)
    for group in loader:
        items = group["items"]
        failures = [(it["i"], it["error"], it["message"]) for it in items if "error" in it]
        yield ClipBatch(group["video"], [it["i"] for it in items if "error" not in it], failures)
