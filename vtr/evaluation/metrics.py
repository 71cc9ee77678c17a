"""Retrieval metrics of the official zero-shot evaluation (``itm_eval``), plus median / mean rank.

Naming: ``t2v_*`` is text->video retrieval (one query per text, ranked over the videos; the official code
calls it ``img_*``) and ``v2t_*`` is video->text retrieval (one query per video, ranked over the texts;
official ``txt_*``). :func:`to_official_names` maps to the official keys.

Rank of a query: the 0-based position of its ground truth (GT) in the list of candidates sorted by
descending score; with several GT items (a video with many captions) the best, i.e. smallest, position.
R@K is the percentage of queries with rank < K. MdR / MnR are the median / mean of the 1-based rank
(rank + 1); the official code does not compute them.

Ties (documented, deterministic): candidates are ordered by descending score and, among equal scores, by
descending index, i.e. the order of ``np.argsort(score, kind="stable")[::-1]``. That is the order the
official ``np.argsort(score)[::-1]`` gives when numpy's default sort happens to be stable; on current
numpy builds the default ``quicksort`` (SIMD) is not stable even for short arrays, so the official
result on tied scores depends on the machine. Equivalently, the rank of a GT item ``g`` in a row ``s``
is ``#{j : s[j] > s[g]} + #{j : s[j] == s[g] and j > g}``, and with several GT items the best one is the
GT with the largest ``(score, index)`` pair. Ties matter for bf16 scores and for the -100 entries of
re-ranked matrices (items outside the top k).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

_OFFICIAL_NAMES: dict[str, str] = {
    "v2t_r1": "txt_r1",
    "v2t_r5": "txt_r5",
    "v2t_r10": "txt_r10",
    "v2t_r_mean": "txt_r_mean",
    "t2v_r1": "img_r1",
    "t2v_r5": "img_r5",
    "t2v_r10": "img_r10",
    "t2v_r_mean": "img_r_mean",
    "r_mean": "r_mean",
}

RECALL_KS: tuple[int, ...] = (1, 5, 10)


def _as_scores(scores: object, name: str) -> np.ndarray:
    if hasattr(scores, "detach"):  # a torch tensor (any dtype, bf16 included) on any device
        scores = scores.detach().to("cpu").double().numpy()
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D score matrix, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN scores")
    return arr


def _ground_truth(gt: Sequence[int] | Sequence[Sequence[int]], num_rows: int, num_cols: int, name: str):
    """Flatten per-row GT (an int or a non-empty list of ints per row) into ``(rows, cols)`` arrays."""
    if len(gt) != num_rows:
        raise ValueError(f"{name} has {len(gt)} entries but the score matrix has {num_rows} rows")
    rows: list[int] = []
    cols: list[int] = []
    for r, item in enumerate(gt):
        items = [item] if isinstance(item, (int, np.integer)) else list(item)
        if not items:
            raise ValueError(f"{name}[{r}] has no ground-truth item")
        for c in items:
            c = int(c)
            if not 0 <= c < num_cols:
                raise ValueError(f"{name}[{r}] = {c} is out of range for {num_cols} candidates")
            rows.append(r)
            cols.append(c)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def retrieval_ranks(
    scores: object,
    ground_truth: Sequence[int] | Sequence[Sequence[int]],
    chunk_elems: int = 1 << 23,
) -> np.ndarray:
    """0-based rank of each query (row of ``scores`` [Nq, Nc]) under the tie rule of the module doc.

    ``ground_truth[q]`` is the GT candidate of query ``q`` (an int) or a non-empty list of them; the
    best (smallest) rank is returned. ``O(Nq * Nc)`` time, processed in row chunks of about
    ``chunk_elems`` scores.
    """
    s = _as_scores(scores, "scores")
    nq, nc = s.shape
    rows, cols = _ground_truth(ground_truth, nq, nc, "ground_truth")
    gt_scores = s[rows, cols]
    # Best GT per row = largest (score, index): sort by row, then score, then index; take each row's last.
    order = np.lexsort((cols, gt_scores, rows))
    last = np.r_[rows[order][1:] != rows[order][:-1], True]
    best_col = np.empty(nq, dtype=np.int64)
    best_col[rows[order][last]] = cols[order][last]
    best_score = s[np.arange(nq), best_col]

    ranks = np.empty(nq, dtype=np.int64)
    idx = np.arange(nc)
    step = max(1, chunk_elems // max(nc, 1))
    for start in range(0, nq, step):
        sl = slice(start, min(nq, start + step))
        block, b_score, b_col = s[sl], best_score[sl, None], best_col[sl, None]
        higher = (block > b_score).sum(axis=1)
        tied_after = ((block == b_score) & (idx[None, :] > b_col)).sum(axis=1)
        ranks[sl] = higher + tied_after
    return ranks


def _recalls(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}_r{k}": 100.0 * float(np.count_nonzero(ranks < k)) / len(ranks) for k in RECALL_KS}
    out[f"{prefix}_r_mean"] = sum(out[f"{prefix}_r{k}"] for k in RECALL_KS) / len(RECALL_KS)
    return out


def retrieval_metrics(
    score_t2v: object,
    txt2vid: Sequence[int],
    vid2txt: Sequence[Sequence[int]],
    score_v2t: object | None = None,
    decimals: int | None = 2,
) -> dict[str, float]:
    """Text->video and video->text retrieval metrics, as the official ``itm_eval`` computes them.

    ``score_t2v`` [Nt, Nv] scores each text against each video; ``score_v2t`` [Nv, Nt] scores each video
    against each text and defaults to ``score_t2v.T`` (pass it for ITM re-ranked scores, whose two
    directions differ). ``txt2vid[t]`` is the video of text ``t``; ``vid2txt[v]`` the texts of video ``v``.
    Accepts numpy arrays or torch tensors; computed in float64.

    Returns ``t2v_r1, t2v_r5, t2v_r10, t2v_r_mean, v2t_r1, v2t_r5, v2t_r10, v2t_r_mean, r_mean`` (percent;
    ``*_r_mean`` is the mean of the three recalls, ``r_mean`` the mean of both directions) and the
    1-based median / mean ranks ``t2v_mdr, t2v_mnr, v2t_mdr, v2t_mnr``. Like the official code, all
    values are rounded to ``decimals`` (2) after the means are taken; ``decimals=None`` keeps them exact.
    Ties: see the module doc.
    """
    t2v = _as_scores(score_t2v, "score_t2v")
    v2t = t2v.T if score_v2t is None else _as_scores(score_v2t, "score_v2t")
    if v2t.shape != t2v.shape[::-1]:
        raise ValueError(f"score_v2t has shape {v2t.shape}, expected {t2v.shape[::-1]} (the transpose of score_t2v)")
    if t2v.shape[0] == 0 or t2v.shape[1] == 0:
        raise ValueError(f"cannot evaluate an empty score matrix of shape {t2v.shape}")
    t2v_ranks = retrieval_ranks(t2v, txt2vid)
    v2t_ranks = retrieval_ranks(v2t, vid2txt)

    out: dict[str, float] = {}
    out.update(_recalls(t2v_ranks, "t2v"))
    out.update(_recalls(v2t_ranks, "v2t"))
    out["r_mean"] = (out["t2v_r_mean"] + out["v2t_r_mean"]) / 2
    for prefix, ranks in (("t2v", t2v_ranks), ("v2t", v2t_ranks)):
        out[f"{prefix}_mdr"] = float(np.median(ranks + 1))
        out[f"{prefix}_mnr"] = float(np.mean(ranks + 1))
    if decimals is not None:
        out = {k: round(v, decimals) for k, v in out.items()}
    return out


class DecodedSubset(NamedTuple):
    """The retrieval problem restricted to the videos that decoded (see :func:`decoded_subset`)."""

    texts: list[int]  # dataset text index of each kept text row
    txt2vid: list[int]  # kept text row -> kept video row
    vid2txt: list[list[int]]  # kept video row -> kept text rows


def decoded_subset(txt2vid: Sequence[int], vid2txt: Sequence[Sequence[int]],
                   decoded: Sequence[int]) -> DecodedSubset:
    """Remap a dataset's ground truth to the videos that decoded (``decoded``: dataset video indices, in row order).

    Videos that failed to decode leave the candidate set together with their texts (``vtr eval`` reports them,
    training validation counts them as ``val_failed_videos``); the kept texts stay in dataset order.
    """
    row = {v: i for i, v in enumerate(decoded)}
    texts = [t for t, v in enumerate(txt2vid) if v in row]
    text_row = {t: i for i, t in enumerate(texts)}
    return DecodedSubset(texts, [row[txt2vid[t]] for t in texts],
                         [[text_row[t] for t in vid2txt[v] if t in text_row] for v in decoded])


def _top1(score: float, others: np.ndarray) -> float:
    """1 if ``score`` beats every one of ``others``, ``1/(m+1)`` if it ties ``m`` of them at the top, else 0."""
    if len(others) == 0 or score > others.max():
        return 1.0
    if score < others.max():
        return 0.0
    return 1.0 / (1 + int((others == score).sum()))


def temporal_metrics(score_t2v: object, txt2vid: Sequence[int], groups: Sequence[str | None]) -> dict[str, float]:
    """R@1 of each text whose video is in a temporal group (vtr-shapes), ranked among that group's videos only.

    Returns ``temporal_r1`` (percent), ``temporal_chance`` (mean 1/group size, percent), ``temporal_queries`` and
    ``temporal_full_r1`` (the same texts ranked over the whole gallery); ``{}`` when no text has a group. A tie at
    the top between the right clip and ``m`` others counts ``1 / (m + 1)`` (the expected hit of a random
    tie-break), so a model that cannot tell a clip from its reversed partner (the frame-mean baseline, which sees
    the same bag of frames) scores chance.
    """
    scores = _as_scores(score_t2v, "score_t2v")
    members: dict[str, list[int]] = {}
    for v, g in enumerate(groups):
        if g is not None:
            members.setdefault(g, []).append(v)
    hits, chance, full = [], [], []
    for t, v in enumerate(txt2vid):
        g = groups[v]
        if g is None or len(members[g]) < 2:
            continue
        row = scores[t]
        others = row[[u for u in members[g] if u != v]]
        hits.append(_top1(row[v], others))
        chance.append(1.0 / len(members[g]))
        full.append(_top1(row[v], np.delete(row, v)))
    if not hits:
        return {}
    return {"temporal_r1": 100.0 * float(np.mean(hits)), "temporal_chance": 100.0 * float(np.mean(chance)),
            "temporal_queries": float(len(hits)), "temporal_full_r1": 100.0 * float(np.mean(full))}


def retrieval_eval(score_t2v: object, txt2vid: Sequence[int], vid2txt: Sequence[Sequence[int]],
                   groups: Sequence[str | None] | None = None) -> dict[str, float]:
    """Training validation's metrics of a dual-encoder score matrix [Nt, Nv]: :func:`retrieval_metrics` unrounded
    (the tie rule of ``vtr eval``, so ``vtr eval`` of the exported model reports the same numbers), plus
    :func:`temporal_metrics` when ``groups`` (per video) are given and ``t2v_chance_r1``."""
    scores = _as_scores(score_t2v, "score_t2v")
    out = {k: float(v) for k, v in retrieval_metrics(scores, txt2vid, vid2txt, decimals=None).items()}
    if groups is not None:
        out.update(temporal_metrics(scores, txt2vid, groups))
    out["t2v_chance_r1"] = 100.0 / scores.shape[1]
    return out


def to_official_names(metrics: Mapping[str, float], keep_extra: bool = False) -> dict[str, float]:
    """Rename ``t2v_*`` / ``v2t_*`` keys to the official ``img_*`` / ``txt_*`` ones (in the official order).

    The official result has no median / mean rank; they are dropped unless ``keep_extra`` (then kept
    under their own names, after the official keys).
    """
    out = {official: metrics[ours] for ours, official in _OFFICIAL_NAMES.items() if ours in metrics}
    if keep_extra:
        out.update({k: v for k, v in metrics.items() if k not in _OFFICIAL_NAMES})
    return out


def dual_softmax(scores: object, temp: float = 0.01, axis: int = 0) -> np.ndarray:
    """Dual-softmax re-weighting ``scores * softmax(scores / temp, axis)`` (float64). NOT part of the protocol.

    The official evaluation uses no dual softmax; a report that uses it must label it. For a text->video
    matrix [Nt, Nv], ``axis=0`` (the default) weights each (text, video) score by how strongly that video
    prefers the text among all texts (the usual "inverted softmax" prior); for video->text apply it to the
    [Nv, Nt] matrix the same way. ``temp`` must be positive.
    """
    if not temp > 0:
        raise ValueError(f"temp must be positive, got {temp}")
    s = _as_scores(scores, "scores")
    z = s / temp
    z = z - z.max(axis=axis, keepdims=True)
    w = np.exp(z)
    w /= w.sum(axis=axis, keepdims=True)
    return s * w
