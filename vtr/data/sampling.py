"""Which frames to read: the official UMT/VINDLU frame sampling, DiDeMo trimming and long-video windows."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Strategy = Literal["middle", "rand", "uniform"]
STRATEGIES: tuple[str, ...] = ("middle", "rand", "uniform")

# Slack for float round-off when turning seconds into frame numbers and comparing window ends.
_EPS = 1e-6


def _segments(num_segments: int, vlen: int) -> list[tuple[int, int]]:
    """Split ``[0, vlen)`` into ``num_segments`` inclusive ``(start, end)`` ranges, as the official code."""
    edges = np.linspace(0, vlen, num_segments + 1).astype(int)
    return [(int(edges[i]), int(edges[i + 1]) - 1) for i in range(num_segments)]


def _pad_last(indices: list[int], num_frames: int) -> list[int]:
    """Pad ``indices`` to ``num_frames`` by repeating its last element."""
    if len(indices) < num_frames:
        indices = indices + [indices[-1]] * (num_frames - len(indices))
    return indices


def sample_frame_indices(
    num_frames: int,
    vlen: int,
    strategy: Strategy | str = "middle",
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Pick ``num_frames`` frame indices out of a video of ``vlen`` frames.

    ``middle`` and ``rand`` follow the official ``get_frame_indices``: the video is cut into
    ``acc = min(num_frames, vlen)`` segments ``[edges[i], edges[i+1]-1]`` with
    ``edges = linspace(0, vlen, acc+1).astype(int)``; ``middle`` takes ``(start+end)//2`` of each
    segment and ``rand`` a random frame of each (as the official ``random.choice(range(start, end))``,
    i.e. in ``[start, end-1]``; when a segment holds a single frame that range is empty and, like the
    official code, a sorted random subset of ``acc`` distinct frames is drawn instead). When
    ``vlen < num_frames`` the list is padded by repeating its last index.

    ``uniform`` is ``round(linspace(0, vlen-1, num_frames))``: evenly spaced and including both the
    first and the last frame (repeats indices when ``vlen < num_frames``).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if vlen < 1:
        raise ValueError(f"vlen must be >= 1, got {vlen}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")

    if strategy == "uniform":
        return [int(i) for i in np.linspace(0, vlen - 1, num_frames).round().astype(int)]

    acc = min(num_frames, vlen)
    segments = _segments(acc, vlen)
    if strategy == "middle":
        indices = [(start + end) // 2 for start, end in segments]
    else:
        rng = rng if rng is not None else np.random.default_rng()
        if all(end > start for start, end in segments):
            indices = [int(rng.integers(start, end)) for start, end in segments]
        else:
            indices = sorted(int(i) for i in rng.permutation(vlen)[:acc])
    return _pad_last(indices, num_frames)


def effective_length(vlen: int, fps: float, max_seconds: float | None) -> int:
    """Frames left after keeping only the first ``max_seconds`` (DiDeMo ``trimmed30``).

    As in the official reader: if ``vlen / fps > max_seconds`` the length becomes
    ``int(max_seconds * fps)``; shorter videos (or ``max_seconds=None``, or unknown fps) are unchanged.
    """
    if max_seconds is None or fps <= 0 or not math.isfinite(fps):
        return vlen
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    if vlen / fps > max_seconds:
        return max(1, min(vlen, int(max_seconds * fps)))
    return vlen


def segment_windows(duration_s: float, window_s: float, stride_s: float) -> list[tuple[float, float]]:
    """Cut a video of ``duration_s`` seconds into windows ``[start, end)`` for indexing.

    Windows are ``window_s`` long and start every ``stride_s`` seconds (``0 < stride_s <= window_s``, so
    every instant is covered). The last window is clipped to the end of the video, and no window is
    emitted once the previous one has reached the end. A video no longer than ``window_s`` gives the
    single window ``(0, duration_s)``.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    if not 0 < stride_s <= window_s:
        raise ValueError(f"stride_s must be in (0, window_s={window_s}] to cover the video, got {stride_s}")
    if duration_s < 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s}")
    windows: list[tuple[float, float]] = []
    k = 0
    while True:
        start = k * stride_s  # multiply rather than accumulate to avoid drift
        end = min(start + window_s, duration_s)
        windows.append((float(start), float(end)))
        if end >= duration_s - _EPS:
            return windows
        k += 1


def window_to_frame_range(window: tuple[float, float], fps: float, vlen: int) -> tuple[int, int]:
    """Frames ``[first, stop)`` whose timestamps ``i / fps`` fall in the window ``[start_s, end_s)``.

    The range is clipped to ``[0, vlen)`` and always holds at least one frame (a window narrower than a
    frame period gets the frame at or after its start, or the last frame).
    """
    start_s, end_s = window
    if end_s < start_s:
        raise ValueError(f"window end {end_s} is before its start {start_s}")
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    if vlen < 1:
        raise ValueError(f"vlen must be >= 1, got {vlen}")
    first = max(0, math.ceil(start_s * fps - _EPS))
    stop = min(vlen, math.ceil(end_s * fps - _EPS))
    first = min(first, vlen - 1)
    stop = max(stop, first + 1)
    return first, stop
