"""Thumbnails: a small JPEG of a segment's middle frame, made on first request and cached in the data home.

Cached as ``<home>/thumbnails/<hash[:2]>/<content hash>-<milliseconds>.jpg``: keyed by the video's content
hash and the frame time, so a re-indexed (changed) file gets new thumbnails and an unchanged one that was
moved or re-indexed keeps its cached ones.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from vtr.data.decode import read_frames

THUMB_DIR = "thumbnails"
WIDTH = 320
QUALITY = 80


def thumbnail_key(content_hash: str | None, path: str, size: int | None, mtime_ns: int | None) -> str:
    """The cache key of a video: its content hash, or (catalogs without one) a hash of path, size and mtime."""
    if content_hash:
        return content_hash
    return hashlib.sha256(f"{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape")).hexdigest()


def jpeg_of_frame(frame, width: int = WIDTH, quality: int = QUALITY) -> bytes:
    """``frame`` (uint8 [H, W, 3] RGB) scaled to ``width`` (never up) as JPEG bytes."""
    from PIL import Image

    img = Image.fromarray(frame)
    if img.width > width:
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


class ThumbnailCache:
    """Segment thumbnails under ``<home>/thumbnails``."""

    def __init__(self, home: str | os.PathLike, width: int = WIDTH) -> None:
        self.root = Path(home) / THUMB_DIR
        self.width = width

    def path_for(self, key: str, t: float) -> Path:
        return self.root / key[:2] / f"{key}-{round(t * 1000)}.jpg"

    def get(self, video_path: str, key: str, start_s: float, end_s: float) -> Path:
        """The cached JPEG of the middle frame of ``[start_s, end_s)`` of ``video_path`` (made if missing)."""
        t = (start_s + end_s) / 2
        out = self.path_for(key, t)
        if out.exists():
            return out
        clip = read_frames(video_path, 1, "middle", window=(start_s, end_s))
        data = jpeg_of_frame(clip.frames[0], self.width)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, out)  # atomic: concurrent requests for one thumbnail both end with a whole file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out
