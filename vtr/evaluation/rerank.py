"""Top-k ITM re-ranking of the official evaluation (``evaluation`` in ``tasks/retrieval_utils.py``).

For each video the top-k texts by ITC score, and for each text its top-k videos, are scored again by a
pair scorer (in the model: the fusion layers and ``itm_head(...)[:, 1]``, the raw positive logit); every
other entry of the two result matrices is -100. Candidates are chosen deterministically: descending ITC
score, ties broken towards the higher index (the tie rule of :mod:`vtr.evaluation.metrics`), so the
candidate set is exactly the first k positions of the ITC ranking the metrics use. The official code
uses ``torch.topk``, whose choice among tied scores at the k-th place is unspecified.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ScorePairsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(text_ids [B], video_ids [B]) -> scores [B]``: the score of each (text, video) pair (LongTensors, CPU)."""

FILL_VALUE = -100.0


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices [N, min(k, M)] of each row's k best scores (descending; ties: higher index first)."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {tuple(scores.shape)}")
    k = min(int(k), scores.shape[1])
    order = torch.argsort(scores.detach().float().cpu(), dim=1, stable=True)
    return order.flip(1)[:, :k].contiguous()


def _row_block(num_rows: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous, balanced block of rows ``[start, end)`` handled by ``rank`` of ``world``."""
    return rank * num_rows // world, (rank + 1) * num_rows // world


def _dist_info(distributed: bool) -> tuple[int, int] | None:
    """``(rank, world)`` if ``distributed`` and torch.distributed is initialised with more than one rank."""
    if not distributed:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return dist.get_rank(), dist.get_world_size()


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())
        on_dev = t.to(dev)
        dist.all_reduce(on_dev, op=dist.ReduceOp.SUM)
        return on_dev.to(t.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _rerank_direction(
    itc: torch.Tensor,
    k: int,
    score_query: Callable[[int, torch.Tensor], torch.Tensor],
    batch_size: int,
    rows: tuple[int, int],
    out: torch.Tensor,
    progress: Callable[[int, int], None] | None,
    chunk_rows: int = 1024,
) -> None:
    start, end = rows
    for c0 in range(start, end, chunk_rows):
        c1 = min(end, c0 + chunk_rows)
        cand = topk_indices(itc[c0:c1], k)
        for i in range(c1 - c0):
            q = c0 + i
            out[q] = FILL_VALUE
            for b in range(0, cand.shape[1], batch_size):
                ids = cand[i, b : b + batch_size]
                scores = score_query(q, ids)
                if tuple(scores.shape) != (len(ids),):
                    raise ValueError(
                        f"score_pairs_fn returned shape {tuple(scores.shape)} for {len(ids)} pairs, "
                        f"expected ({len(ids)},)"
                    )
                out[q, ids.to(out.device)] = scores.detach().to(out.device, out.dtype)
            if progress is not None:
                progress(q - start + 1, end - start)


@torch.no_grad()
def rerank_topk(
    itc_scores: torch.Tensor,
    k: int,
    score_pairs_fn: ScorePairsFn,
    batch_size: int = 32,
    distributed: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official top-k ITM re-ranking of an ITC text->video score matrix ``itc_scores`` [Nt, Nv].

    Returns ``(t2v [Nt, Nv], v2t [Nv, Nt])`` float32 tensors on ``itc_scores``' device: entry (t, v) of
    ``t2v`` is ``score_pairs_fn`` of the pair if v is among the top-k videos of text t by ITC, else -100;
    entry (v, t) of ``v2t`` likewise for the top-k texts of video v (the top k of column v of
    ``itc_scores``). ``k`` (official ``k_test=128``) is clipped to the number of candidates.

    ``score_pairs_fn(text_ids, video_ids)`` gets two CPU LongTensors of equal length ``B <= batch_size``
    (official 32) and returns ``B`` scores. Every call belongs to ONE query: in the video->text pass
    (done first, as in the official code) all ``video_ids`` of a call are the same video and
    ``text_ids`` are consecutive candidates of its top-k list; in the text->video pass all ``text_ids``
    are the same text. The callee can thus run the fusion forward with one video's tokens expanded over
    the batch (or one text over many videos). Each candidate pair of a direction is scored exactly once.

    ``distributed=True`` splits the queries of each direction into contiguous blocks over the ranks of
    an initialised ``torch.distributed`` group; each rank fills its rows (other rows 0) and the results
    are summed with ``all_reduce`` so every rank returns the full matrices (identical to one process).
    Without an initialised group (or with one rank) it runs everything locally.
    ``progress(direction, done, total)`` is called after each query (``direction`` is ``"v2t"`` or ``"t2v"``).
    """
    if itc_scores.ndim != 2:
        raise ValueError(f"itc_scores must be [num_texts, num_videos], got shape {tuple(itc_scores.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    num_texts, num_videos = itc_scores.shape
    device = itc_scores.device
    info = _dist_info(distributed)
    rank, world = info if info is not None else (0, 1)
    fill = 0.0 if info is not None else FILL_VALUE
    v2t = torch.full((num_videos, num_texts), fill, dtype=torch.float32, device=device)
    t2v = torch.full((num_texts, num_videos), fill, dtype=torch.float32, device=device)

    def video_query(v: int, text_ids: torch.Tensor) -> torch.Tensor:
        return score_pairs_fn(text_ids, torch.full_like(text_ids, v))

    def text_query(t: int, video_ids: torch.Tensor) -> torch.Tensor:
        return score_pairs_fn(torch.full_like(video_ids, t), video_ids)

    def report(direction: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(direction, done, total))

    itc_cpu = itc_scores.detach().float().cpu()
    _rerank_direction(itc_cpu.T, k, video_query, batch_size, _row_block(num_videos, rank, world), v2t, report("v2t"))
    _rerank_direction(itc_cpu, k, text_query, batch_size, _row_block(num_texts, rank, world), t2v, report("t2v"))
    if info is not None:
        v2t = _all_reduce_sum(v2t)
        t2v = _all_reduce_sum(t2v)
    return t2v, v2t
