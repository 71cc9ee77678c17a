"""The progress bar of ``vtr index``: it counts segments (what the encoder works through), not only videos.

A long video is many segments, so a bar of videos stalls on it (and its time estimate is meaningless). The
bar's unit is the segment; its total is the segments of the videos probed so far plus, for the videos not
probed yet, the mean segments per video seen so far (so the estimate firms up as videos are probed). Videos
done are shown next to it.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class IndexProgress:
    """``tqdm`` over segments for ``videos`` videos (disabled: counts only)."""

    def __init__(self, videos: int, enable: bool = True) -> None:
        self.videos = int(videos)
        self.seen = 0  # videos whose segment count is known (first chunk or failure arrived)
        self.known = 0  # segments of those videos
        self.videos_done = 0
        self.segments = 0  # segments decoded so far
        self.bar = tqdm(total=self.videos, desc="index", unit="seg", file=sys.stderr, disable=not enable,
                        dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"videos {self.videos_done}/{self.videos}", refresh=False)

    def estimated_total(self) -> int:
        """Segments expected in all: those known plus the mean per probed video for each video not yet seen."""
        unseen = self.videos - self.seen
        mean = self.known / self.seen if self.seen else 1.0
        return self.known + round(unseen * mean)

    def video_seen(self, segments: int) -> None:
        """A video was probed: it has ``segments`` segments (0: it failed)."""
        self.seen += 1
        self.known += int(segments)
        self.bar.total = max(self.estimated_total(), self.segments)
        self._postfix()

    def segments_done(self, n: int) -> None:
        self.segments += int(n)
        self.bar.update(int(n))

    def video_done(self) -> None:
        self.videos_done += 1
        self._postfix()
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
