"""Typed errors. Every error vtr raises for bad input says what is wrong and how to fix it."""

from __future__ import annotations

import os
from pathlib import Path


class VtrError(Exception):
    """Base class of vtr's own errors (the CLI prints these without a traceback)."""

    exit_code = 1


class VideoDecodeError(VtrError):
    """A file could not be decoded as a video.

    ``reason`` is a short machine-friendly tag: ``missing``, ``unreadable`` (permissions), ``empty``
    (zero bytes), ``no_video_stream`` (audio-only or not a media file), ``no_frames``, ``corrupt``
    (truncated or undecodable).
    """

    exit_code = 3

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"cannot decode video {self.path!r}: {reason}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class ConfigError(VtrError):
    """A configuration, model name or option is invalid."""

    exit_code = 2


class CheckpointError(VtrError):
    """A checkpoint file is missing, truncated or does not match the model."""

    exit_code = 4


class IndexCorruptError(VtrError):
    """A FAISS index file is missing, truncated, unreadable or not the file that was saved."""

    exit_code = 5

    def __init__(self, path: str | os.PathLike, detail: str) -> None:
        self.path = os.fsdecode(os.fspath(path))
        self.detail = detail
        super().__init__(f"FAISS index file {self.path!r} is unusable: {detail} (it is rebuilt from the catalog)")


class IndexBusyError(VtrError):
    """Another process is writing this index."""

    exit_code = 6


class PruneRefusedError(ConfigError):
    """``--prune`` refused: a root is missing or unreadable, or the prune would remove too much of an index."""


class CatalogCorruptError(VtrError):
    """The SQLite catalog is damaged (truncated, overwritten, not a database): ``vtr index repair`` restores it."""

    exit_code = 7

    def __init__(self, path: str | os.PathLike, detail: str) -> None:
        self.path = os.fsdecode(os.fspath(path))
        self.detail = " ".join(str(detail).split())
        super().__init__(f"the catalog {self.path!r} is damaged ({self.detail}): run `vtr index repair` to restore "
                         "the last good copy and re-index what changed since")


class StorageError(VtrError):
    """The data home cannot be written: disk full, read-only file system, or no permission.

    ``reason`` is ``full``, ``read_only`` or ``permission``. Nothing is left half-written: the catalog commit
    is rolled back and temp files are removed.
    """

    exit_code = 8

    FIXES = {
        "full": "free some space (or use --home on another disk) and run the command again; what was committed "
                "is kept",
        "read_only": "searching works on a read-only home; to index, use a writable --home",
        "permission": "fix the permissions, or use a --home you can write to",
    }

    def __init__(self, path: str | os.PathLike | None, reason: str, detail: str = "") -> None:
        self.path = os.fsdecode(os.fspath(path)) if path is not None else None
        self.reason = reason
        what = {"full": "no space left on the device", "read_only": "read-only",
                "permission": "permission denied"}.get(reason, reason)
        where = f" at {self.path!r}" if self.path else ""
        extra = f" ({' '.join(detail.split())})" if detail else ""
        super().__init__(f"cannot write{where}: {what}{extra}; {self.FIXES.get(reason, 'check the data home')}")


class ReadOnlyHomeError(StorageError):
    """Indexing (or another write) was asked of a data home that is not writable."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "read_only")


# Exit code of an unexpected exception (a bug or an unforeseen environment): sysexits' EX_SOFTWARE.
INTERNAL_ERROR_EXIT = 70

STORAGE_ERRNOS = {"ENOSPC": "full", "EDQUOT": "full", "EROFS": "read_only", "EACCES": "permission",
                  "EPERM": "permission"}


def storage_error(exc: OSError, path: str | os.PathLike | None = None) -> StorageError | None:
    """The :class:`StorageError` for an OSError of a full / read-only / forbidden file system, else None."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    reason = STORAGE_ERRNOS.get(name)
    if reason is None:
        return None
    return StorageError(path if path is not None else exc.filename, reason)


class CatalogUnreachableError(VtrError):
    """The catalog database (``--db``) cannot be reached: server down, wrong host, port, database or credentials."""

    exit_code = 9
