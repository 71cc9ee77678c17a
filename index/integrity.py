"""Storage faults of a data home: damaged catalogs, full / read-only / forbidden disks, stale temp files.

* :func:`install_error_mapping` turns SQLite's corruption and storage errors, wherever SQLAlchemy meets them,
  into :class:`~vtr.errors.CatalogCorruptError` / :class:`~vtr.errors.StorageError` (one line, with the fix).
* :func:`quick_check` runs ``PRAGMA quick_check`` (every page and b-tree of the file, ~0.4 GB/s);
  :func:`needs_check` says when opening should pay for it: always for writers, for readers when the catalog is
  small or a writer did not close cleanly (its marker, :func:`unclean_marker`, is still there).
* :func:`home_writable` and :func:`readonly_connect` let a read-only home (read-only mount, container image)
  be searched: SQLite opens with ``mode=ro``, or ``immutable=1`` when the WAL's shared-memory file cannot be
  created there.
* :func:`remove_stale_temp_files` deletes the ``.<name>.faiss.*.tmp`` files that a killed save left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

from vtr.errors import CatalogCorruptError, ReadOnlyHomeError, StorageError, storage_error
from vtr.home import data_home

log = logging.getLogger(__name__)

# Readers run quick_check on open when the catalog is at most this big (~0.1 s on a loaded 2-core CPU).
READER_CHECK_BYTES = 64 << 20
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_STORAGE = {"SQLITE_FULL": "full", "SQLITE_READONLY": "read_only", "SQLITE_PERM": "permission"}


def _primary_name(exc: BaseException) -> str:
    """SQLite's primary result-code name of a sqlite3 error (``SQLITE_CORRUPT``), or ``""``."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return ""
    primary = code & 0xFF
    return {3: "SQLITE_PERM", 8: "SQLITE_READONLY", 10: "SQLITE_IOERR", 11: "SQLITE_CORRUPT", 13: "SQLITE_FULL",
            14: "SQLITE_CANTOPEN", 26: "SQLITE_NOTADB"}.get(primary, "")


def map_sqlite_error(exc: BaseException, path: str | os.PathLike | None) -> Exception | None:
    """The vtr error for a sqlite3 corruption / storage error (None: not one of those)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    name = _primary_name(exc)
    where = path if path is not None else "the catalog"
    if name in _CORRUPT:
        return CatalogCorruptError(where, str(exc))
    if name == "SQLITE_READONLY" and (path is None or (home_writable(Path(os.fspath(path)).parent)
                                                       and os.access(path, os.W_OK))):
        return None  # a write through a query_only (read-only) connection: a bug, not a storage fault
    if name in _STORAGE:
        return StorageError(path, _STORAGE[name], str(exc))
    if name in ("SQLITE_CANTOPEN", "SQLITE_IOERR") and path is not None:
        folder = Path(os.fspath(path)).parent
        if not home_writable(folder):
            return StorageError(path, "read_only", str(exc))
        if name == "SQLITE_IOERR" and disk_nearly_full(folder):  # e.g. the WAL index (-shm) could not grow
            return StorageError(path, "full", str(exc))
    return None


def disk_nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    """True when the file system of ``folder`` has less than ``margin`` bytes free for unprivileged writes."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


def install_error_mapping(engine: Engine, path: str | os.PathLike | None) -> None:
    """Make ``engine`` raise CatalogCorruptError / StorageError instead of raw SQLite errors of those kinds."""

    @event.listens_for(engine, "handle_error")
    def _map(ctx) -> None:  # noqa: ANN001 - sqlalchemy.engine.ExceptionContext
        mapped = map_sqlite_error(ctx.original_exception, path)
        if mapped is not None:
            raise mapped from ctx.original_exception


def guarded(path: str | os.PathLike | None, fn: Callable[[], object]) -> object:
    """Run ``fn``, mapping sqlite3 errors it raises outside SQLAlchemy (connect events, backups)."""
    try:
        return fn()
    except sqlite3.Error as exc:
        mapped = map_sqlite_error(exc, path)
        if mapped is None:
            raise
        raise mapped from exc


# --------------------------------------------------------------------------- integrity


def quick_check(conn: sqlite3.Connection, path: str | os.PathLike) -> None:
    """``PRAGMA quick_check`` on ``conn``; CatalogCorruptError naming the first problem when it fails."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise CatalogCorruptError(path, str(exc)) from exc
    if rows != ["ok"]:
        first = " ".join(str(rows[0]).replace("*** in database main ***", "").split())
        raise CatalogCorruptError(path, f"quick_check: {first[:120]}{'...' if len(first) > 120 else ''}")


UNCLEAN_PREFIX = ".unclean."


def unclean_marker(home: Path, name: str) -> Path:
    """Present while a writer of index ``name`` is open: one left behind means that writer was killed."""
    return home / "indexes" / f"{UNCLEAN_PREFIX}{name}"


def needs_check(path: Path, read_only: bool) -> bool:
    """Whether opening the catalog ``path`` should run quick_check now (see the module docstring)."""
    if not read_only:
        return True
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size <= READER_CHECK_BYTES:
        return True
    with contextlib.suppress(OSError), os.scandir(path.parent / "indexes") as it:
        return any(e.name.startswith(UNCLEAN_PREFIX) for e in it)
    return False


# --------------------------------------------------------------------------- read-only homes


def home_writable(path: Path) -> bool:
    """True when files can be created in ``path`` (False on a read-only mount, even for root)."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _uri(raw: bytes, **params: str) -> str:
    return f"file:{urllib.parse.quote(raw)}?" + urllib.parse.urlencode(params)


def readonly_connect(raw: bytes, timeout: float) -> sqlite3.Connection:
    """Open a SQLite file read-only: ``mode=ro``, else ``immutable=1`` (a WAL database on a read-only mount).

    ``immutable`` makes SQLite ignore locks and the WAL: right for a cleanly closed catalog on a read-only
    mount (its WAL was checkpointed and removed when the last writer closed).
    """
    conn = sqlite3.connect(_uri(raw, mode="ro"), uri=True, check_same_thread=False, timeout=timeout)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if _primary_name(exc) not in ("SQLITE_CANTOPEN", "SQLITE_READONLY"):
            raise
    log.info("catalog %s: WAL files cannot be created here; opened immutable", os.fsdecode(raw))
    return sqlite3.connect(_uri(raw, mode="ro", immutable="1"), uri=True, check_same_thread=False, timeout=timeout)


def writable_home(home: str | os.PathLike | None) -> Path:
    """The data home, created if needed; ReadOnlyHomeError / StorageError (one line) when it cannot be written."""
    path = data_home(home, create=False)
    if path.is_dir() and not home_writable(path):
        raise ReadOnlyHomeError(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "indexes").mkdir(exist_ok=True)
    except OSError as exc:
        mapped = storage_error(exc)
        if mapped is None:
            raise
        raise mapped from exc
    return path


def start_writing(home: Path, name: str) -> None:
    """Call once a writer holds the lock of index ``name``: remove its stale temp files, set its marker."""
    remove_stale_temp_files(home / "indexes", f"{name}.faiss")
    with contextlib.suppress(OSError):
        unclean_marker(home, name).touch()


def end_writing(home: Path, name: str) -> None:
    """A clean end of a write session (see :func:`start_writing`)."""
    with contextlib.suppress(OSError):
        unclean_marker(home, name).unlink()


# --------------------------------------------------------------------------- temp files


def remove_stale_temp_files(folder: Path, name: str) -> int:
    """Delete ``.<name>.*.tmp`` files in ``folder`` (call only while holding the writer lock of ``name``)."""
    removed = 0
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        for entry in it:
            rest = entry.name[len(name) + 2:-len(".tmp")]  # mkstemp's random part: no dots
            if (entry.name.startswith(f".{name}.") and entry.name.endswith(".tmp") and rest and "." not in rest
                    and entry.is_file()):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.info("removed %d stale temp file(s) of %s in %s", removed, name, folder)
    return removed
