"""Evaluation datasets: the protocol of each benchmark and discovery of its files under a data root.

``vtr eval DATASET --data-root DIR`` calls :func:`discover`, which finds the annotation file and the video
folder, resolves every annotated video to a file on disk and returns an :class:`EvalDataset` with the
texts, the video paths and the ground truth both ways. Discovery only looks at file names; it decodes
nothing.

Search order (the first existing annotation wins; see :func:`annotation_candidates`):

* annotation: ``<root>/anno_downstream/<file>``, then ``<root>/<file>`` for each official file name of
  the split; for MSRVTT then the widely used CSV ``MSRVTT_JSFUSION_test.csv`` (columns ``video_id`` and
  ``sentence``; ``key``/``vid_key`` ignored) in ``<root>``, ``<root>/msrvtt_data``, ``<root>/MSRVTT``,
  ``<root>/MSRVTT/annotation`` or ``<root>/anno_downstream``.
* videos: of the existing folders among ``<root>/<official folder>`` (e.g. ``MSRVTT_Videos``), the
  other known folders of the dataset (e.g. ``MSRVTT/videos/all``), ``<root>/videos``, ``<root>/videos/all``,
  ``<root>`` and the annotation's own folder, the one holding the most annotated videos (earlier wins a
  tie). ``--video-root`` skips the search.

A video is found at ``<video root>/<name in the annotation>``; failing that (DiDeMo's annotation names
files whose real extension differs), by its stem: a file in the same folder with the same name up to the
extension and a video extension (:data:`VIDEO_EXTENSIONS`; on several, the earliest extension of that
list). Such substitutions are reported in :attr:`EvalDataset.extension_fallbacks`.

Missing videos: the evaluation runs on the videos present; annotated videos not found are left out
together with their texts, and are listed (:attr:`EvalDataset.missing_videos`) and counted in the report
(:meth:`EvalDataset.summary`) - never silently dropped. Because the candidate set shrinks, the numbers are
then not comparable to the paper's; ``strict=True`` raises instead. If no annotated video is found at all
discovery always raises.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtr.data.datasets import build_retrieval_pairs, load_annotations, validate_annotations
from vtr.data.formats import VIDEO_EXTENSIONS
from vtr.errors import ConfigError
from vtr.hashing import sha256_file

_SUFFIXES: tuple[str, ...] = tuple(f".{e}" for e in VIDEO_EXTENSIONS)  # in order of preference

ANNOTATION_DIR = "anno_downstream"
MSRVTT_CSV = "MSRVTT_JSFUSION_test.csv"


@dataclass(frozen=True)
class DatasetSpec:
    """Protocol and file layout of one benchmark (official values from ``exp_zs/<ds>/config.py``)."""

    name: str
    annotations: dict[str, tuple[str, ...]]  # split -> official annotation file names
    video_dirs: tuple[str, ...]  # folders under the data root, official placeholder name first
    max_txt_l: int
    paragraph: bool = False
    max_seconds: float | None = None
    num_frames: int = 8
    sampling: str = "middle"
    csv_annotations: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> CSV file names
    csv_dirs: tuple[str, ...] = ()
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "msrvtt",
            {"test": ("msrvtt_ret_test1k.json",)},
            ("MSRVTT_Videos", "MSRVTT/videos/all", "msrvtt_data/MSRVTT_Videos", "MSRVTT/videos"),
            max_txt_l=32,
            csv_annotations={"test": (MSRVTT_CSV,)},
            csv_dirs=("", "msrvtt_data", "MSRVTT", "MSRVTT/annotation", ANNOTATION_DIR),
            description="MSRVTT 1k-A test: 1000 videos, one caption each",
        ),
        DatasetSpec(
            "didemo",
            {"test": ("didemo_ret_test.json",), "val": ("didemo_ret_val.json",)},
            ("DiDeMo", "didemo", "DiDeMo/videos"),
            max_txt_l=64,
            paragraph=True,
            max_seconds=30.0,
            description="DiDeMo paragraph retrieval (captions joined), first 30 s of each video",
        ),
        DatasetSpec(
            "anet",
            # The official zero-shot evaluation uses the val split as its test set.
            {"test": ("anet_ret_val.json",), "val": ("anet_ret_val.json",)},
            ("val", "ActivityNet", "activitynet", "anet", "ActivityNet/videos"),
            max_txt_l=150,
            paragraph=True,
            description="ActivityNet Captions paragraph retrieval (val split)",
        ),
        DatasetSpec(
            "lsmdc",
            {"test": ("lsmdc_ret_test_1000.json",)},
            ("LSMDC", "lsmdc", "LSMDC/videos"),
            max_txt_l=96,
            description="LSMDC test: 1000 clips, one caption each",
        ),
        DatasetSpec(
            "msvd",
            {"test": ("msvd_ret_test.json",)},
            ("MSVD_Videos", "YouTubeClips", "MSVD/YouTubeClips", "MSVD/videos", "msvd"),
            max_txt_l=64,
            description="MSVD test: 670 videos, every caption its own query",
        ),
        DatasetSpec(
            "custom",
            {},
            (),
            max_txt_l=32,
            description="any annotation JSON (or video_id,sentence CSV) with a video folder",
        ),
    )
}

ALIASES: dict[str, str] = {"msr-vtt": "msrvtt", "activitynet": "anet", "anet-captions": "anet"}


def get_spec(dataset: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``dataset`` (case-insensitive; a few aliases); ConfigError if unknown."""
    key = dataset.strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown evaluation dataset {dataset!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


@dataclass
class EvalDataset:
    """A discovered evaluation set: what to encode, the ground truth and how it was found.

    ``texts`` (cleaned with ``pre_text``; paragraphs joined) and ``video_paths`` (files on disk) cover the
    videos that were found; ``txt2vid`` / ``vid2txt`` index them. ``video_names`` are the annotation's
    names of those videos. ``missing_videos`` are annotated videos not found (left out with their texts).
    """

    name: str
    split: str
    annotation: Path
    annotation_sha256: str
    annotation_format: str  # "json" or "csv"
    video_root: Path
    texts: list[str]
    video_paths: list[str]
    video_names: list[str]
    txt2vid: list[int]
    vid2txt: list[list[int]]
    missing_videos: list[str]
    extension_fallbacks: dict[str, str]  # annotation name -> name found on disk (relative to video_root)
    num_annotated_videos: int
    num_annotated_texts: int
    max_txt_l: int
    num_frames: int = 8
    sampling: str = "middle"
    max_seconds: float | None = None
    paragraph: bool = False
    video_roots_tried: list[str] = field(default_factory=list)

    @property
    def num_texts(self) -> int:
        return len(self.texts)

    @property
    def num_videos(self) -> int:
        return len(self.video_paths)

    @property
    def num_missing(self) -> int:
        return len(self.missing_videos)

    @property
    def num_dropped_texts(self) -> int:
        """Texts left out because their video is missing."""
        return self.num_annotated_texts - self.num_texts

    @property
    def complete(self) -> bool:
        return not self.missing_videos

    def summary(self, max_listed: int = 20) -> dict[str, Any]:
        """JSON-friendly description for a report (the first ``max_listed`` missing videos are named)."""
        return {
            "dataset": self.name,
            "split": self.split,
            "annotation": str(self.annotation),
            "annotation_sha256": self.annotation_sha256,
            "annotation_format": self.annotation_format,
            "video_root": str(self.video_root),
            "num_videos": self.num_videos,
            "num_texts": self.num_texts,
            "num_annotated_videos": self.num_annotated_videos,
            "num_annotated_texts": self.num_annotated_texts,
            "num_missing_videos": self.num_missing,
            "num_dropped_texts": self.num_dropped_texts,
            "missing_videos": self.missing_videos[:max_listed],
            "num_extension_fallbacks": len(self.extension_fallbacks),
            "protocol": {
                "max_txt_l": self.max_txt_l,
                "num_frames": self.num_frames,
                "sampling": self.sampling,
                "max_seconds": self.max_seconds,
                "paragraph": self.paragraph,
            },
        }


# ----------------------------------------------------------------------------------------------- files


def _join(root: Path, rel: str) -> Path:
    return root / rel if rel else root


def annotation_candidates(spec: DatasetSpec, data_root: Path, split: str) -> list[Path]:
    """Candidate annotation paths of ``spec``'s ``split`` under ``data_root``, in search order."""
    out: list[Path] = []
    for name in spec.annotations.get(split, ()):
        out += [data_root / ANNOTATION_DIR / name, data_root / name]
    for name in spec.csv_annotations.get(split, ()):
        out += [_join(data_root, d) / name for d in spec.csv_dirs]
    return list(dict.fromkeys(out))


def _fix_hint(flag: str) -> str:
    return f"fix: put the files in one of those places, or pass {flag}"


def load_csv_annotations(path: str | os.PathLike, ext: str = ".mp4") -> list[dict[str, Any]]:
    """Entries ``{"video": <video_id><ext>, "caption": <sentence>}`` from a ``video_id,sentence`` CSV.

    Rows of the same ``video_id`` are merged (in order of first appearance) into a caption list.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            if "video_id" not in fields or "sentence" not in fields:
                raise ConfigError(
                    f"annotation CSV {str(path)!r} needs the columns 'video_id' and 'sentence'; it has {fields}"
                )
            captions: dict[str, list[str]] = {}
            for i, row in enumerate(reader, start=2):
                row = {(k or "").strip(): v for k, v in row.items()}
                vid, sentence = (row.get("video_id") or "").strip(), row.get("sentence")
                if not vid or sentence is None:
                    raise ConfigError(f"annotation CSV {str(path)!r}, line {i}: empty video_id or sentence")
                captions.setdefault(vid, []).append(sentence)
    except FileNotFoundError:
        raise ConfigError(f"annotation file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read annotation CSV {str(path)!r}: {exc}") from None
    entries = []
    for vid, caps in captions.items():
        name = vid if Path(vid).suffix.lower() in _SUFFIXES else vid + ext
        entries.append({"video": name, "caption": caps[0] if len(caps) == 1 else caps})
    return validate_annotations(entries, source=f"annotation CSV {str(path)!r}")


def _load_any(path: Path) -> tuple[list[dict[str, Any]], str]:
    if path.suffix.lower() == ".csv":
        return load_csv_annotations(path), "csv"
    return load_annotations(path), "json"


def _find_annotation(
    spec: DatasetSpec, data_root: Path | None, split: str, annotation: str | os.PathLike | None
) -> Path:
    if annotation is not None:
        ann = Path(annotation).expanduser()
        tried = [ann]
        if not ann.is_absolute() and data_root is not None:
            tried.insert(0, data_root / ann)
        for cand in tried:
            if cand.is_file():
                return cand
        listing = "\n".join(f"  {p}" for p in tried)
        raise ConfigError(f"annotation file not found; tried:\n{listing}\nfix: pass an existing file to --annotation")
    if spec.name == "custom":
        raise ConfigError("the 'custom' dataset needs --annotation FILE (a JSON list of {video, caption}) ")
    if split not in spec.annotations:
        raise ConfigError(f"{spec.name} has no split {split!r}; available: {', '.join(spec.annotations)}")
    if data_root is None:
        raise ConfigError(f"evaluating {spec.name} needs --data-root DIR (or --annotation FILE and --video-root DIR)")
    candidates = annotation_candidates(spec, data_root, split)
    for cand in candidates:
        if cand.is_file():
            return cand
    listing = "\n".join(f"  {p}" for p in candidates)
    if not data_root.is_dir():
        listing += f"\n  (the data root {str(data_root)!r} itself does not exist)"
    raise ConfigError(
        f"no {spec.name} {split} annotation file found; expected one of:\n{listing}\n"
        f"{_fix_hint('--annotation FILE')} (and --video-root DIR for the videos)"
    )


# ---------------------------------------------------------------------------------------------- videos


def _split_ext(name: str) -> tuple[str, str]:
    """``(stem, ext)`` where ``ext`` is a known video extension (lower-cased) or ''."""
    base, ext = os.path.splitext(name)
    return (base, ext.lower()) if ext.lower() in _SUFFIXES else (name, "")


class _VideoLocator:
    """Resolve annotation names under one root, exactly or by stem (directory listings cached)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stems: dict[Path, dict[str, list[str]]] = {}

    def _stem_map(self, folder: Path) -> dict[str, list[str]]:
        if folder not in self._stems:
            stems: dict[str, list[str]] = {}
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        stem, ext = _split_ext(entry.name)
                        if ext and entry.is_file():
                            stems.setdefault(stem, []).append(entry.name)
            except OSError:
                pass
            for names in stems.values():
                names.sort(key=lambda n: (_SUFFIXES.index(_split_ext(n)[1]), n))
            self._stems[folder] = stems
        return self._stems[folder]

    def find(self, rel: str) -> tuple[str | None, bool]:
        """``(path relative to root, via_fallback)``; ``(None, False)`` if not found."""
        if (self.root / rel).is_file():
            return rel, False
        rel_path = Path(rel)
        stem, _ = _split_ext(rel_path.name)
        names = self._stem_map(self.root / rel_path.parent).get(stem)
        if names:
            return str(rel_path.parent / names[0]), True
        return None, False


def _video_root_candidates(spec: DatasetSpec, data_root: Path | None, annotation: Path) -> list[Path]:
    out: list[Path] = []
    if data_root is not None:
        out += [data_root / d for d in spec.video_dirs]
        out += [data_root / "videos", data_root / "videos" / "all", data_root]
    out.append(annotation.parent)
    return list(dict.fromkeys(out))


def _resolve_videos(root: Path, names: list[str]) -> tuple[list[str | None], int, int]:
    """Found relative path (or None) per name, number found, number found exactly."""
    loc = _VideoLocator(root)
    found: list[str | None] = []
    exact = 0
    for name in names:
        rel, fallback = loc.find(name)
        found.append(rel)
        exact += rel is not None and not fallback
    return found, sum(r is not None for r in found), exact


def _media_name(entry: dict[str, Any]) -> str:
    return entry["video"] if "video" in entry else entry["image"]


# ------------------------------------------------------------------------------------------- discovery


def discover(
    dataset: str,
    data_root: str | os.PathLike | None = None,
    split: str = "test",
    annotation: str | os.PathLike | None = None,
    video_root: str | os.PathLike | None = None,
    *,
    strict: bool = False,
    paragraph: bool | None = None,
    max_txt_l: int | None = None,
    max_seconds: float | None = None,
    num_frames: int | None = None,
) -> EvalDataset:
    """Find ``dataset``'s annotation and videos under ``data_root`` (search order: module doc).

    ``annotation`` / ``video_root`` override the search (a relative ``annotation`` is tried under
    ``data_root`` first). ``dataset="custom"`` needs ``annotation``; its videos are looked for in
    ``video_root``, else beside the annotation / under ``data_root``. ``paragraph``, ``max_txt_l``,
    ``max_seconds`` and ``num_frames`` override the dataset's protocol (``None`` keeps it;
    ``max_seconds=0`` disables DiDeMo's 30 s trimming). Missing videos are reported, not evaluated (module doc);
    ``strict=True`` raises :class:`ConfigError` on any. Raises :class:`ConfigError` with the candidate
    paths tried when the annotation or the videos cannot be found.
    """
    spec = get_spec(dataset)
    root = Path(data_root).expanduser() if data_root is not None else None
    ann_path = _find_annotation(spec, root, split, annotation)
    entries, fmt = _load_any(ann_path)
    if not entries:
        raise ConfigError(f"annotation file {str(ann_path)!r} has no entries")
    names = [_media_name(e) for e in entries]

    if video_root is not None:
        vroot = Path(video_root).expanduser()
        if not vroot.is_dir():
            raise ConfigError(
                f"video folder {str(vroot)!r} (--video-root) does not exist or is not a folder; "
                "fix: pass the folder holding the files named in the annotation "
                f"(e.g. {names[0]!r})"
            )
        candidates = [vroot]
    else:
        candidates = _video_root_candidates(spec, root, ann_path)
    tried = [str(p) for p in candidates]
    roots = [p for p in candidates if p.is_dir()]

    best: tuple[int, int, int] | None = None
    best_root, best_found = None, []
    for order, cand in enumerate(roots):
        found, n_found, n_exact = _resolve_videos(cand, names)
        key = (n_found, n_exact, -order)
        if n_found and (best is None or key > best):
            best, best_root, best_found = key, cand, found
    if best_root is None:
        listing = "\n".join(f"  {p}{'' if Path(p).is_dir() else '  (does not exist)'}" for p in tried)
        raise ConfigError(
            f"none of the {len(names)} videos of {str(ann_path)!r} (e.g. {names[0]!r}) was found in:\n{listing}\n"
            "fix: pass --video-root DIR, the folder holding the files named in the annotation"
        )

    missing = [n for n, f in zip(names, best_found, strict=True) if f is None]
    if missing and strict:
        shown = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ConfigError(
            f"{len(missing)} of the {len(names)} videos of {str(ann_path)!r} are missing from "
            f"{str(best_root)!r}: {shown}; fix: complete the download, or evaluate without strict mode "
            "(missing videos are then left out and reported)"
        )
    fallbacks = {n: f for n, f in zip(names, best_found, strict=True) if f is not None and f != n}
    present = [(e, f) for e, f in zip(entries, best_found, strict=True) if f is not None]

    use_paragraph = spec.paragraph if paragraph is None else paragraph
    all_texts, *_ = build_retrieval_pairs(entries, paragraph=use_paragraph)
    texts, _, txt2vid, vid2txt = build_retrieval_pairs([e for e, _ in present], paragraph=use_paragraph)
    return EvalDataset(
        name=spec.name,
        split=split,
        annotation=ann_path,
        annotation_sha256=sha256_file(ann_path),
        annotation_format=fmt,
        video_root=best_root,
        texts=texts,
        video_paths=[str(best_root / f) for _, f in present],
        video_names=[_media_name(e) for e, _ in present],
        txt2vid=txt2vid,
        vid2txt=vid2txt,
        missing_videos=missing,
        extension_fallbacks=fallbacks,
        num_annotated_videos=len(entries),
        num_annotated_texts=len(all_texts),
        max_txt_l=spec.max_txt_l if max_txt_l is None else max_txt_l,
        num_frames=spec.num_frames if num_frames is None else num_frames,
        sampling=spec.sampling,
        max_seconds=spec.max_seconds if max_seconds is None else (max_seconds if max_seconds > 0 else None),
        paragraph=use_paragraph,
        video_roots_tried=tried,
    )
