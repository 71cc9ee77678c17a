"""Typed errors. Every error vtr raises for bad input says what is wrong and how to fix it."""

from __future__ import annotations

import os
from pathlib import Path


class VtrError(Exception):
    """Base class of vtr's own errors (the CLI prints these without a traceback)."""

    exit_code = 1


class VideoDecodeError(VtrError):
    """A file could not be decoded as a video.

    ``reason`` is a short machine-friendly tag: ``missing``, ``unreadable`` (permissions), ``empty``
    (zero bytes), ``no_video_stream`` (audio-only or not a media file), ``no_frames``, ``corrupt``
    (truncated or undecodable).
    """

    exit_code = 3

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"cannot decode video {self.path!r}: {reason}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class ConfigError(VtrError):
    """A configuration, model name or option is invalid."""

    exit_code = 2


class CheckpointError(VtrError):
    """A checkpoint file is missing, truncated or does not match the model."""

    exit_code = 4


class IndexCorruptError(VtrError):
    """A FAISS index file is missing, truncated, unreadable or not the file that was saved."""

    exit_code = 5

    def __init__(self, path: str | os.PathLike, detail: str) -> None:
        self.path = os.fsdecode(os.fspath(path))
        self.detail = detail
        super().__init__(f"FAISS index file {self.path!r} is unusable: {detail} (it is rebuilt from the catalog)")


class IndexBusyError(VtrError):
    """Another process is writing this index."""

    exit_code = 6


class PruneRefusedError(ConfigError):
    """``--prune`` refused: a root is missing or unreadable, or the prune would remove too much of an index."""
