"""The single-writer lock of an index: an exclusive ``flock`` on ``<home>/indexes/<name>.lock``.

The lock belongs to the writer process alone. A ``flock`` is shared by every process that inherits the open
file, so forked children (the decode workers of ``vtr index``) would otherwise keep holding it after a
``kill -9`` of the writer, until they notice their parent is gone. Every child forked while a lock is held
therefore drops its copy at once (``os.register_at_fork``); and the lock file records the writer's pid, so
a lock still held although that pid is dead (children forked by other means) is waited for a bounded time.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from pathlib import Path
from typing import Any

from vtr.errors import IndexBusyError, storage_error

__all__ = ["FileLock", "IndexBusyError"]

# Wait at most this long for a lock whose recorded holder is dead (its orphaned children are exiting).
DEAD_HOLDER_WAIT_S = 15.0

_held: weakref.WeakSet[FileLock] = weakref.WeakSet()


def _drop_in_child() -> None:
    """In a freshly forked child: stop referring to the parent's lock files (the parent keeps the locks)."""
    for lock in list(_held):
        lock._forget_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(fh: Any) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        fh.seek(0)
        text = fh.read(32).decode("ascii", "replace").strip()
        return int(text) if text else None
    return None


class FileLock:
    """An exclusive ``flock`` on a lock file, held until :meth:`release` (no-op where fcntl is unavailable).

    The lock file itself is never deleted: unlinking it would let two processes each hold "the" lock.
    ``timeout_s`` is how long to wait for a live holder; a lock whose recorded holder pid is dead is waited for
    up to :data:`DEAD_HOLDER_WAIT_S` (its orphaned children hold it for a few seconds at most).
    """

    def __init__(self, path: Path, timeout_s: float, what: str) -> None:
        self.path = path
        self._fh: Any = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: single-writer discipline is up to the user
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+b")  # held (and locked) until release(); not inherited across exec (PEP 446)
        except OSError as exc:
            mapped = storage_error(exc, path)
            if mapped is None:
                raise
            raise mapped from exc
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                holder = _read_pid(fh)
                dead = holder is not None and not _pid_alive(holder)
                waited = time.monotonic() - start
                if waited >= max(0.0, timeout_s) and not (dead and waited < DEAD_HOLDER_WAIT_S):
                    fh.close()
                    who = f" (pid {holder}{', exited; its child processes still hold it' if dead else ''})" \
                        if holder else ""
                    raise IndexBusyError(
                        f"{what} is being written by another vtr process{who}, lock {str(path)!r}; "
                        "wait for it to finish, or open the index read-only"
                    ) from exc
                time.sleep(0.05)
        with contextlib.suppress(OSError):  # who holds it: for the message above and the dead-holder wait
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n".encode())
            fh.flush()
        self._fh = fh
        _held.add(self)

    def _forget_in_child(self) -> None:
        """Point this (inherited) descriptor at /dev/null so the child does not keep the parent's lock."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, fh.fileno())  # atomically drops the child's reference to the locked file
            os.close(null)

    def release(self) -> None:
        if self._fh is not None:
            _held.discard(self)
            self._fh.close()  # closing the file drops the flock
            self._fh = None
