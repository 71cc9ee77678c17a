"""Planning an indexing run: catalog rows and walked files in, per-file decisions out (no database access).

* new: not in the catalog;
* changed: size changed, or mtime changed and the content hash too (also: ``pending`` rows, and ``failed`` ones
  with ``retry_failed``);
* unchanged: same size and mtime, or only the mtime changed (listed in ``touched`` too: the store then updates
  the catalog's mtime). Files that failed and did not change are unchanged (not retried);
* deleted: in the catalog under one of the roots and certainly gone from disk (``lstat`` says "no such file";
  a file that cannot be looked at, e.g. below a folder without permission, is never taken for deleted).

Pruning (removing the deleted files from the index) is guarded here too: :func:`check_prune_roots` refuses a
root that does not exist or cannot be read (an unplugged drive, a typo, an unmounted share), and
:func:`check_prune_share` refuses to remove more than :data:`PRUNE_GUARD_SHARE` of an index without ``yes``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from vtr.errors import PruneRefusedError
from vtr.hashing import sha256_file

__all__ = [
    "PRUNE_GUARD_MIN",
    "PRUNE_GUARD_SHARE",
    "CatalogRow",
    "Plan",
    "PlanItem",
    "check_prune_roots",
    "check_prune_share",
    "is_gone",
    "make_plan",
    "stat_file",
]

PRUNE_GUARD_SHARE = 0.5  # a prune removing more than this share of an index's videos needs --yes ...
PRUNE_GUARD_MIN = 5  # ... when it removes at least this many


@dataclass(frozen=True)
class PlanItem:
    """What the plan decided for one file (``action``: new/changed/unchanged/deleted)."""

    path: str
    action: str
    size: int | None = None
    mtime_ns: int | None = None
    content_hash: str | None = None  # set when the plan had to hash the file (pass it to add_video)
    reason: str = ""
    error: str | None = None  # the catalog's failure reason, for files that failed before


@dataclass
class Plan:
    """Per-file decisions. ``touched``: unchanged files whose mtime changed but not their content.
    ``deleted`` files are removed from the catalog only when the store was asked to prune (``pruned``)."""

    new: list[PlanItem] = field(default_factory=list)
    changed: list[PlanItem] = field(default_factory=list)
    unchanged: list[PlanItem] = field(default_factory=list)
    deleted: list[PlanItem] = field(default_factory=list)
    touched: list[PlanItem] = field(default_factory=list)
    pruned: bool = False

    @property
    def to_index(self) -> list[PlanItem]:
        """The files to (re-)embed: new then changed."""
        return self.new + self.changed

    @property
    def known_failures(self) -> list[PlanItem]:
        """Unchanged files that failed before and are not retried (they still fail)."""
        return [item for item in self.unchanged if item.reason == "failed before"]


class CatalogRow(NamedTuple):
    """What the catalog knows of one video file."""

    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    status: str
    error: str | None = None


def stat_file(path: str | bytes) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of ``path``, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def is_gone(path: str | bytes) -> bool:
    """True only when ``path`` certainly does not exist (not when it merely cannot be looked at)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False  # permission denied, I/O error, ...: unknown, so kept
    return False


def _root_problem(root: str) -> str | None:
    """Why files below ``root`` cannot be trusted to be listed, or None."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return "does not exist (an unplugged drive, an unmounted share or a typo?)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(root) as it:
                next(it, None)
        except OSError as exc:
            return f"cannot be listed ({exc.strerror or exc})"
    elif not os.access(root, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def check_prune_roots(roots: Iterable[str | bytes]) -> None:
    """Refuse (:class:`PruneRefusedError`, exit 2) to prune below a root that is missing or unreadable."""
    for root in roots:
        name = os.fsdecode(root)
        problem = _root_problem(name)
        if problem is not None:
            raise PruneRefusedError(f"refusing to --prune: {name!r} {problem}; nothing was pruned. Check the path "
                                    "(mount the drive), or run without --prune")


def check_prune_share(removing: int, total: int, *, yes: bool = False) -> None:
    """Refuse to prune more than :data:`PRUNE_GUARD_SHARE` of an index's ``total`` videos unless ``yes``."""
    if yes or removing < PRUNE_GUARD_MIN or removing <= PRUNE_GUARD_SHARE * total:
        return
    raise PruneRefusedError(
        f"--prune would remove {removing} of the index's {total} videos ({100 * removing / max(total, 1):.0f}%) "
        "whose files are gone; nothing was pruned. If they really were deleted, re-run with --yes; otherwise "
        "check that the drive or share they are on is mounted"
    )


def make_plan(
    rows: Mapping[bytes, CatalogRow],
    files: Iterable[str],
    roots: Sequence[bytes],
    *,
    retry_failed: bool = False,
    stat: Callable[[str], tuple[int, int] | None] = stat_file,
    hash_file: Callable[[str], str] = sha256_file,
    gone: Callable[[bytes], bool] | None = None,
    decode: Callable[[bytes], str] = os.fsdecode,
) -> Plan:
    """The plan for ``files`` (walked under the absolute ``roots``) against the catalog's ``rows`` (by path bytes).

    Only files whose mtime changed at the same size are hashed (``hash_file``); the rest is stat and comparison.
    """
    plan = Plan()
    walked: set[bytes] = set()
    for path in files:
        raw = os.fsencode(path)
        walked.add(raw)
        st = stat(path)
        if st is None:
            continue  # vanished since the walk
        size, mtime_ns = st
        row = rows.get(raw)
        if row is None:
            plan.new.append(PlanItem(path, "new", size, mtime_ns))
        elif row.status == "pending":
            plan.changed.append(PlanItem(path, "changed", size, mtime_ns, reason="pending"))
        elif row.status == "failed" and retry_failed:
            plan.changed.append(PlanItem(path, "changed", size, mtime_ns, reason="retry failed"))
        elif size == row.size and mtime_ns == row.mtime_ns:
            why = "failed before" if row.status == "failed" else ""
            plan.unchanged.append(PlanItem(path, "unchanged", size, mtime_ns, row.content_hash, why,
                                           row.error if row.status == "failed" else None))
        elif size != row.size:
            plan.changed.append(PlanItem(path, "changed", size, mtime_ns, reason="size"))
        else:
            try:
                digest = hash_file(path)
            except OSError:
                plan.changed.append(PlanItem(path, "changed", size, mtime_ns, reason="unreadable"))
                continue
            if row.content_hash is not None and digest == row.content_hash:
                item = PlanItem(path, "unchanged", size, mtime_ns, digest, "mtime only")
                plan.unchanged.append(item)
                plan.touched.append(item)
            else:
                plan.changed.append(PlanItem(path, "changed", size, mtime_ns, digest, "content"))
    sep = os.fsencode(os.sep)
    prefixes = [r if r.endswith(sep) else r + sep for r in roots]
    for raw, row in rows.items():
        if raw in walked:
            continue
        under = any(raw == r for r in roots) or any(raw.startswith(p) for p in prefixes)
        if under and (gone or is_gone)(raw):
            plan.deleted.append(PlanItem(decode(raw), "deleted", row.size, row.mtime_ns, row.content_hash))
    return plan
