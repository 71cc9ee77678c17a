"""Decode sampled frames from a video file: decord first, PyAV as the fallback, typed errors for bad input.

Every failure to read a file raises :class:`vtr.errors.VideoDecodeError` with one of the reasons
``missing``, ``unreadable``, ``empty``, ``no_video_stream``, ``no_frames`` or ``corrupt``; library
exceptions (decord's ``DECORDError``, PyAV's ``FFmpegError``, ...) never leak out.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from vtr.data.sampling import (
    effective_length,
    sample_frame_indices,
    window_to_frame_range,
)
from vtr.errors import ConfigError, VideoDecodeError

log = logging.getLogger(__name__)

Backend = Literal["auto", "decord", "pyav"]
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")

# Used when a file reports no usable frame rate and no duration to derive one from (FFmpeg's own guess).
DEFAULT_FPS = 25.0
# PyAV: seek (to the keyframe before the first wanted frame) rather than decode from the start when
# the first wanted frame is at least this far in. Module-level so tests can force the seek path.
PYAV_SEEK_MIN_FRAMES = 64

# Leading bytes of common media containers: a file that starts like one of these but cannot be opened is
# ``corrupt`` (e.g. truncated); one that does not is ``no_video_stream`` (not a media file at all).
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
_MAGIC_PREFIXES = (
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM (EBML)
    b"RIFF",  # AVI
    b"OggS",
    b"FLV",
    b"\x00\x00\x01\xba",  # MPEG program stream
    b"\x00\x00\x01\xb3",  # MPEG-1/2 elementary video
    b"\x00\x00\x00\x01",  # H.264/H.265 Annex B
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF / WMV
    b"GIF8",
)


@dataclass(frozen=True)
class VideoInfo:
    """What a backend reports about a video file (``duration = num_frames / fps``)."""

    path: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    backend: str


@dataclass
class DecodedClip:
    """Frames read from a video: ``frames`` is uint8 ``[T, H, W, 3]`` RGB, one per entry of ``indices``.

    ``vlen``, ``fps`` and ``duration`` describe the whole file; ``timestamps`` are ``index / fps`` in
    seconds.
    """

    frames: np.ndarray
    indices: list[int]
    fps: float
    duration: float
    vlen: int
    timestamps: list[float] = field(default_factory=list)
    backend: str = ""


# --------------------------------------------------------------------------- file checks


def _as_str_path(path: str | os.PathLike | bytes) -> str:
    """A ``str`` path; bytes (e.g. non-UTF-8 names) are decoded with the filesystem's surrogateescape."""
    return os.fsdecode(os.fspath(path))


def check_file(path: str | os.PathLike | bytes) -> str:
    """Check that ``path`` is an existing, readable, non-empty regular file; return it as ``str``.

    Raises :class:`VideoDecodeError` with reason ``missing``, ``unreadable`` or ``empty``.
    """
    spath = _as_str_path(path)
    try:
        st = os.stat(spath)
    except FileNotFoundError:
        raise VideoDecodeError(spath, "missing", "no such file") from None
    except PermissionError as exc:
        raise VideoDecodeError(spath, "unreadable", f"permission denied: {exc.strerror}") from None
    except OSError as exc:
        raise VideoDecodeError(spath, "missing", exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise VideoDecodeError(spath, "unreadable", f"{kind}")
    if not os.access(spath, os.R_OK):
        raise VideoDecodeError(spath, "unreadable", "permission denied (no read access)")
    if st.st_size == 0:
        raise VideoDecodeError(spath, "empty", "the file has zero bytes")
    return spath


def _looks_like_media(path: str) -> bool:
    """Whether the file starts with the signature of a known media container."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return True
    if head[:1] == b"\x47" and len(head) >= 1:  # MPEG-TS sync byte (weak, but a text file never has it)
        return True
    return any(head.startswith(magic) for magic in _MAGIC_PREFIXES)


def _sane_fps(fps: float, vlen: int, duration_s: float | None) -> float:
    """``fps`` if positive and finite; else ``vlen / duration`` if known; else :data:`DEFAULT_FPS`."""
    if fps and math.isfinite(fps) and fps > 0:
        return float(fps)
    if duration_s and math.isfinite(duration_s) and duration_s > 0 and vlen > 0:
        return vlen / duration_s
    return DEFAULT_FPS


def _gather(unique_frames: np.ndarray, unique: list[int], indices: Sequence[int]) -> np.ndarray:
    """Expand frames decoded for the sorted unique indices back to the requested (repeating) indices."""
    pos = {idx: i for i, idx in enumerate(unique)}
    return unique_frames[[pos[i] for i in indices]]


# --------------------------------------------------------------------------- decord

_DECORD: Any = None
_DECORD_IMPORT_ERROR: str | None = None


def _import_decord() -> Any:
    """Import decord lazily (once); return the module or ``None`` if it cannot be imported."""
    global _DECORD, _DECORD_IMPORT_ERROR
    if _DECORD is None and _DECORD_IMPORT_ERROR is None:
        try:
            import decord

            # decord's bundled FFmpeg prints every demuxer complaint to stderr; vtr reports errors itself.
            with contextlib.suppress(Exception):
                decord.logging.set_level(decord.logging.QUIET)
            _DECORD = decord
        except Exception as exc:  # ImportError, or a broken shared library (OSError)
            _DECORD_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    return _DECORD


def decord_available() -> bool:
    """Whether decord can be imported here."""
    return _import_decord() is not None


class _DecordSource:
    """A file opened with ``decord.VideoReader`` (single-threaded)."""

    name = "decord"

    def __init__(self, path: str, size: tuple[int, int] | None = None) -> None:
        decord = _import_decord()
        if decord is None:
            raise RuntimeError(f"decord is not available ({_DECORD_IMPORT_ERROR})")
        self._tmpdir: str | None = None
        open_path = path
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            # decord passes the name to C as UTF-8 and fails on undecodable bytes: open via an ASCII link.
            self._tmpdir = tempfile.mkdtemp(prefix="vtr-decord-")
            open_path = os.path.join(self._tmpdir, "video")
            os.symlink(os.fsencode(os.path.abspath(path)), os.fsencode(open_path))
        kwargs: dict[str, int] = {}
        if size is not None:
            kwargs = {"height": int(size[0]), "width": int(size[1])}
        try:
            self._vr = decord.VideoReader(open_path, num_threads=1, **kwargs)
        except BaseException:
            self.close()
            raise
        self.num_frames = len(self._vr)
        duration = None
        if self.num_frames > 0:
            with contextlib.suppress(Exception):
                duration = float(self._vr.get_frame_timestamp([self.num_frames - 1])[0][1])
        self.fps = _sane_fps(float(self._vr.get_avg_fps()), self.num_frames, duration)

    def frame_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the decoded frames (decodes the first frame)."""
        h, w = self._vr[0].shape[:2]
        return int(h), int(w)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` as uint8 ``[T, H, W, 3]``."""
        unique = sorted(set(int(i) for i in indices))
        frames = self._vr.get_batch(unique).asnumpy()
        if frames.shape[0] != len(unique):
            raise RuntimeError(f"decord returned {frames.shape[0]} frames for {len(unique)} indices")
        return _gather(frames, unique, indices)

    def close(self) -> None:
        self._vr = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


# --------------------------------------------------------------------------- PyAV


class _PyAVSource:
    """A file opened with PyAV. Opening classifies the file and raises :class:`VideoDecodeError`."""

    name = "pyav"

    def __init__(self, path: str, size: tuple[int, int] | None = None) -> None:
        self.path = path
        self.size = size
        self._used = False
        self._container = self._open()
        try:
            streams = self._container.streams
            if not streams.video:
                if len(streams) == 0 and _looks_like_media(path):
                    raise VideoDecodeError(path, "corrupt", "the container lists no streams (truncated?)")
                kinds = sorted({s.type for s in streams}) or ["none"]
                raise VideoDecodeError(path, "no_video_stream", f"streams: {', '.join(kinds)}")
            self._stream = streams.video[0]
            self._time_base = self._stream.time_base
            self._start = self._stream.start_time or 0
            rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
            count = int(self._stream.frames or 0)
            if count <= 0:
                count = self._count_packets()
            if count <= 0:
                raise VideoDecodeError(path, "no_frames", "the video stream holds no frames")
            self.num_frames = count
            duration = None
            if self._stream.duration and self._time_base:
                duration = float(self._stream.duration * self._time_base)
            elif self._container.duration:
                duration = self._container.duration / av.time_base
            self.fps = _sane_fps(float(rate) if rate else 0.0, count, duration)
        except BaseException:
            self.close()
            raise

    def _open(self) -> Any:
        try:
            return av.open(self.path, metadata_errors="replace")
        except PermissionError as exc:
            raise VideoDecodeError(self.path, "unreadable", f"permission denied: {exc}") from None
        except FileNotFoundError:
            raise VideoDecodeError(self.path, "missing", "no such file") from None
        except Exception as exc:
            reason = "corrupt" if _looks_like_media(self.path) else "no_video_stream"
            detail = "cannot open the container" if reason == "corrupt" else "not a recognised media file"
            raise VideoDecodeError(self.path, reason, f"{detail}: {exc}") from None

    def _reopen(self) -> None:
        self.close()
        self._container = self._open()
        self._stream = self._container.streams.video[0]

    def _count_packets(self) -> int:
        """Count the video packets (containers such as WebM do not store a frame count)."""
        count = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:
                    count += 1
        except Exception as exc:
            raise VideoDecodeError(self.path, "corrupt", f"demuxing failed: {exc}") from None
        self._reopen()
        return count

    def frame_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the decoded frames (decodes the first frame, as decord does)."""
        h, w = self.get([0]).shape[1:3]
        return int(h), int(w)

    def _to_array(self, frame: Any) -> np.ndarray:
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", height=int(self.size[0]), width=int(self.size[1]))

    def _decode(self, wanted: list[int], seek: bool) -> tuple[dict[int, np.ndarray], Any, int]:
        """Decode until the last wanted frame; return (frames by index, last frame seen, frames seen)."""
        wanted_set = set(wanted)
        got: dict[int, np.ndarray] = {}
        last_frame = None
        seen = 0
        idx: int | None = 0
        if seek:
            target = self._start + int(wanted[0] / self.fps / self._time_base)
            try:
                self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            except Exception as exc:
                raise _SeekFailed from exc
            idx = None
        try:
            for frame in self._container.decode(self._stream):
                if idx is None:  # first frame after a seek: place it by its timestamp
                    if frame.pts is None:
                        raise _SeekFailed
                    idx = int(round(float((frame.pts - self._start) * self._time_base) * self.fps))
                    if idx > wanted[0]:
                        raise _SeekFailed
                last_frame = frame
                seen += 1
                if idx in wanted_set:
                    got[idx] = self._to_array(frame)
                if idx >= wanted[-1]:
                    break
                idx += 1
        except _SeekFailed:
            raise
        except Exception as exc:
            raise VideoDecodeError(self.path, "corrupt", f"decoding failed near frame {idx}: {exc}") from None
        return got, last_frame, seen

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` as uint8 ``[T, H, W, 3]``."""
        wanted = sorted(set(int(i) for i in indices))
        if self._used:
            self._reopen()  # a previous call left the demuxer part-way through the file
        self._used = True
        result = None
        if wanted[0] >= PYAV_SEEK_MIN_FRAMES:
            try:
                result = self._decode(wanted, seek=True)
            except _SeekFailed:
                result = None
            if result is not None and not result[0]:
                result = None  # nothing wanted after the seek point: decode from the start instead
            if result is None:
                self._reopen()
        if result is None:
            result = self._decode(wanted, seek=False)
        got, last_frame, seen = result
        if seen == 0:
            raise VideoDecodeError(self.path, "no_frames", "the decoder produced no frames")
        missing = [i for i in wanted if i not in got]
        if missing:
            # The stream ended cleanly before the frame count in the header: use its last frame.
            log.debug("%s: stream ended before frame %d; repeating its last frame", self.path, missing[0])
            tail = self._to_array(last_frame)
            for i in missing:
                got[i] = tail
        return np.stack([got[i] for i in indices])

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
            self._container = None


class _SeekFailed(Exception):
    """Internal: the seek landed somewhere unusable; decode from the start instead."""


# --------------------------------------------------------------------------- public API


def _backend_order(backend: str) -> list[str]:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown video backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "pyav":
        return ["pyav"]
    if not decord_available():
        if backend == "decord":
            raise ConfigError(
                f"backend 'decord' requested but decord cannot be imported ({_DECORD_IMPORT_ERROR})"
            )
        return ["pyav"]
    return ["decord"] if backend == "decord" else ["decord", "pyav"]


@contextlib.contextmanager
def _open_source(name: str, path: str, size: tuple[int, int] | None) -> Iterator[Any]:
    source = _DecordSource(path, size) if name == "decord" else _PyAVSource(path, size)
    try:
        yield source
    finally:
        source.close()


def _diagnose(path: str, exc: BaseException) -> VideoDecodeError:
    """Explain a decord failure (when PyAV is not to decode the file): classify the file with PyAV."""
    try:
        with _open_source("pyav", path, None):
            pass
    except VideoDecodeError as err:
        return err
    return VideoDecodeError(path, "corrupt", f"decord failed: {type(exc).__name__}: {str(exc)[:300]}")


def _with_backends(path: str, backend: str, size: tuple[int, int] | None, work: Any) -> Any:
    """Run ``work(source)`` with each backend in turn; any decord failure falls through to PyAV."""
    order = _backend_order(backend)
    err: BaseException | None = None
    for name in order:
        try:
            with _open_source(name, path, size) as source:
                if source.num_frames < 1:
                    raise VideoDecodeError(path, "no_frames", f"{name} found no frames")
                return work(source)
        except Exception as exc:
            if name != "decord":
                raise
            err = exc
            log.debug("decord could not read %s (%s: %s)", path, type(exc).__name__, exc)
    assert err is not None
    raise _diagnose(path, err)


def probe_video(path: str | os.PathLike | bytes, backend: Backend | str = "auto") -> VideoInfo:
    """Open ``path`` and report its frame count, frame rate, duration and frame size.

    The first frame is decoded (that is where the size comes from), so a file whose media data is
    undecodable from the start is reported as ``corrupt`` here already.
    """
    spath = check_file(path)

    def work(source: Any) -> VideoInfo:
        height, width = source.frame_shape()
        return VideoInfo(
            path=spath,
            num_frames=int(source.num_frames),
            fps=float(source.fps),
            duration=source.num_frames / source.fps,
            width=width,
            height=height,
            backend=source.name,
        )

    return _with_backends(spath, backend, None, work)


def read_frames(
    path: str | os.PathLike | bytes,
    num_frames: int = 8,
    strategy: str = "middle",
    *,
    max_seconds: float | None = None,
    window: tuple[float, float] | None = None,
    rng: np.random.Generator | None = None,
    backend: Backend | str = "auto",
    size: tuple[int, int] | None = None,
) -> DecodedClip:
    """Sample ``num_frames`` frames of a video with ``strategy`` and decode them.

    ``max_seconds`` keeps only the start of long videos (DiDeMo ``trimmed30``); ``window=(start_s, end_s)``
    samples inside that span only (for indexing long videos in segments; a window past the end reads the
    last frame). ``size=(h, w)`` resizes while decoding (FFmpeg's scaler; decord and PyAV may differ
    slightly there). ``backend="auto"`` tries decord and falls back to PyAV when decord cannot open or
    decode the file. If PyAV reaches a clean end of stream before the frame count in the header, the
    missing frames repeat the last decoded one (a decoding error, as in a truncated file, is ``corrupt``).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) with positive values, got {size}")
    spath = check_file(path)
    # Validate the strategy before any decoding so a typo is not reported as a bad file.
    sample_frame_indices(1, 1, strategy)

    def work(source: Any) -> DecodedClip:
        vlen, fps = int(source.num_frames), float(source.fps)
        usable = effective_length(vlen, fps, max_seconds)
        first, stop = 0, usable
        if window is not None:
            first, stop = window_to_frame_range(window, fps, usable)
        local = sample_frame_indices(num_frames, stop - first, strategy, rng)
        indices = [first + i for i in local]
        frames = source.get(indices)
        return DecodedClip(
            frames=np.ascontiguousarray(frames, dtype=np.uint8),
            indices=indices,
            fps=fps,
            duration=vlen / fps,
            vlen=vlen,
            timestamps=[i / fps for i in indices],
            backend=source.name,
        )

    return _with_backends(spath, backend, size, work)


def read_image(path: str | os.PathLike | bytes) -> np.ndarray:
    """Read a still image as a one-frame clip: uint8 ``[1, H, W, 3]`` RGB (PIL, else PyAV)."""
    spath = check_file(path)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - PIL is normally installed
        return read_frames(spath, num_frames=1, strategy="middle", backend="pyav").frames
    try:
        with Image.open(spath) as img:
            array = np.array(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise VideoDecodeError(spath, "no_video_stream", f"not a recognised image: {exc}") from None
    except PermissionError as exc:
        raise VideoDecodeError(spath, "unreadable", f"permission denied: {exc}") from None
    except Exception as exc:
        raise VideoDecodeError(spath, "corrupt", f"cannot decode the image: {exc}") from None
    return array[None]


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a still-image extension (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``)."""
    return Path(os.fsdecode(path)).suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
