"""Planning an indexing run: catalog rows and walked files in, per-file decisions out (no database access).

* new: not in the catalog;
* changed: size changed, or mtime changed and the content hash too (also: ``pending`` rows, and ``failed`` ones
  with ``retry_failed``);
* unchanged: same size and mtime, or only the mtime changed (listed in ``touched`` too: the store then updates
  the catalog's mtime). Files that failed and did not change are unchanged (not retried);
* deleted: in the catalog under one of the roots but gone from disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from vtr.hashing import sha256_file

__all__ = ["CatalogRow", "Plan", "PlanItem", "make_plan", "stat_file"]


@dataclass(frozen=True)
class PlanItem:
    """What the plan decided for one file (``action``: new/changed/unchanged/deleted)."""

    path: str
    action: str
    size: int | None = None
    mtime_ns: int | None = None
    content_hash: str | None = None  # set when the plan had to hash the file (pass it to add_video)
    reason: str = ""


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


class CatalogRow(NamedTuple):
    """What the catalog knows of one video file."""

    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    status: str


def stat_file(path: str | bytes) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of ``path``, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def make_plan(
    rows: Mapping[bytes, CatalogRow],
    files: Iterable[str],
    roots: Sequence[bytes],
    *,
    retry_failed: bool = False,
    stat: Callable[[str], tuple[int, int] | None] = stat_file,
    hash_file: Callable[[str], str] = sha256_file,
    exists: Callable[[bytes], bool] = os.path.lexists,
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
            plan.unchanged.append(PlanItem(path, "unchanged", size, mtime_ns, row.content_hash, why))
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
        if under and not exists(raw):
            plan.deleted.append(PlanItem(decode(raw), "deleted", row.size, row.mtime_ns, row.content_hash))
    return plan
