"""Search results per moment: neighbouring windows of one video become one hit (the best window's span).

A long video is indexed as overlapping windows, so one moment matches several neighbouring windows and a
plain top-k would list the same moment many times. :func:`collapse_windows` keeps, for each run of windows of
one video that overlap or touch, the best-scoring window (its score, start and end) and counts the windows it
stands for. Windows of the same video far apart stay separate hits (two moments of one film).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, TypeVar


class _Hit(Protocol):
    rank: int
    score: float
    path: str
    start_s: float
    end_s: float


H = TypeVar("H", bound=_Hit)

_TOUCH_S = 1e-3  # windows closer than this count as touching


def collapse_windows(hits: Sequence[H], gap_s: float = 0.0) -> list[H]:
    """``hits`` (best first) with neighbouring windows of one video merged into the best of them.

    Windows of one video are neighbours when they overlap or lie within ``gap_s`` seconds of each other
    (chained: a run of windows). Each merged hit is the run's best window with ``windows`` set to the run's
    size when the hit type has that field; the result is ranked 1, 2, ... by score (best first).
    """
    by_video: dict[str, list[int]] = {}
    for j, h in enumerate(hits):
        by_video.setdefault(h.path, []).append(j)
    keep: list[tuple[int, int]] = []  # (index of the run's best hit, windows in the run)
    for members in by_video.values():
        members = sorted(members, key=lambda j: (hits[j].start_s, hits[j].end_s))
        run = [members[0]]
        end = hits[members[0]].end_s
        for j in members[1:]:
            if hits[j].start_s <= end + gap_s + _TOUCH_S:
                run.append(j)
                end = max(end, hits[j].end_s)
            else:
                keep.append((min(run, key=lambda m: (-hits[m].score, m)), len(run)))
                run, end = [j], hits[j].end_s
        keep.append((min(run, key=lambda m: (-hits[m].score, m)), len(run)))
    keep.sort(key=lambda t: (-hits[t[0]].score, t[0]))
    fields = {f.name for f in dataclasses.fields(hits[0])} if hits and dataclasses.is_dataclass(hits[0]) else set()
    out = []
    for rank, (j, n) in enumerate(keep, 1):
        changes = {"rank": rank, **({"windows": n} if "windows" in fields else {})}
        out.append(dataclasses.replace(hits[j], **changes))
    return out
