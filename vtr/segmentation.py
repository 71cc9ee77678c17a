"""How an index cuts videos into segments (one vector each): the default policy, overrides, and changing it.

A :class:`SegmentPolicy` keeps videos up to ``whole_up_to_s`` seconds as one segment (sampled as in
evaluation) and cuts longer ones into windows of ``window_s`` seconds starting every ``stride_s`` seconds
(the last one clipped to the end). ``window_s == 0`` means whole videos only.

The default follows what the models were trained on: 8 frames spread over clips of roughly 10-20 s (WebVid,
MSRVTT), i.e. about :data:`SECONDS_PER_FRAME` seconds between sampled frames. So the default window is
``num_frames * SECONDS_PER_FRAME`` (10 s for the released 8-frame models), windows overlap by half, and
videos up to three windows long (30 s) stay whole: a short clip is what the model expects as it is.

An index records its policy (catalog, :meth:`vtr.index.store.LibraryStore.segment_policy`): later runs use
it, and a run that asks for another one on an index that holds vectors is refused unless it re-indexes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from vtr.data.sampling import segment_windows
from vtr.errors import ConfigError

__all__ = ["SECONDS_PER_FRAME", "SegmentPolicy", "WindowTooShortError", "default_policy", "requested_policy",
           "settle_policy"]

SECONDS_PER_FRAME = 1.25  # spacing of the sampled frames the models saw in training (8 frames over ~10 s)
WHOLE_WINDOWS = 3  # by default, videos up to this many windows long stay one segment


class WindowTooShortError(ConfigError):
    """A window or stride shorter than one frame interval of a video (every window would be one frame)."""


def _fmt(s: float) -> str:
    return f"{s:g} s"


@dataclass(frozen=True)
class SegmentPolicy:
    """Videos up to ``whole_up_to_s`` are one segment; longer ones are ``window_s`` windows every ``stride_s``."""

    window_s: float
    stride_s: float
    whole_up_to_s: float

    def __post_init__(self) -> None:
        for name in ("window_s", "stride_s", "whole_up_to_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"segment policy: {name} must be a finite number >= 0, got {value}")
        if self.window_s > 0 and not 0 < self.stride_s <= self.window_s:
            raise ConfigError(f"--stride {self.stride_s:g} must be > 0 and at most --segment {self.window_s:g} "
                              "(windows must cover the whole video)")

    @property
    def whole_videos(self) -> bool:
        return self.window_s == 0

    def windows(self, duration_s: float, fps: float | None = None) -> list[tuple[float, float]]:
        """The segments ``[(start_s, end_s), ...]`` of a video of ``duration_s`` seconds.

        With ``fps``, a video that would be cut into windows (or strides) shorter than one frame interval is
        refused with :class:`WindowTooShortError`.
        """
        duration_s = float(duration_s)
        if self.whole_videos or duration_s <= self.whole_up_to_s:
            return [(0.0, duration_s)]
        if fps and fps > 0 and min(self.window_s, self.stride_s) < 1.0 / fps - 1e-9:
            raise WindowTooShortError(
                f"--segment {self.window_s:g} / --stride {self.stride_s:g} s is shorter than one frame interval "
                f"({1.0 / fps:.4g} s at {fps:g} fps): use --segment and --stride of at least {1.0 / fps:.4g} s, "
                "or --segment 0 for whole videos")
        return segment_windows(duration_s, self.window_s, self.stride_s)

    def describe(self) -> str:
        if self.whole_videos:
            return "whole videos (one segment each)"
        return (f"{_fmt(self.window_s)} windows every {_fmt(self.stride_s)} for videos longer than "
                f"{_fmt(self.whole_up_to_s)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


def default_policy(num_frames: int = 8) -> SegmentPolicy:
    """The default for a model sampling ``num_frames`` frames per clip (10 s / 5 s / whole up to 30 s at 8)."""
    window = round(max(1, int(num_frames)) * SECONDS_PER_FRAME, 3)
    return SegmentPolicy(window, window / 2, WHOLE_WINDOWS * window)


def requested_policy(segment: float | None, stride: float | None, default: SegmentPolicy) -> SegmentPolicy | None:
    """The policy the ``--segment``/``--stride`` options ask for (None: neither given).

    ``--segment 0``: whole videos. ``--segment S``: videos longer than S become S-second windows every
    ``--stride`` seconds (default S). ``--stride`` alone: the default window length with that stride.
    """
    if segment is None and stride is None:
        return None
    if segment is not None and (not math.isfinite(segment) or segment < 0):
        raise ConfigError(f"--segment must be >= 0 seconds (0: whole videos), got {segment:g}")
    if segment == 0:
        if stride is not None:
            raise ConfigError("--stride needs windows: give --segment S > 0 with it (--segment 0 is whole videos)")
        return SegmentPolicy(0.0, 0.0, 0.0)
    if segment is None:
        assert stride is not None
        if default.whole_videos:
            raise ConfigError("--stride needs windows: give --segment S > 0 with it")
        return SegmentPolicy(default.window_s, float(stride), default.whole_up_to_s)
    return SegmentPolicy(float(segment), float(stride if stride is not None else segment), float(segment))


def settle_policy(index_name: str, stored: SegmentPolicy | None, requested: SegmentPolicy | None,
                  default: SegmentPolicy, *, has_vectors: bool, legacy_windows: bool = False) -> SegmentPolicy:
    """The policy a run of ``vtr index`` uses on an index (raises ConfigError with the fix when it cannot).

    ``stored``: the index's recorded policy (None: a new index, or one built before policies were recorded);
    ``requested``: what the options ask for (None: no option given); ``has_vectors``: the index holds
    segments (an empty index takes any policy); ``legacy_windows``: an index without a recorded policy has
    videos with several segments (it was built with some ``--segment``, which was not recorded).
    A run with ``--reindex`` has emptied the index first, so it takes the requested (or default) policy.
    """
    if not has_vectors:
        return requested or stored or default
    if stored is None:  # built before vtr recorded policies
        if requested is not None:
            return requested  # the user says what it was built with; recorded from now on
        if legacy_windows:
            raise ConfigError(f"index {index_name!r} was built before vtr recorded how it cuts videos and holds "
                              "windowed videos: pass the --segment/--stride it was built with (or --reindex)")
        return SegmentPolicy(0.0, 0.0, 0.0)  # every video is one segment: that was whole videos
    if requested is None or requested == stored:
        return stored
    raise ConfigError(f"index {index_name!r} cuts videos into {stored.describe()}, this run asks for "
                      f"{requested.describe()}: segments of both kinds cannot be mixed. Re-run with --reindex to "
                      "re-embed every video with the new policy, or use another --index")
