"""The one ``--json`` schema of vtr's index and search commands (version :data:`SCHEMA_VERSION`).

Every document is one JSON object on stdout with ``schema_version`` (an integer, raised on any incompatible
change) and ``command``. The shapes (:data:`JSON_SCHEMA` is the machine-readable JSON Schema):

* ``search``: ``{"index", "queries": [{"query", "query_kind": "text"|"video", "results": [hit, ...]}]}`` for one
  query, several (``--from-file``), ``--rerank`` and ``--video`` alike. A hit is ``{"rank", "score",
  "score_kind", "path", "start_s", "end_s", "dual_score"}``: ``score_kind`` is ``cosine`` (dual encoder, the
  official similarity) or ``itm_logit`` (``--rerank``: the ITM head's match logit; ``dual_score`` then holds the
  cosine the hit was found with, else null).
* ``index``: counts (``indexed``, ``segments``, ``unchanged``, ``touched``, ``pruned``, ``missing``,
  ``failed``, ``failed_before``), ``failures`` and timing.
* ``index status``: the index's model, counts, sizes, ``catalog_schema_version``, ``failed`` and ``failures``.
* ``index list``: ``{"indexes": [...]}``; ``index remove``: ``{"removed": NAME}``.
* ``index ondisk``: the build (:class:`vtr.index.ondisk.OnDiskInfo`): ``index``, ``factory``, ``ntotal``,
  ``nlist``, ``disk_bytes``, ``ram_bytes`` (what a searcher holds), ``build_s``, ``generation``.
* ``index repair``: ``catalog`` (the SQLite file, or the ``--db`` URL without its password), ``healthy``,
  ``restored_from``, ``copy_saved_at``, ``damaged_moved_to``, ``rebuilt`` (SQLite only: null / false with a
  database catalog, which has no safety copy) and ``indexes``: per index ``name``, ``model``, ``faiss`` (``kept``,
  ``rebuilt: <why>``, ``none: ...``), ``indexed``, ``unchanged``, ``failed``, ``missing``, ``error`` and ``ondisk``
  (the on-disk IVF build: empty when there is none, ``kept...``, ``rebuilt: <why>`` or ``removed: <why>``).

A failure is ``{"path", "reason", "message"}`` everywhere (``reason``: a short tag such as ``corrupt`` or
``no_video_stream``; ``message``: the full text when known in this run, else null).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["JSON_SCHEMA", "SCHEMA_VERSION", "SCORE_KINDS", "document", "failure", "index_document",
           "repair_document", "search_document", "status_document"]

SCHEMA_VERSION = 1
SCORE_KINDS = ("cosine", "itm_logit")


def document(command: str, **body: Any) -> dict[str, Any]:
    """A ``--json`` document: the version and the command first, then ``body``."""
    return {"schema_version": SCHEMA_VERSION, "command": command, **body}


def failure(path: str, reason: str, message: str | None = None) -> dict[str, Any]:
    """One file that could not be indexed, in the shape every command uses."""
    return {"path": str(path), "reason": str(reason or ""), "message": message}


def hit_dict(hit: Any) -> dict[str, Any]:
    """A search hit (:class:`vtr.library.SearchHit`) as the schema's ``hit``."""
    return {"rank": int(hit.rank), "score": float(hit.score), "score_kind": hit.score_kind, "path": hit.path,
            "start_s": float(hit.start_s), "end_s": float(hit.end_s),
            "dual_score": None if hit.dual_score is None else float(hit.dual_score),
            "windows": int(getattr(hit, "windows", 1)), "vector_id": getattr(hit, "vector_id", None),
            "model": getattr(hit, "model", None), "generation": getattr(hit, "generation", None)}


def search_document(queries: Sequence[str], results: Sequence[Sequence[Any]], *, index: str,
                    query_kind: str = "text") -> dict[str, Any]:
    """``vtr search --json``: every query with its results, whatever the number of queries."""
    rows = [{"query": q, "query_kind": query_kind, "results": [hit_dict(h) for h in hits]}
            for q, hits in zip(queries, results, strict=True)]
    return document("search", index=index, queries=rows)


def index_document(report: Any) -> dict[str, Any]:
    """``vtr index --json`` from a :class:`vtr.library.IndexReport`."""
    new = [failure(f["path"], f["reason"], f.get("message")) for f in report.failed]
    known = [failure(f["path"], f["reason"], f.get("message")) for f in report.known_failures]
    return document(
        "index", indexed=report.indexed, segments=report.segments, unchanged=report.unchanged,
        touched=report.touched, pruned=report.pruned, missing=report.missing, failed=len(new) + len(known),
        failed_before=len(known), failures=new + known, wall_s=report.wall_s, videos_per_s=report.videos_per_s,
        segmentation=report.segmentation,
    )


def status_document(status: dict[str, Any]) -> dict[str, Any]:
    """``vtr index status --json`` from :meth:`vtr.library.Library.status` (failures reshaped)."""
    body = dict(status)
    if "schema_version" in body:  # the catalog's own schema version, not this document's
        body["catalog_schema_version"] = body.pop("schema_version")
    failures: Iterable[Any] = body.pop("failures", [])
    rows = [failure(*f) if isinstance(f, (tuple, list)) else failure(f["path"], f["reason"], f.get("message"))
            for f in failures]
    return document("index status", **body, failed=len(rows), failures=rows)


def repair_document(report: Any) -> dict[str, Any]:
    """``vtr index repair --json`` from a :class:`vtr.index.repair.RepairReport` (SQLite or a database catalog)."""
    return document("index repair", **report.to_dict())


_FAILURE = {
    "type": "object",
    "required": ["path", "reason", "message"],
    "additionalProperties": False,
    "properties": {"path": {"type": "string"}, "reason": {"type": "string"},
                   "message": {"type": ["string", "null"]}},
}
_HIT = {
    "type": "object",
    "required": ["rank", "score", "score_kind", "path", "start_s", "end_s", "dual_score", "windows"],
    "additionalProperties": False,
    "properties": {
        "rank": {"type": "integer", "minimum": 1},
        "score": {"type": "number"},
        "score_kind": {"enum": list(SCORE_KINDS)},
        "path": {"type": "string"},
        "start_s": {"type": "number"},
        "end_s": {"type": "number"},
        "dual_score": {"type": ["number", "null"]},
        "windows": {"type": "integer", "minimum": 1},  # indexed windows this hit stands for (collapsed)
        "vector_id": {"type": ["integer", "null"]},  # the segment's vector in the index
        "model": {"type": ["string", "null"]},  # the model the index was built with
        "generation": {"type": ["integer", "null"]},  # the index generation the search saw
    },
}
_COUNT = {"type": "integer", "minimum": 0}
# The index's segmentation policy (vtr.segmentation.SegmentPolicy.to_dict), null when none is recorded.
_SEGMENTATION = {"type": ["object", "null"], "required": ["description"]}
_HEAD = {"schema_version": {"const": SCHEMA_VERSION}}


def _command(name: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "if": {"properties": {"command": {"const": name}}, "required": ["command"]},
        "then": {"required": ["schema_version", "command", *required],
                 "properties": {**_HEAD, **properties}},
    }


JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://github.com/vtr/vtr/schema/v{SCHEMA_VERSION}.json",
    "title": "vtr --json output",
    "type": "object",
    "required": ["schema_version", "command"],
    "properties": {"schema_version": {"const": SCHEMA_VERSION},
                   "command": {"enum": ["search", "index", "index status", "index list", "index remove",
                                        "index repair", "index ondisk"]}},
    "allOf": [
        _command("search", ["index", "queries"], {
            "index": {"type": "string"},
            "queries": {"type": "array", "items": {
                "type": "object", "required": ["query", "query_kind", "results"], "additionalProperties": False,
                "properties": {"query": {"type": "string", "minLength": 1},
                               "query_kind": {"enum": ["text", "video"]},
                               "results": {"type": "array", "items": _HIT}}}},
        }),
        _command("index", ["indexed", "segments", "unchanged", "touched", "pruned", "missing", "failed",
                           "failed_before", "failures", "wall_s", "videos_per_s"], {
            **{k: _COUNT for k in ("indexed", "segments", "unchanged", "touched", "pruned", "missing", "failed",
                                   "failed_before")},
            "failures": {"type": "array", "items": _FAILURE},
            "wall_s": {"type": "number"}, "videos_per_s": {"type": "number"},
            "segmentation": _SEGMENTATION,
        }),
        _command("index status", ["name", "model_name", "videos", "segments", "vectors", "failed", "failures"], {
            "name": {"type": "string"}, "model_name": {"type": "string"},
            "videos": {"type": "object", "required": ["indexed", "failed", "pending"],
                       "additionalProperties": _COUNT},
            "segments": _COUNT, "vectors": _COUNT, "failed": _COUNT,
            "failures": {"type": "array", "items": _FAILURE},
            "segmentation": _SEGMENTATION,
        }),
        _command("index list", ["indexes"], {"indexes": {"type": "array", "items": {
            "type": "object", "required": ["name", "model_name", "vector_count", "videos"]}}}),
        _command("index remove", ["removed"], {"removed": {"type": "string"}}),
        _command("index ondisk", ["index", "factory", "ntotal", "nlist", "disk_bytes", "ram_bytes"], {
            "index": {"type": "string"}, "factory": {"type": "string"},
            **{k: _COUNT for k in ("ntotal", "nlist", "disk_bytes", "ram_bytes")},
        }),
        _command("index repair", ["catalog", "healthy", "restored_from", "rebuilt", "indexes"], {
            "catalog": {"type": "string"}, "healthy": {"type": "boolean"},
            "restored_from": {"type": ["string", "null"]}, "copy_saved_at": {"type": ["string", "null"]},
            "damaged_moved_to": {"type": ["string", "null"]}, "rebuilt": {"type": "boolean"},
            "indexes": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "model", "faiss", "indexed", "unchanged", "failed", "missing", "error"],
                "properties": {"name": {"type": "string"}, "model": {"type": ["string", "null"]},
                               "faiss": {"type": "string"}, "error": {"type": "string"},
                               "ondisk": {"type": "string"},
                               **{k: _COUNT for k in ("indexed", "unchanged", "failed", "missing")}}}},
        }),
    ],
}
