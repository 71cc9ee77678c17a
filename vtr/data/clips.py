"""Decode-and-transform clips for inference (evaluation and indexing), with bad files recorded, not fatal."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from vtr.data.decode import read_frames
from vtr.data.transforms import eval_transform
from vtr.errors import VideoDecodeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRequest:
    """One clip to encode: a file, and optionally a time window (seconds) inside it."""

    path: str
    window: tuple[float, float] | None = None


@dataclass
class ClipBatch:
    """Decoded clips of a batch (``video`` [B, T, 3, H, W], their positions in the request list) and the
    requests that failed, as ``(position, reason, message)``."""

    video: torch.Tensor | None
    positions: list[int]
    failures: list[tuple[int, str, str]]


class ClipDataset(Dataset):
    """``middle``-sampled, eval-transformed clips (the official inference input) for a list of requests."""

    def __init__(self, requests: Sequence[ClipRequest], num_frames: int = 8, size: int = 224,
                 max_seconds: float | None = None, strategy: str = "middle") -> None:
        self.requests = list(requests)
        self.num_frames, self.size, self.max_seconds, self.strategy = num_frames, size, max_seconds, strategy

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str, str]:
        req = self.requests[i]
        try:
            clip = read_frames(req.path, self.num_frames, self.strategy, max_seconds=self.max_seconds,
                               window=req.window)
            return i, eval_transform(clip.frames, self.size), "", ""
        except VideoDecodeError as err:
            return i, None, err.reason, str(err)


def _collate(items: list[tuple[int, torch.Tensor | None, str, str]]) -> ClipBatch:
    ok = [(i, v) for i, v, _, _ in items if v is not None]
    failures = [(i, reason, msg) for i, v, reason, msg in items if v is None]
    video = torch.stack([v for _, v in ok]) if ok else None
    return ClipBatch(video, [i for i, _ in ok], failures)


def iter_clip_batches(requests: Sequence[ClipRequest], batch_size: int = 16, num_workers: int = 0,
                      **dataset_kw) -> Iterator[ClipBatch]:
    """Batches of decoded clips in request order; decode errors come back in ``failures``, never raised."""
    ds = ClipDataset(requests, **dataset_kw)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False,
                        prefetch_factor=4 if num_workers > 0 else None)
    yield from loader
