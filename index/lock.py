"""The single-writer lock of an index: an exclusive ``flock`` on ``<home>/indexes/<name>.lock``.

The holder writes its pid and start time into the lock file, so a second writer can say whom it waits for.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vtr.errors import IndexBusyError

__all__ = ["FileLock", "IndexBusyError", "read_holder"]

log = logging.getLogger(__name__)


def read_holder(path: Path) -> str:
    """Who holds the lock at ``path``, as ``"pid N, since HH:MM:SS"`` (or ``"pid unknown"``)."""
    try:
        fields = path.read_text(encoding="ascii", errors="replace").split()
        pid, since = int(fields[0]), float(fields[1])
    except (OSError, ValueError, IndexError):
        return "pid unknown"
    return f"pid {pid}, since {time.strftime('%H:%M:%S', time.localtime(since))}"


class FileLock:
    """An exclusive ``flock`` on a lock file, held until :meth:`release` (no-op where fcntl is unavailable).

    The lock file itself is never deleted: unlinking it would let two processes each hold "the" lock.
    When the lock is taken, ``notify`` (default: a log warning) is told at once whom this process waits for
    and for how long; after ``timeout_s`` :class:`IndexBusyError` names the holder's pid.
    """

    def __init__(self, path: Path, timeout_s: float, what: str,
                 notify: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._fh: Any = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: single-writer discipline is up to the user
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")  # held (and locked) until release()
        deadline = time.monotonic() + max(0.0, timeout_s)
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    fh.close()
                    raise IndexBusyError(
                        f"{what} is being written by another vtr process ({read_holder(path)}; lock "
                        f"{str(path)!r}): re-run when it has finished, or wait for it with --wait SECONDS"
                    ) from exc
                if not told:
                    (notify or log.warning)(f"{what} is being written by another vtr process "
                                            f"({read_holder(path)}): waiting up to {timeout_s:g} s for it")
                    told = True
                time.sleep(0.05)
        fh.truncate(0)
        fh.write(f"{os.getpid()} {time.time():.3f}\n".encode("ascii"))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            try:
                self._fh.truncate(0)  # no stale pid for the next reader
            except OSError:
                pass
            self._fh.close()  # closing the file drops the flock
            self._fh = None
