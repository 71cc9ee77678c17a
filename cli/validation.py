"""Parse-time checks of CLI options and arguments: each bad value is refused naming the option and what it takes.

Typer callbacks (``callback=positive("--segment")``) and helpers the commands call before any work starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import typer


def _bad(param: typer.CallbackParam | None, message: str) -> typer.BadParameter:
    return typer.BadParameter(message, param=param)


def positive(unit: str = "") -> Callable[..., float | None]:
    """A callback for a float option that must be > 0 when given (``--segment``, ``--stride``)."""

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is not None and not (value > 0 and value != float("inf")):
            raise _bad(param, f"{value} is not in the range x>0{f' ({unit})' if unit else ''}")
        return value

    return check


def non_negative(unit: str = "") -> Callable[..., float | None]:
    """A callback for a float option that must be >= 0 when given (``--segment``: 0 means whole videos)."""

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is not None and not (value >= 0 and value != float("inf")):
            raise _bad(param, f"{value} is not in the range x>=0{f' ({unit})' if unit else ''}")
        return value

    return check


def check_home(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """``--home`` must be a folder (or not exist yet)."""
    if value is not None and value.exists() and not value.is_dir():
        raise _bad(param, f"{str(value)!r} is not a folder")
    return value


def check_device(param: typer.CallbackParam, value: str | None) -> str | None:
    """``--device``: auto, cpu, cuda or cuda:N (that the machine has one is checked when it is used)."""
    if value is None:
        return value
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise _bad(param, f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


def check_factory(param: typer.CallbackParam, value: str | None) -> str | None:
    """``--factory``: a FAISS index_factory string that FAISS can parse (for some usual width)."""
    if value is None:
        return value
    from vtr.errors import ConfigError
    from vtr.index.ondisk import check_ondisk_factory, ondisk_factory
    from vtr.index.vector_index import VectorIndex

    if ondisk_factory(value) is not None:  # ondisk:IVF...: no in-memory index, an on-disk IVF build
        try:
            check_ondisk_factory(576, ondisk_factory(value))
            return value
        except ConfigError as exc:
            raise _bad(param, str(exc)) from exc
    reason = ""
    for dim in (576, 768, 512, 1024):  # stored widths of the usual models; the index's own is checked later
        try:
            VectorIndex(dim, value)
            return value
        except ValueError as exc:
            reason = str(exc).split(": ", 1)[-1]
    raise _bad(param, f"{value!r} is not a FAISS index_factory string ({reason}); e.g. Flat, IVF1024,PQ64x4fs,RFlat")


def readable_text_file(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """``--from-file``: an existing UTF-8 text file."""
    if value is None:
        return value
    if not value.exists():
        raise _bad(param, f"{str(value)!r} does not exist")
    if not value.is_file():
        raise _bad(param, f"{str(value)!r} is not a file")
    try:
        value.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(param, f"{str(value)!r} is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise _bad(param, f"cannot read {str(value)!r}: {exc.strerror}") from exc
    return value


def check_query(param: typer.CallbackParam, value: str | None) -> str | None:
    """A query given on the command line must be text (the shell may pass bytes that are not UTF-8)."""
    if value is None:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad(param, "the query is not valid UTF-8 text") from exc
    if not value.strip():
        raise _bad(param, 'the query is empty (empty query): say in words what to look for, e.g. vtr search '
                          '"person chopping onions"')
    return value


def video_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be indexed (missing, a link loop, not a file or folder), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist" if not os.path.islink(path) else "is a broken symbolic link"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
    return f"is {kind}, not a video file or folder"


def check_video_paths(paths: Sequence[Path], prune: bool = False) -> None:
    """Every path given to ``vtr index`` must be a video file or a folder: else BadParameter (exit 2). With
    ``--prune`` the message says that nothing was pruned (a missing root is never read as "all files deleted")."""
    for p in paths:
        problem = video_path_problem(p)
        if problem:
            why = "; nothing was pruned (is the drive unplugged or the share unmounted?)" if prune else ""
            raise typer.BadParameter(f"{str(p)!r} {problem}{why}", param_hint="'PATHS...'")
