"""The catalog's safety copy and ``vtr index repair``.

After every successful indexing run the SQLite catalog is copied with SQLite's online backup API to
``<home>/catalog.last-good.db`` (temp file, ``quick_check``, fsync, rename: the last good copy is only ever
replaced by a checked one). :func:`repair` puts a damaged catalog aside (``catalog.db.damaged-<time>``, with
its WAL), restores that copy, re-checks every index's FAISS file against it (rebuilt from the catalog when it
disagrees) and re-indexes only what changed since: the files the catalog knows, plus those the damaged
catalog still lists (read as far as it can be), plus any paths given. With no copy it starts a new catalog
and rebuilds it by re-indexing the same files.

With a database catalog (``db_url``, e.g. PostgreSQL) there is no safety copy to restore (the database server
keeps its own backups: ``pg_dump``, WAL archiving); repair connects (one line naming the fix when the server
cannot be reached) and does the rest: every index's FAISS file re-checked against the catalog (rebuilt when it
disagrees, is missing or damaged), the files the catalog lists and the given paths re-indexed (only changes
re-embedded), missing files counted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vtr.errors import ConfigError, StorageError, VtrError, storage_error
from vtr.index.catalog import CATALOG_FILE
from vtr.index.durable import atomic_replace
from vtr.index.integrity import quick_check, readonly_connect, remove_stale_temp_files, writable_home
from vtr.index.lock import FileLock

log = logging.getLogger(__name__)

SAFETY_COPY = "catalog.last-good.db"
_COPY_LOCK = ".safety-copy.lock"


def safety_copy_path(home: Path) -> Path:
    return home / SAFETY_COPY


def save_safety_copy(home: Path) -> Path:
    """Copy ``<home>/catalog.db`` to ``<home>/catalog.last-good.db`` (online backup, checked, atomic)."""
    src_path, final = home / CATALOG_FILE, safety_copy_path(home)
    lock = FileLock(home / "indexes" / _COPY_LOCK, 120.0, "the catalog's safety copy")
    try:
        remove_stale_temp_files(home, SAFETY_COPY)
        with atomic_replace(final, best_effort_dir_sync=True) as tmp:
            src = sqlite3.connect(src_path, timeout=30.0)
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode = DELETE")  # a self-contained file (restored as WAL again)
                quick_check(dst, tmp)
            finally:
                dst.close()
                src.close()
    finally:
        lock.release()
    return final


def save_safety_copy_or_warn(home: Path, changed: bool = True) -> Path | None:
    """:func:`save_safety_copy` (skipped when the run ``changed`` nothing and a copy exists); a failure (disk
    full, ...) is a warning: the indexing run itself succeeded."""
    if not changed and safety_copy_path(home).exists():
        return None
    try:
        return save_safety_copy(home)
    except (OSError, sqlite3.Error, VtrError) as exc:
        reason = storage_error(exc) if isinstance(exc, OSError) else None
        log.warning("the catalog's safety copy was not updated (%s); the previous one is kept",
                    reason or f"{type(exc).__name__}: {exc}")
        return None


# --------------------------------------------------------------------------- repair


@dataclass
class IndexRepair:
    """What repair did to one index."""

    name: str
    model: str | None
    faiss: str = ""  # "kept" or "rebuilt: <why>"
    indexed: int = 0
    unchanged: int = 0
    failed: int = 0
    missing: int = 0  # files the catalog knew that are gone
    error: str = ""
    ondisk: str = ""  # the on-disk IVF build: "" (none), "kept", "kept (older than the catalog...)", "rebuilt: <why>"


@dataclass
class RepairReport:
    catalog: str
    healthy: bool  # the catalog was fine: only the FAISS files were checked
    restored_from: str | None = None  # the safety copy put in place
    copy_saved_at: str | None = None
    damaged_moved_to: str | None = None
    rebuilt: bool = False  # no safety copy: a new catalog, filled by re-indexing
    indexes: list[IndexRepair] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Known:
    model: str | None = None
    factory: str | None = None
    paths: set[str] = field(default_factory=set)


def _is_healthy(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        conn = readonly_connect(os.fsencode(path), 5.0)
    except sqlite3.Error:
        return False
    try:
        quick_check(conn, path)
        return True
    except VtrError:
        return False
    finally:
        conn.close()


def _read_known(path: Path, into: dict[str, _Known]) -> None:
    """Index names, models and video paths from a catalog file, as far as it can be read (damaged or not)."""
    try:
        conn = readonly_connect(os.fsencode(path), 5.0)
    except sqlite3.Error:
        return
    try:
        names: dict[int, str] = {}
        with contextlib.suppress(sqlite3.Error):
            for i, name, model, factory in conn.execute("SELECT id, name, model_name, factory FROM indexes"):
                names[i] = name
                known = into.setdefault(name, _Known())
                known.model, known.factory = known.model or model, known.factory or factory
        with contextlib.suppress(sqlite3.Error):
            for i, raw in conn.execute("SELECT index_id, path_bytes FROM videos WHERE status = 'indexed'"):
                if i in names:
                    into[names[i]].paths.add(os.fsdecode(bytes(raw)))
    finally:
        conn.close()


def _move_aside(catalog: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = catalog.with_name(f"{catalog.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):  # a stale WAL must never be replayed onto the restored file
        src = Path(f"{catalog}{suffix}")
        if src.exists():
            os.replace(src, f"{target}{suffix}")
    return target


def _restore(copy: Path, catalog: Path) -> None:
    with atomic_replace(catalog, best_effort_dir_sync=True) as tmp:
        src, dst = sqlite3.connect(copy), sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()


def _index_names(home: Path) -> set[str]:
    folder = home / "indexes"
    if not folder.is_dir():
        return set()
    return {p.name[: -len(p.suffix)] for p in folder.iterdir()
            if p.suffix in (".lock", ".faiss") and not p.name.startswith(".")}


def repair(
    home: str | os.PathLike | None = None,
    paths: Sequence[str | os.PathLike] = (),
    *,
    index: str = "default",
    model: str | None = None,
    device: str = "auto",
    workers: int = 2,
    batch_size: int = 16,
    progress: bool = True,
    db_url: str | None = None,
) -> RepairReport:
    """Restore the catalog of ``home`` from its safety copy and bring every index up to date (module docstring).

    ``paths`` (video files or folders) are indexed into ``index`` as well; ``model`` overrides the model each
    index records (needed when no copy exists and the damaged catalog cannot be read). ``db_url``: the catalog is
    that database (nothing to restore; the FAISS files of ``home`` are checked and the files re-indexed).
    """
    from vtr.index.store import LibraryStore, list_indexes
    from vtr.library import Library

    home_path = writable_home(home)
    if db_url is not None:
        return _repair_database(home_path, db_url, paths, index, model, device, workers, batch_size, progress)
    catalog = home_path / CATALOG_FILE
    report = RepairReport(catalog=str(catalog), healthy=_is_healthy(catalog))
    known: dict[str, _Known] = {}
    if not report.healthy:
        locks = [FileLock(home_path / "indexes" / f"{n}.lock", 0.0, f"index {n!r}")
                 for n in sorted(_index_names(home_path))]
        try:
            if catalog.exists():
                _read_known(catalog, known)
            copy = safety_copy_path(home_path)
            usable = copy.exists() and _is_healthy(copy)
            if not usable and not paths and not any(k.paths for k in known.values()):
                raise ConfigError(f"the catalog {str(catalog)!r} has no usable safety copy and its list of videos "
                                  "cannot be read: run `vtr index repair PATH...` with your video folders to "
                                  "rebuild it by re-indexing")
            if catalog.exists() or Path(f"{catalog}-wal").exists():
                report.damaged_moved_to = str(_move_aside(catalog))
            if usable:
                _restore(copy, catalog)
                report.restored_from = str(copy)
                report.copy_saved_at = _dt.datetime.fromtimestamp(copy.stat().st_mtime).isoformat(timespec="seconds")
            else:
                report.rebuilt = True
                log.warning("no usable safety copy of the catalog: rebuilding it by re-indexing %s",
                            "the files the damaged catalog listed" if known else "the given paths")
        except OSError as exc:
            mapped = storage_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            for lock in locks:
                lock.release()
    for summary in list_indexes(home_path):
        entry = known.setdefault(summary.name, _Known())
        entry.model = summary.model_name
    with contextlib.suppress(VtrError):
        _read_known(catalog, known)  # the restored catalog's own files (re-checked: only changes are re-embedded)
    if paths or not known:
        known.setdefault(index, _Known()).paths.update(os.path.abspath(os.fspath(p)) for p in paths)
    for name, entry in sorted(known.items()):
        report.indexes.append(_repair_index(home_path, name, entry, model, device, workers, batch_size, progress,
                                            Library, LibraryStore, given=bool(paths) and name == index))
    return report


def _repair_ondisk(home: Path, name: str, store_cls: Any, db_url: str | None) -> str:
    """Check the index's on-disk IVF build: rebuilt from the catalog when it cannot be read, or when an index that
    keeps no in-memory FAISS index (``ondisk:``) has none; a readable one older than the catalog is kept (said)."""
    from vtr.index.ondisk import META_FILE, OnDiskIndex, build_ondisk_from_catalog, ondisk_factory, remove_ondisk

    with store_cls.open(home, name, device="cpu", db_url=db_url, read_only=True, lazy=True) as store:
        folder = store.ondisk_path
        if not folder.exists():
            if store.ram_index:
                return ""
            why = "none was built"
        else:
            try:
                built = OnDiskIndex(folder)
            except VtrError as exc:
                why = str(exc)
            else:
                store.catch_up()
                return "kept" if built.info.generation == store.generation else \
                    "kept (older than the catalog: `vtr index ondisk` makes what changed since searchable)"
        try:  # the factory it was built with, else the index's own (ondisk:)
            factory = json.loads((folder / META_FILE).read_text())["factory"]
        except (OSError, ValueError, KeyError, TypeError):
            factory = ondisk_factory(store.factory)
        if factory is None:
            remove_ondisk(home, name)  # searches go to the in-memory index until `vtr index ondisk --factory ...`
            return f"removed: {why} (build it again with `vtr index ondisk --factory ...`)"
        log.warning("index %r: the on-disk index: %s; rebuilding it (%s) from the catalog", name, why, factory)
        build_ondisk_from_catalog(store, factory)
        return f"rebuilt: {why}"


def _repair_database(home: Path, db_url: str, paths: Sequence[str | os.PathLike], index: str, model: str | None,
                     device: str, workers: int, batch_size: int, progress: bool) -> RepairReport:
    """:func:`repair` of a database catalog (``db_url``): check FAISS, re-index, count missing files."""
    import sqlalchemy as sa

    from vtr.index.catalog import Catalog, IndexRecord, Video, decode_path, safe_url
    from vtr.index.store import LibraryStore
    from vtr.library import Library

    report = RepairReport(catalog=safe_url(db_url), healthy=True)
    known: dict[str, _Known] = {}
    with Catalog.open(home, db_url) as catalog, catalog.read() as s:  # CatalogUnreachableError: one line, the fix
        names = {}
        for i, name, model_name, factory in s.execute(
                sa.select(IndexRecord.id, IndexRecord.name, IndexRecord.model_name, IndexRecord.factory)):
            names[i] = name
            known[name] = _Known(model=model_name, factory=factory)
        for i, raw in s.execute(sa.select(Video.index_id, Video.path_bytes).where(Video.status == "indexed")):
            known[names[i]].paths.add(decode_path(raw))
    if paths or not known:
        known.setdefault(index, _Known()).paths.update(os.path.abspath(os.fspath(p)) for p in paths)
    for name, entry in sorted(known.items()):
        report.indexes.append(_repair_index(home, name, entry, model, device, workers, batch_size, progress,
                                            Library, LibraryStore, given=bool(paths) and name == index,
                                            db_url=db_url))
    return report


def _repair_index(home: Path, name: str, entry: _Known, model: str | None, device: str, workers: int,
                  batch_size: int, progress: bool, library_cls: Any, store_cls: Any, given: bool,
                  db_url: str | None = None) -> IndexRepair:
    result = IndexRepair(name=name, model=model or entry.model)
    try:
        if not given or entry.model is not None:
            with contextlib.suppress(ConfigError):  # a new index (no copy) has no record yet
                with store_cls.open(home, name, device="cpu", db_url=db_url) as store:
                    check = store.last_check
                    result.faiss = ("none: searched on disk only" if not store.ram_index else
                                    f"rebuilt: {check.reason or 'disagreed with the catalog'}" if check.changed
                                    else "kept")
        existing = [p for p in sorted(entry.paths) if os.path.exists(p)]
        result.missing = len(entry.paths) - len(existing)
        if existing:
            lib = library_cls(home=home, index=name, model=result.model, device=device, factory=entry.factory,
                              db_url=db_url)
            done = lib.index(existing, workers=workers, batch_size=batch_size, progress=progress)
            result.indexed, result.unchanged, result.failed = done.indexed, done.unchanged, len(done.failed)
        if entry.model is not None or existing:
            result.ondisk = _repair_ondisk(home, name, store_cls, db_url)
    except StorageError:
        raise
    except VtrError as exc:
        result.error = str(exc)
    return result
