"""Annotation files, the video-caption dataset and retrieval text/video pairs (official JSON format).

An annotation file is a JSON list of objects, each with a ``"video"`` (or ``"image"``) path relative to
the media root and a ``"caption"`` that is a string or a list of strings; other keys are kept.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vtr.data.decode import is_image_path, read_frames, read_image
from vtr.data.text import pre_text
from vtr.data.transforms import eval_transform
from vtr.errors import ConfigError, VideoDecodeError

log = logging.getLogger(__name__)

CAPTION_MODES: tuple[str, ...] = ("random", "first", "all")


def _validate_entry(entry: Any, i: int, source: str) -> dict[str, Any]:
    where = f"{source}: entry {i}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object with 'video' and 'caption', got {type(entry).__name__}")
    media_keys = [k for k in ("video", "image") if k in entry]
    if not media_keys:
        raise ConfigError(f"{where} has no 'video' (or 'image') key; keys are {sorted(entry)}")
    media = entry[media_keys[0]]
    if not isinstance(media, str) or not media:
        raise ConfigError(f"{where}: '{media_keys[0]}' must be a non-empty path string, got {media!r}")
    if "caption" not in entry:
        raise ConfigError(f"{where} ({media!r}) has no 'caption'")
    caption = entry["caption"]
    if isinstance(caption, list):
        if not caption or not all(isinstance(c, str) for c in caption):
            raise ConfigError(f"{where} ({media!r}): 'caption' list must be a non-empty list of strings")
    elif not isinstance(caption, str):
        raise ConfigError(
            f"{where} ({media!r}): 'caption' must be a string or a list of strings, "
            f"got {type(caption).__name__}"
        )
    return dict(entry)


def validate_annotations(entries: Any, source: str = "annotations") -> list[dict[str, Any]]:
    """Check parsed annotations (see the module doc); return shallow copies of the entries."""
    if not isinstance(entries, list):
        raise ConfigError(f"{source} must be a JSON list of objects, got {type(entries).__name__}")
    return [_validate_entry(entry, i, source) for i, entry in enumerate(entries)]


def load_annotations(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate an annotation JSON file; raises :class:`ConfigError` with what is wrong."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"annotation file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"annotation file {str(path)!r} is not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read annotation file {str(path)!r}: {exc}") from None
    return validate_annotations(data, source=f"annotation file {str(path)!r}")


def _media_of(entry: dict[str, Any]) -> tuple[str, bool]:
    """``(relative path, is_image)`` of an annotation entry."""
    if "video" in entry:
        return entry["video"], is_image_path(entry["video"])
    return entry["image"], True


def _captions_of(entry: dict[str, Any]) -> list[str]:
    caption = entry["caption"]
    return list(caption) if isinstance(caption, list) else [caption]


class VideoCaptionDataset(Dataset):
    """One item per annotation entry: ``{"video": [T, 3, H, W], "caption": str, "index": int, "path": str}``.

    Videos are sampled with ``strategy`` (``rand`` for training, ``middle`` for evaluation), optionally
    trimmed to the first ``max_seconds`` and passed to ``transform`` (default: :func:`eval_transform`).
    Images (``"image"`` entries, or a ``"video"`` with an image extension) give ``T = 1``.
    ``caption_mode``: ``random`` (one of the captions), ``first``, or ``all`` (joined with spaces into a
    paragraph); the caption is cleaned with :func:`pre_text`.

    A file that cannot be decoded yields ``None`` (drop it with :func:`collate_skip_none`); its
    ``(path, reason)`` is appended to ``failures`` and logged once. With DataLoader workers each worker
    has its own copy of ``failures``; the log is the record that spans workers.

    Randomness (``rand`` sampling, ``random`` captions) uses a generator seeded with ``rng_seed``, the
    item index and a draw from torch's global RNG: reproducible under ``torch.manual_seed``, different
    across epochs and DataLoader workers.
    """

    def __init__(
        self,
        annotations: str | os.PathLike | Sequence[dict[str, Any]],
        media_root: str | os.PathLike,
        num_frames: int = 8,
        strategy: str = "rand",
        transform: Callable[[np.ndarray], torch.Tensor] | None = None,
        max_seconds: float | None = None,
        caption_mode: str = "random",
        rng_seed: int = 0,
        max_words: int | None = None,
        backend: str = "auto",
    ) -> None:
        if isinstance(annotations, (str, os.PathLike)):
            self.annotations = load_annotations(annotations)
        else:
            self.annotations = validate_annotations(list(annotations))
        if caption_mode not in CAPTION_MODES:
            raise ConfigError(f"caption_mode must be one of {', '.join(CAPTION_MODES)}, got {caption_mode!r}")
        self.media_root = os.fspath(media_root)
        self.num_frames = num_frames
        self.strategy = strategy
        self.transform = transform if transform is not None else eval_transform
        self.max_seconds = max_seconds
        self.caption_mode = caption_mode
        self.rng_seed = rng_seed
        self.max_words = max_words
        self.backend = backend
        self.failures: list[tuple[str, str]] = []
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.annotations)

    def _rng(self, index: int) -> np.random.Generator:
        draw = int(torch.randint(0, 2**62, (1,)).item())
        return np.random.default_rng([self.rng_seed, index, draw])

    def _caption(self, entry: dict[str, Any], rng: np.random.Generator) -> str:
        captions = _captions_of(entry)
        if self.caption_mode == "all":
            text = " ".join(captions)
        elif self.caption_mode == "first" or len(captions) == 1:
            text = captions[0]
        else:
            text = captions[int(rng.integers(len(captions)))]
        return pre_text(text, self.max_words)

    def _record_failure(self, path: str, err: VideoDecodeError) -> None:
        self.failures.append((path, err.reason))
        if path not in self._warned:
            self._warned.add(path)
            log.warning("skipping %s", err)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        entry = self.annotations[index]
        rel, is_image = _media_of(entry)
        path = os.path.join(self.media_root, rel)
        rng = self._rng(index)
        try:
            if is_image:
                frames = read_image(path)
            else:
                frames = read_frames(
                    path,
                    self.num_frames,
                    self.strategy,
                    max_seconds=self.max_seconds,
                    rng=rng,
                    backend=self.backend,
                ).frames
        except VideoDecodeError as err:
            self._record_failure(path, err)
            return None
        return {
            "video": self.transform(frames),
            "caption": self._caption(entry, rng),
            "index": index,
            "path": path,
        }


def collate_skip_none(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate dataset items, dropping ``None`` (undecodable) ones; ``None`` if nothing is left.

    Returns ``{"video": [B, T, 3, H, W], "caption": list[str], "index": LongTensor [B], "path": list[str]}``.
    """
    items = [item for item in batch if item is not None]
    if not items:
        return None
    return {
        "video": torch.stack([item["video"] for item in items]),
        "caption": [item["caption"] for item in items],
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "path": [item["path"] for item in items],
    }


def build_retrieval_pairs(
    annotations: Sequence[dict[str, Any]],
    paragraph: bool = False,
    media_root: str | os.PathLike | None = None,
    max_words: int | None = None,
) -> tuple[list[str], list[str], list[int], list[list[int]]]:
    """Texts and videos of a retrieval evaluation, with the ground truth both ways.

    Returns ``(texts, video_paths, txt2vid, vid2txt)``: every caption is its own text (cleaned with
    :func:`pre_text`), ``txt2vid[t]`` is the video of text ``t`` and ``vid2txt[v]`` the texts of video
    ``v``. With ``paragraph=True`` (DiDeMo / ActivityNet protocol) each entry's caption list is first
    joined with spaces into one caption. Paths are joined to ``media_root`` when it is given.
    """
    entries = validate_annotations(list(annotations))
    texts: list[str] = []
    video_paths: list[str] = []
    txt2vid: list[int] = []
    vid2txt: list[list[int]] = []
    for vid, entry in enumerate(entries):
        rel, _ = _media_of(entry)
        video_paths.append(os.path.join(os.fspath(media_root), rel) if media_root is not None else rel)
        captions = _captions_of(entry)
        if paragraph:
            captions = [" ".join(captions)]
        vid2txt.append([])
        for caption in captions:
            vid2txt[vid].append(len(texts))
            txt2vid.append(vid)
            texts.append(pre_text(caption, max_words))
    return texts, video_paths, txt2vid, vid2txt
