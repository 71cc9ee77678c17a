"""Human-readable reports of the CLI (the ``--json`` shapes are :mod:`vtr.schema`)."""

from __future__ import annotations

from typing import Any


def index_summary(report: Any) -> list[str]:
    """The lines ``vtr index`` prints: counts (known failures included), then the missing-files hint."""
    known = len(report.known_failures)
    failed = len(report.failed) + known
    why = f" ({known} known from earlier runs: --retry-failed tries them again)" if known else ""
    lines = [f"indexed {report.indexed} videos ({report.segments} segments) in {report.wall_s} s "
             f"({report.videos_per_s} videos/s); unchanged {report.unchanged}, failed {failed}{why}, "
             f"pruned {report.pruned}"]
    if report.missing:
        lines.append(f"{report.missing} indexed file{'s are' if report.missing != 1 else ' is'} missing on disk "
                     "(still searchable): re-run with --prune to remove them from the index")
    return lines


def print_index_report(report: Any, out: Any, err: Any, limit: int = 20) -> None:
    """Summary on ``out``; this run's failures (up to ``limit``) and the missing-files hint on ``err``."""
    lines = index_summary(report)
    out.print(lines[0], soft_wrap=True, highlight=False)
    for f in report.failed[:limit]:
        err.print(f"[yellow]skipped[/yellow] {f['path']}: {f['reason']}", soft_wrap=True, highlight=False)
    for line in lines[1:]:
        err.print(f"[yellow]note:[/yellow] {line}", soft_wrap=True, highlight=False)
