"""How the ``vtr`` command ends: every failure is ONE line on stderr and an exit code, never a raw traceback.

=====  ====================================================================================================
code   meaning
=====  ====================================================================================================
0      success
1      other vtr error
2      bad usage: an unknown or out-of-range option, a missing or non-video path (ConfigError)
3      a video cannot be decoded (VideoDecodeError)
4      a checkpoint is missing, damaged or does not match (CheckpointError)
5      a FAISS index file is unusable (IndexCorruptError)
6      another process is writing the index (IndexBusyError)
7      the catalog is damaged: run ``vtr index repair`` (CatalogCorruptError)
8      the data home cannot be written: disk full, read-only, no permission (StorageError)
9      the catalog database (``--db``) cannot be reached (CatalogUnreachableError)
70     an unexpected error (a bug): ``--debug`` shows the traceback
130    interrupted (Ctrl-C)
=====  ====================================================================================================

Lines are printed with ``print`` (never wrapped, whatever the terminal width); ``--debug`` (anywhere on the
command line, or ``VTR_DEBUG=1``) prints the traceback before the line.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

try:  # typer >= 0.2x carries its own copy of click; older ones use click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - depends on the installed typer
    import click.exceptions as click_exc  # type: ignore[no-redef]

import typer

from vtr.errors import INTERNAL_ERROR_EXIT, VtrError, storage_error

DEBUG_FLAG = "--debug"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def print_error(message: str, label: str = "error") -> None:
    """One line on stderr: ``error: message`` (red label on a terminal)."""
    tty = sys.stderr.isatty()
    head = f"\x1b[31m{label}:\x1b[0m" if tty else f"{label}:"
    print(f"{head} {one_line(message)}", file=sys.stderr, flush=True)


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (before a ``--``), and whether it was there (or ``VTR_DEBUG`` is set)."""
    args, debug, rest = [], os.environ.get("VTR_DEBUG", "") not in ("", "0"), False
    for a in argv:
        if a == "--":
            rest = True
        if a == DEBUG_FLAG and not rest:
            debug = True
        else:
            args.append(a)
    return args, debug


def run_cli(app: Any, argv: Sequence[str] | None = None) -> int:
    """Run the Typer ``app`` on ``argv`` (default: ``sys.argv[1:]``); return the exit code, errors printed."""
    args, debug = split_debug(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name="vtr", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click_exc.NoArgsIsHelpError as exc:  # `vtr models` alone: the help
        print(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return exc.exit_code
    except click_exc.ClickException as exc:  # usage: unknown or bad option, missing argument
        print_error(exc.format_message())
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print_error("aborted")
        return 1
    except KeyboardInterrupt:
        print_error("interrupted", label="stopped")
        return 130
    except VtrError as exc:
        if debug:
            traceback.print_exc()
        print_error(str(exc))
        return exc.exit_code
    except BrokenPipeError:  # `vtr search ... | head`: the reader went away
        sys.stderr.close()
        return 1
    except OSError as exc:
        mapped = storage_error(exc)
        if debug or mapped is None:
            return _unexpected(exc, debug)
        print_error(str(mapped))
        return mapped.exit_code
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, the type, and how to see more
        return _unexpected(exc, debug)


def _unexpected(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    hint = "" if debug else f"; run again with {DEBUG_FLAG} for the traceback"
    print_error(f"unexpected {type(exc).__name__}: {str(exc)[:300] or 'no message'}{hint}")
    return INTERNAL_ERROR_EXIT
