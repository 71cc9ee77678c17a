"""Durability helpers shared by the index files and the catalog's safety copy."""

from __future__ import annotations

import contextlib
import os


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
