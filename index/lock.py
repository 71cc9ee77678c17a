"""The single-writer lock of an index: an exclusive ``flock`` on ``<home>/indexes/<name>.lock``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vtr.errors import IndexBusyError

__all__ = ["FileLock", "IndexBusyError"]


class FileLock:
    """An exclusive ``flock`` on a lock file, held until :meth:`release` (no-op where fcntl is unavailable).

    The lock file itself is never deleted: unlinking it would let two processes each hold "the" lock.
    """

    def __init__(self, path: Path, timeout_s: float, what: str) -> None:
        self.path = path
        self._fh: Any = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: single-writer discipline is up to the user
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")  # held (and locked) until release()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    fh.close()
                    raise IndexBusyError(
                        f"{what} is being written by another vtr process (lock {str(path)!r}); "
                        "wait for it to finish, or open the index read-only"
                    ) from exc
                time.sleep(0.05)
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops the flock
            self._fh = None
