"""Find the video files to index: recursive, sorted, symlink-loop-safe, hidden-file-free, any file name."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator

from vtr.data.formats import VIDEO_EXTENSIONS
from vtr.errors import ConfigError

log = logging.getLogger(__name__)



def has_video_extension(name: str | bytes, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> bool:
    """True when ``name``'s extension (case-insensitive) is one of ``extensions`` (given without dots)."""
    base = os.fsdecode(name).rsplit("/", 1)[-1]
    if "." not in base.lstrip("."):
        return False
    ext = base.rsplit(".", 1)[1].lower()
    return ext in {e.lower().lstrip(".") for e in extensions}


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def walk_videos(
    paths: Iterable[str | os.PathLike | bytes],
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    *,
    missing_ok: bool = False,
) -> Iterator[str]:
    """Yield the absolute paths of the video files under ``paths``, each real file once.

    Folders are walked recursively in sorted (byte) order, so the output is deterministic. Only files with
    one of ``extensions`` are taken from folders; files given directly are taken whatever their name. Hidden
    files and folders (name starting with ``.``) are skipped inside folders. Symbolic links are followed;
    every folder and file is visited once by its real identity, so link loops end and a file reachable by
    several links is yielded once (under the first path found). Paths are ``str`` with the file system's
    surrogateescape, so non-UTF-8 names survive (``os.fsencode`` gives the exact bytes back).

    A path that does not exist raises :class:`ConfigError`, or is skipped with ``missing_ok``.
    """
    exts = frozenset(e.lower().lstrip(".") for e in extensions)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def take_file(path: str, st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in seen_files:
            return False
        seen_files.add(key)
        return True

    def walk_dir(folder: str) -> Iterator[str]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            log.warning("cannot list %r: %s", folder, exc.strerror or exc)
            return
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            full = os.path.join(folder, entry.name)
            try:
                st = os.stat(full)  # follows symlinks
            except OSError:
                log.debug("skipping %r (broken link or vanished)", full)
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    continue
                seen_dirs.add(key)
                yield from walk_dir(full)
            elif stat.S_ISREG(st.st_mode) and has_video_extension(entry.name, exts) and take_file(full, st):
                yield full

    for raw in paths:
        path = os.path.abspath(os.fsdecode(os.fspath(raw)))
        try:
            st = os.stat(path)
        except OSError as exc:
            if missing_ok:
                log.debug("skipping missing %r", path)
                continue
            raise ConfigError(f"{path!r} does not exist or cannot be read ({exc.strerror})") from exc
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key not in seen_dirs:
                seen_dirs.add(key)
                yield from walk_dir(path)
        elif stat.S_ISREG(st.st_mode):
            if take_file(path, st):
                yield path
        else:
            log.warning("skipping %r: not a regular file or folder", path)
