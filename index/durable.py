"""Durable file writes shared by the index files and the catalog's safety copy."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(folder: str | os.PathLike, *, best_effort: bool = False) -> None:
    """fsync a folder, so a rename or a new file inside it survives a power cut (no-op where folders cannot be
    opened, e.g. Windows). ``best_effort``: ignore an ``OSError`` (some filesystems refuse to fsync a folder)."""
    if os.name != "posix":  # pragma: no cover - Windows cannot open folders
        return
    with contextlib.suppress(OSError) if best_effort else contextlib.nullcontext():
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_replace(final: str | os.PathLike, *, best_effort_dir_sync: bool = False) -> Iterator[str]:
    """Write ``final`` atomically: yields the path of a temp file beside it (``.<name>.XXXX.tmp``, the pattern
    :func:`vtr.index.integrity.remove_stale_temp_files` cleans up) for the caller to fill. On a clean exit the
    file is fsynced and renamed over ``final`` and the folder fsynced (:func:`fsync_dir`); on an error it is
    removed and the error raised."""
    final = Path(os.fspath(final))
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(final.parent, best_effort=best_effort_dir_sync)
