"""The single-writer lock of an index in a PostgreSQL catalog: a session-level advisory lock.

SQLite catalogs use :class:`vtr.index.lock.FileLock` (a ``flock`` beside the database). A PostgreSQL catalog
is shared by machines that do not share a lock file, so the lock lives in the server instead:
``pg_try_advisory_lock(VTR_LOCK_CLASS, crc32(index name))`` on a connection held for as long as the lock is.
The server drops it when that connection ends, so a writer killed with ``kill -9`` (or a lost machine) never
leaves the index locked.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from vtr.errors import IndexBusyError

__all__ = ["AdvisoryLock", "VTR_LOCK_CLASS", "index_lock", "lock_key"]

# The first key of vtr's advisory locks ("vtr" in ASCII), so they do not collide with other applications'.
VTR_LOCK_CLASS = 0x767472
# The second key for schema migrations (index names hash to other values, almost surely).
MIGRATION_KEY = 0


def lock_key(name: str) -> int:
    """The advisory-lock key of index ``name``: its CRC-32 as a signed 32-bit int (never MIGRATION_KEY)."""
    key = zlib.crc32(name.encode("utf-8"))
    key = key - (1 << 32) if key >= 1 << 31 else key
    return key or 1


class AdvisoryLock:
    """An exclusive PostgreSQL advisory lock on ``(VTR_LOCK_CLASS, lock_key(name))``, held until :meth:`release`.

    Waits up to ``timeout_s`` for it, then raises :class:`IndexBusyError`.
    """

    def __init__(self, engine: Engine, name: str, timeout_s: float, what: str) -> None:
        self.key = lock_key(name)
        self._conn: Any = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            while not self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:c, :k)"),
                                         {"c": VTR_LOCK_CLASS, "k": self.key}).scalar():
                if time.monotonic() >= deadline:
                    raise IndexBusyError(
                        f"{what} is being written by another vtr process (PostgreSQL advisory lock "
                        f"{VTR_LOCK_CLASS}/{self.key} on {engine.url.render_as_string(hide_password=True)}); wait "
                        "for it to finish, or open the index read-only"
                    )
                time.sleep(0.05)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def release(self) -> None:
        """Unlock and close the connection (closing alone would return it to the pool still holding the lock)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:c, :k)"), {"c": VTR_LOCK_CLASS, "k": self.key})
            conn.close()
        except Exception:  # the connection is broken: the server has dropped the lock with it
            conn.invalidate()


def index_lock(engine: Engine, lock_path: Path, name: str, timeout_s: float, what: str) -> Any:
    """The writer lock of index ``name``: an advisory lock on PostgreSQL, else a file lock at ``lock_path``."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine, name, timeout_s, what)
    from vtr.index.lock import FileLock

    return FileLock(lock_path, timeout_s, what)
