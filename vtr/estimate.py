"""An early estimate of a long run's total time: items x measured seconds per item, said once."""

from __future__ import annotations

import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunEstimate:
    """Call :meth:`update` with the number of items done; once a rate has been measured past the first update
    (which carries model loading and warm-up), ``say`` gets one line with the whole run's estimate."""

    def __init__(self, total: int, say: Callable[[str], None] | None, what: str = "videos",
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.say, self.what, self.clock = total, say, what, clock
        self.start = clock()
        self.first: tuple[float, int] | None = None  # (time, done) at the first update: the rate starts there
        self.line: str | None = None

    def update(self, done: int) -> None:
        if self.line is not None or self.say is None or done >= self.total:
            return
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
            return
        t1, d1 = self.first
        if done <= d1 or now <= t1:
            return
        per_item = (now - t1) / (done - d1)
        left = per_item * (self.total - done)
        self.line = (f"estimate: {self.total} {self.what} x {per_item:.2f} s each = about "
                     f"{_duration(now - self.start + left)} in all ({_duration(left)} left)")
        self.say(self.line)
