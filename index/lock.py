"""The single-writer lock of an index: an exclusive ``flock`` on ``<home>/indexes/<name>.lock``.

The lock belongs to the writer process alone. A ``flock`` is shared by every process that inherits the open
file, so forked children (the decode workers of ``vtr index``) would otherwise keep holding it after a
``kill -9`` of the writer, until they notice their parent is gone. Every child forked while a lock is held
therefore drops its copy at once (``os.register_at_fork``). The holder writes its pid and start time into the
lock file, so a second writer can say whom it waits for, and a lock still held although that pid is dead
(children forked by other means) is waited for a bounded time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vtr.errors import IndexBusyError, storage_error

__all__ = ["FileLock", "IndexBusyError", "read_holder"]

log = logging.getLogger(__name__)

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


def _parse_holder(text: str) -> tuple[int | None, float | None]:
    """``"PID START_TIME"`` (or just ``"PID"``) from a lock file's content."""
    fields = text.split()
    try:
        pid = int(fields[0])
    except (ValueError, IndexError):
        return None, None
    try:
        return pid, float(fields[1])
    except (ValueError, IndexError):
        return pid, None


def _describe(pid: int | None, since: float | None) -> str:
    if pid is None:
        return "pid unknown"
    return f"pid {pid}" + (f", since {time.strftime('%H:%M:%S', time.localtime(since))}" if since else "")


def read_holder(path: Path) -> str:
    """Who holds the lock at ``path``, as ``"pid N, since HH:MM:SS"`` (or ``"pid unknown"``)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return "pid unknown"
    return _describe(*_parse_holder(text))


def _read_fh(fh: Any) -> tuple[int | None, float | None]:
    with contextlib.suppress(OSError):
        fh.seek(0)
        return _parse_holder(fh.read(64).decode("ascii", "replace"))
    return None, None


class FileLock:
    """An exclusive ``flock`` on a lock file, held until :meth:`release` (no-op where fcntl is unavailable).

    The lock file itself is never deleted: unlinking it would let two processes each hold "the" lock.
    When the lock is taken, ``notify`` (default: a log warning) is told at once whom this process waits for and
    for how long. ``timeout_s`` is how long to wait for a live holder (then :class:`IndexBusyError` names its
    pid); a lock whose recorded holder is dead is waited for up to :data:`DEAD_HOLDER_WAIT_S`.
    """

    def __init__(self, path: Path, timeout_s: float, what: str,
                 notify: Callable[[str], None] | None = None) -> None:
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
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                pid, since = _read_fh(fh)
                dead = pid is not None and not _pid_alive(pid)
                waited = time.monotonic() - start
                if waited >= max(0.0, timeout_s) and not (dead and waited < DEAD_HOLDER_WAIT_S):
                    fh.close()
                    who = _describe(pid, since) + (", exited; its child processes still hold it" if dead else "")
                    raise IndexBusyError(
                        f"{what} is being written by another vtr process ({who}; lock {str(path)!r}): re-run "
                        "when it has finished, wait for it with --wait SECONDS, or open the index read-only"
                    ) from exc
                if not told and timeout_s > 0:
                    (notify or log.warning)(f"{what} is being written by another vtr process "
                                            f"({_describe(pid, since)}): waiting up to {timeout_s:g} s for it")
                    told = True
                time.sleep(0.05)
        with contextlib.suppress(OSError):  # who holds it: for the messages above and the dead-holder wait
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {time.time():.3f}\n".encode("ascii"))
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
            with contextlib.suppress(OSError):
                self._fh.truncate(0)  # no stale pid for the next reader
            self._fh.close()  # closing the file drops the flock
            self._fh = None
