"""The one inference clip loader: decode ``middle`` frames + the eval transform, for indexing and evaluation.

One item per video. A video is optionally cut into time windows (``segment``/``stride`` seconds: one clip per
window, for indexing long videos) and optionally content-hashed in the worker (the catalog's change key). Bad
files come back as an ``error`` item with the typed reason, never raised. Items can be grouped several per
loader item (one shared-memory transfer instead of one per video).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vtr.data.decode import probe_video, read_frames
from vtr.data.sampling import segment_windows
from vtr.data.transforms import eval_transform
from vtr.errors import VideoDecodeError
from vtr.hashing import sha256_file

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
    ``probe``: probe each video first (``info``) and give its windows (seconds): one whole-video window, or, with
    ``segment``, windows of ``segment`` every ``stride`` seconds for videos longer than ``segment``.
    ``hash_content``: compute each file's sha256 in the worker (unless the request has it).
    ``dtype``: what the clips travel as (``float16`` halves the shared-memory traffic of indexing).
    """

    def __init__(self, requests: Sequence[ClipRequest], num_frames: int = 8, size: int = 224,
                 max_seconds: float | None = None, strategy: str = "middle", segment: float | None = None,
                 stride: float | None = None, probe: bool = False, hash_content: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        self.requests = list(requests)
        self.num_frames, self.size, self.max_seconds, self.strategy = num_frames, size, max_seconds, strategy
        self.segment, self.stride, self.probe = segment, stride, probe
        self.hash_content, self.dtype = hash_content, dtype

    def __len__(self) -> int:
        return len(self.requests)

    def _windows(self, req: ClipRequest) -> tuple[Any, list[tuple[float, float] | None]]:
        if not self.probe:
            return None, [req.window]
        info = probe_video(req.path)
        if self.segment and info.duration > self.segment:
            return info, list(segment_windows(info.duration, self.segment, self.stride or self.segment))
        return info, [(0.0, float(info.duration))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        req = self.requests[i]
        try:
            info, windows = self._windows(req)
            single = len(windows) == 1 and self.probe  # a whole video: sampled as in evaluation
            clips = [eval_transform(read_frames(req.path, self.num_frames, self.strategy, max_seconds=self.max_seconds,
                                                window=None if single else w).frames, self.size)
                     for w in windows]
            item: dict[str, Any] = {"i": i, "info": info, "windows": windows,
                                    "video": torch.stack(clips).to(self.dtype)}
            if self.hash_content:  # read here, in parallel, not in the main process
                item["sha256"] = req.content_hash or sha256_file(req.path)
            return item
        except VideoDecodeError as err:
            return {"i": i, "error": err.reason, "message": str(err)}
        except OSError as err:  # the file vanished or became unreadable between decoding and hashing
            return {"i": i, "error": "unreadable", "message": f"{req.path}: {err}"}


def _group(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Several decoded videos as one loader item: their clips in one tensor and per-video metadata."""
    clips = [it.pop("video") for it in items if "video" in it]
    return {"items": items, "video": torch.cat(clips) if clips else None}


def clip_loader(dataset: ClipDataset, workers: int, pin_memory: bool, videos_per_item: int = 8,
                prefetch_factor: int = 2) -> DataLoader:
    """``workers`` decode processes; each loader item groups ``videos_per_item`` videos (see :func:`_group`)."""
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
