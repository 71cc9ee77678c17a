"""Retrieval metrics (official ``itm_eval`` semantics, tie rule) and top-k ITM re-ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtr.evaluation.metrics import (
    decoded_subset,
    dual_softmax,
    retrieval_eval,
    retrieval_metrics,
    retrieval_ranks,
    temporal_metrics,
    to_official_names,
)
from vtr.evaluation.rerank import FILL_VALUE, rerank_topk, topk_indices

# ------------------------------------------------------------------------------------------ references


def naive_rank(row: np.ndarray, gts: list[int]) -> int:
    """Best position of any GT in ``np.argsort(row, kind="stable")[::-1]`` (the documented tie rule)."""
    order = list(np.argsort(row, kind="stable")[::-1])
    return min(order.index(g) for g in gts)


def counting_rank(row: np.ndarray, gts: list[int]) -> int:
    """O(n) per GT: items scoring strictly higher, plus equal-scoring items with a higher index."""
    best = None
    for g in gts:
        r = sum(1 for j in range(len(row)) if row[j] > row[g] or (row[j] == row[g] and j > g))
        best = r if best is None else min(best, r)
    return best


def official_itm_eval(scores_i2t, scores_t2i, txt2img, img2txt) -> dict[str, float]:
    """The official ``itm_eval`` loop, with the stable argsort that fixes its tie order."""

    def ranks_of(scores, gt):
        out = np.zeros(scores.shape[0])
        for index, score in enumerate(scores):
            inds = np.argsort(score, kind="stable")[::-1]
            ids = gt[index] if isinstance(gt[index], list) else [gt[index]]
            out[index] = min(np.where(inds == i)[0][0] for i in ids)
        return out

    ranks = ranks_of(scores_i2t, img2txt)
    tr = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    ranks = ranks_of(scores_t2i, txt2img)
    ir = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    tr_mean, ir_mean = sum(tr) / 3, sum(ir) / 3
    res = {
        "txt_r1": tr[0],
        "txt_r5": tr[1],
        "txt_r10": tr[2],
        "txt_r_mean": tr_mean,
        "img_r1": ir[0],
        "img_r5": ir[1],
        "img_r10": ir[2],
        "img_r_mean": ir_mean,
        "r_mean": (tr_mean + ir_mean) / 2,
    }
    return {k: round(v, 2) for k, v in res.items()}


def random_multi_gt(rng: np.random.Generator, num_videos: int, max_caps: int) -> tuple[list[int], list[list[int]]]:
    txt2vid: list[int] = []
    vid2txt: list[list[int]] = []
    for v in range(num_videos):
        n = int(rng.integers(1, max_caps + 1))
        vid2txt.append(list(range(len(txt2vid), len(txt2vid) + n)))
        txt2vid += [v] * n
    return txt2vid, vid2txt


# --------------------------------------------------------------------------------------- hand-computed


def test_ranks_hand_computed_distinct_scores():
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.4]])
    # row 0: order 0,2,1 -> gt 0 at 0; row 1: order 2,1,0 -> gt 1 at 1; row 2: order 0,1,2 -> gt 2 at 2
    assert retrieval_ranks(s, [0, 1, 2]).tolist() == [0, 1, 2]
    m = retrieval_metrics(s, [0, 1, 2], [[0], [1], [2]])
    assert m["t2v_r1"] == 33.33 and m["t2v_r5"] == 100.0 and m["t2v_r10"] == 100.0
    assert m["t2v_mdr"] == 2.0 and m["t2v_mnr"] == 2.0
    # v2t uses the transpose: column 0 = [0.9, 0.2, 0.7] -> text 0 first; column 1 = [0.1, 0.3, 0.6] -> text 1
    # at 1; column 2 = [0.5, 0.8, 0.4] -> text 2 last
    assert retrieval_ranks(s.T, [[0], [1], [2]]).tolist() == [0, 1, 2]
    assert m["v2t_r1"] == 33.33 and m["v2t_mnr"] == 2.0
    assert m["r_mean"] == round((m["t2v_r_mean"] + m["v2t_r_mean"]) / 2, 2)


def test_ties_put_the_higher_index_first():
    row = np.array([[1.0, 1.0, 0.0, 1.0]])
    # descending with ties broken towards the higher index: 3, 1, 0, 2
    assert retrieval_ranks(row, [0]).tolist() == [2]
    assert retrieval_ranks(row, [1]).tolist() == [1]
    assert retrieval_ranks(row, [3]).tolist() == [0]
    assert retrieval_ranks(row, [2]).tolist() == [3]
    # the -100 fill of re-ranked matrices: all tied, so the GT's rank is the number of higher indices
    fill = np.full((1, 6), -100.0)
    fill[0, 1] = 5.0
    assert retrieval_ranks(fill, [4]).tolist() == [2]  # order 1, 5, 4, ...
    assert retrieval_ranks(fill, [0]).tolist() == [5]


def test_multiple_ground_truths_take_the_best_rank():
    # one video, five texts; GT texts 0 and 3
    s = np.array([[0.1, 0.9, 0.8, 0.7, 0.2]])
    assert retrieval_ranks(s, [[0, 3]]).tolist() == [2]
    assert retrieval_ranks(s, [[3, 0]]).tolist() == [2]  # order of the GT list is irrelevant
    assert retrieval_ranks(s, [[4, 1]]).tolist() == [0]
    # tied GTs: the later index is ranked first
    s = np.array([[0.5, 0.9, 0.5, 0.5]])
    assert retrieval_ranks(s, [[0, 2]]).tolist() == [2]  # order 1, 3, 2, 0


def test_both_directions_with_multi_caption_videos():
    # 2 videos, 3 texts: texts 0,1 -> video 0; text 2 -> video 1
    t2v = np.array([[0.9, 0.1], [0.2, 0.3], [0.4, 0.8]])
    txt2vid, vid2txt = [0, 0, 1], [[0, 1], [2]]
    m = retrieval_metrics(t2v, txt2vid, vid2txt, decimals=None)
    # t2v ranks: text0 -> 0, text1 -> 1 (0.3 > 0.2), text2 -> 0
    assert m["t2v_r1"] == pytest.approx(200 / 3)
    assert m["t2v_r5"] == 100.0
    assert m["t2v_mdr"] == 1.0 and m["t2v_mnr"] == pytest.approx(4 / 3)
    # v2t: video 0 column [0.9, 0.2, 0.4] -> best GT text 0 at 0; video 1 column [0.1, 0.3, 0.8] -> text 2 at 0
    assert m["v2t_r1"] == 100.0 and m["v2t_mdr"] == 1.0
    # an explicit, different v2t matrix (re-ranked scores are not transposes of each other)
    v2t = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    m2 = retrieval_metrics(t2v, txt2vid, vid2txt, score_v2t=v2t, decimals=None)
    # video 0: order 2, 1, 0 (ties: higher index first) -> best GT text 1 at 1; video 1: order 0, 2, 1 -> 1
    assert m2["v2t_r1"] == 0.0 and m2["v2t_r5"] == 100.0
    assert m2["v2t_mnr"] == 2.0 and m2["v2t_mdr"] == 2.0
    assert {k: v for k, v in m2.items() if k.startswith("t2v")} == {k: v for k, v in m.items() if k.startswith("t2v")}


def test_median_rank_with_an_even_count_averages():
    s = np.array([[1.0, 0.0], [1.0, 0.0]])  # text 0 -> rank 0; text 1 (GT video 1) -> rank 1
    m = retrieval_metrics(s, [0, 1], [[0], [1]])
    assert m["t2v_mdr"] == 1.5 and m["t2v_mnr"] == 1.5


# ------------------------------------------------------------------------------------- random vs naive


@pytest.mark.parametrize("seed", range(4))
def test_ranks_match_direct_implementations_on_random_matrices(seed):
    rng = np.random.default_rng(seed)
    txt2vid, vid2txt = random_multi_gt(rng, num_videos=int(rng.integers(3, 15)), max_caps=4)
    nt, nv = len(txt2vid), len(vid2txt)
    # few distinct values -> many ties; plus a continuous matrix
    for t2v in (rng.integers(0, 4, (nt, nv)).astype(np.float64), rng.standard_normal((nt, nv))):
        got_t2v = retrieval_ranks(t2v, txt2vid, chunk_elems=7)  # tiny chunks exercise the chunking
        got_v2t = retrieval_ranks(t2v.T, vid2txt)
        assert got_t2v.tolist() == [naive_rank(t2v[t], [txt2vid[t]]) for t in range(nt)]
        assert got_t2v.tolist() == [counting_rank(t2v[t], [txt2vid[t]]) for t in range(nt)]
        assert got_v2t.tolist() == [naive_rank(t2v.T[v], vid2txt[v]) for v in range(nv)]
        assert got_v2t.tolist() == [counting_rank(t2v.T[v], vid2txt[v]) for v in range(nv)]
        ours = to_official_names(retrieval_metrics(t2v, txt2vid, vid2txt))
        assert ours == official_itm_eval(t2v.T, t2v, txt2vid, vid2txt)


def test_torch_inputs_and_bf16_are_accepted():
    rng = np.random.default_rng(5)
    s = rng.standard_normal((6, 6))
    ref = retrieval_metrics(s, list(range(6)), [[i] for i in range(6)])
    assert retrieval_metrics(torch.from_numpy(s), list(range(6)), [[i] for i in range(6)]) == ref
    bf = torch.from_numpy(s).bfloat16()
    expected = retrieval_metrics(bf.double().numpy(), list(range(6)), [[i] for i in range(6)])
    assert retrieval_metrics(bf, list(range(6)), [[i] for i in range(6)]) == expected


def test_official_names_and_invalid_inputs():
    m = retrieval_metrics(np.eye(3), [0, 1, 2], [[0], [1], [2]])
    off = to_official_names(m)
    assert list(off) == [
        "txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean",
    ]  # fmt: skip
    assert off["txt_r1"] == m["v2t_r1"] and off["img_r1"] == m["t2v_r1"]
    assert "t2v_mdr" in to_official_names(m, keep_extra=True)
    with pytest.raises(ValueError, match="rows"):
        retrieval_metrics(np.eye(3), [0, 1], [[0], [1], [2]])
    with pytest.raises(ValueError, match="out of range"):
        retrieval_metrics(np.eye(3), [0, 1, 3], [[0], [1], [2]])
    with pytest.raises(ValueError, match="no ground-truth"):
        retrieval_metrics(np.eye(3), [0, 1, 2], [[0], [1], []])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((2, 2), np.nan), [0, 1], [[0], [1]])
    with pytest.raises(ValueError, match="transpose"):
        retrieval_metrics(np.eye(3), [0, 1, 2], [[0], [1], [2]], score_v2t=np.eye(2))


def test_dual_softmax():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((5, 4))
    out = dual_softmax(s, temp=0.5)
    w = np.exp(s / 0.5) / np.exp(s / 0.5).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(out, s * w)
    np.testing.assert_allclose(dual_softmax(s, temp=0.5, axis=1), s * (np.exp(2 * s) / np.exp(2 * s).sum(1)[:, None]))
    assert np.isfinite(dual_softmax(s * 1e4, temp=0.01)).all()  # stable for large logits
    with pytest.raises(ValueError):
        dual_softmax(s, temp=0.0)


# ---------------------------------------------------------------------------------------------- rerank


class PairScorer:
    """``score_pairs_fn`` reading a fixed "ITM" matrix and recording every call."""

    def __init__(self, itm: torch.Tensor) -> None:
        self.itm = itm
        self.calls: list[tuple[list[int], list[int]]] = []

    def __call__(self, text_ids: torch.Tensor, video_ids: torch.Tensor) -> torch.Tensor:
        assert text_ids.dtype == torch.long and video_ids.dtype == torch.long and text_ids.shape == video_ids.shape
        self.calls.append((text_ids.tolist(), video_ids.tolist()))
        return self.itm[text_ids, video_ids]


def test_topk_indices_tie_rule_matches_metrics():
    s = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]])
    assert topk_indices(s, 2).tolist() == [[4, 2]]
    assert topk_indices(s, 99).tolist() == [[4, 2, 1, 0, 3]]  # clipped to the row length


@pytest.mark.parametrize("k,batch_size", [(3, 2), (1, 32), (50, 4)])
def test_rerank_topk_scores_exactly_the_candidates(k, batch_size):
    g = torch.Generator().manual_seed(k)
    nt, nv = 9, 7
    itc = torch.randn(nt, nv, generator=g)
    itm = torch.randn(nt, nv, generator=g) * 10
    scorer = PairScorer(itm)
    t2v, v2t = rerank_topk(itc, k, scorer, batch_size=batch_size)
    assert t2v.shape == (nt, nv) and v2t.shape == (nv, nt) and t2v.dtype == torch.float32
    kk_v, kk_t = min(k, nv), min(k, nt)

    # calls: video->text pass first, each call one query, batches of at most batch_size
    first_t2v = nv * -(-kk_t // batch_size)  # number of video->text calls
    assert len(scorer.calls) == first_t2v + nt * -(-kk_v // batch_size)
    v2t_pairs = {(t, v) for texts, vids in scorer.calls[:first_t2v] for t, v in zip(texts, vids, strict=True)}
    t2v_pairs = {(t, v) for texts, vids in scorer.calls[first_t2v:] for t, v in zip(texts, vids, strict=True)}
    assert all(len(c[0]) <= batch_size for c in scorer.calls)
    assert all(len(set(vids)) == 1 for _, vids in scorer.calls[:first_t2v])
    assert all(len(set(texts)) == 1 for texts, _ in scorer.calls[first_t2v:])
    assert sum(len(t) for t, _ in scorer.calls[:first_t2v]) == len(v2t_pairs) == nv * kk_t  # each pair once

    expect_t2v = {(t, int(v)) for t in range(nt) for v in itc[t].argsort(descending=True)[:kk_v]}
    expect_v2t = {(int(t), v) for v in range(nv) for t in itc[:, v].argsort(descending=True)[:kk_t]}
    assert t2v_pairs == expect_t2v and v2t_pairs == expect_v2t

    for t in range(nt):
        for v in range(nv):
            assert t2v[t, v] == (itm[t, v] if (t, v) in expect_t2v else FILL_VALUE)
            assert v2t[v, t] == (itm[t, v] if (t, v) in expect_v2t else FILL_VALUE)


def test_rerank_only_reorders_within_the_top_k():
    nt = nv = 6
    itc = torch.arange(nt * nv, dtype=torch.float32).reshape(nt, nv)  # ITC prefers higher video ids
    itm = -itc.clone()  # ITM reverses the preference
    t2v, _ = rerank_topk(itc, 2, PairScorer(itm))
    ranked = [row.argsort(descending=True, stable=True)[:2].tolist() for row in t2v]
    assert ranked == [[4, 5]] * nt  # the top-2 of ITC (videos 4, 5), in reversed order
    assert (t2v[:, :4] == FILL_VALUE).all()


def test_rerank_validates_arguments():
    itc = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="k must"):
        rerank_topk(itc, 0, PairScorer(itc))
    with pytest.raises(ValueError, match="expected"):
        rerank_topk(itc, 2, lambda t, v: torch.zeros(len(t) + 1))
    seen = []
    rerank_topk(itc, 1, PairScorer(itc), progress=lambda d, done, total: seen.append((d, done, total)))
    assert seen == [("v2t", 1, 3), ("v2t", 2, 3), ("v2t", 3, 3), ("t2v", 1, 2), ("t2v", 2, 2)]
    # distributed=True without an initialised process group runs locally
    t2v, _ = rerank_topk(itc, 1, PairScorer(itc + 1), distributed=True)
    assert (t2v == FILL_VALUE).sum() == 2 * 2


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        itc, itm = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
        scorer = PairScorer(itm)
        t2v, v2t = rerank_topk(itc, 3, scorer, batch_size=2, distributed=True)
        torch.save({"t2v": t2v, "v2t": v2t, "calls": scorer.calls}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(60)
def test_rerank_distributed_two_gloo_ranks_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    g = torch.Generator().manual_seed(0)
    itc, itm = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    ref_scorer = PairScorer(itm)
    ref_t2v, ref_v2t = rerank_topk(itc, 3, ref_scorer, batch_size=2)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for res in results:
        assert torch.equal(res["t2v"], ref_t2v) and torch.equal(res["v2t"], ref_v2t)
    # the work was split: together the ranks made exactly the single-process calls
    assert sorted(results[0]["calls"] + results[1]["calls"]) == sorted(ref_scorer.calls)
    assert results[0]["calls"] and results[1]["calls"]


# ------------------------------------------------------------------------------------------------------------
# training validation: temporal subset and the decoded-videos remap (one code path with `vtr eval`)
# ------------------------------------------------------------------------------------------------------------


def test_temporal_metrics_rank_within_groups():
    # 4 videos: 0/1 are a temporal pair, 2/3 another; one text per video
    s = np.array([[0.9, 0.8, 0.1, 0.0],   # right within its pair
                  [0.9, 0.8, 0.1, 0.0],   # wrong: prefers its partner
                  [0.0, 0.1, 0.5, 0.5],   # tie with its partner -> half a hit (a random tie-break)
                  [0.0, 0.1, 0.2, 0.7]])  # right
    m = temporal_metrics(s, [0, 1, 2, 3], ["a", "a", "b", "b"])
    assert m == {"temporal_r1": 62.5, "temporal_chance": 50.0, "temporal_queries": 4.0, "temporal_full_r1": 62.5}
    same = temporal_metrics(np.ones((4, 4)), [0, 1, 2, 3], ["a", "a", "b", "b"])  # an order-blind model
    assert same["temporal_r1"] == same["temporal_chance"] == 50.0
    full = retrieval_eval(torch.tensor(s), [0, 1, 2, 3], [[0], [1], [2], [3]], ["a", "a", None, None])
    assert full["t2v_r1"] == 50.0 and full["temporal_queries"] == 2.0 and full["t2v_chance_r1"] == 25.0


def test_decoded_subset_drops_undecodable_videos_with_their_texts():
    # 3 videos, texts 0,1 -> video 0, text 2 -> video 1, texts 3,4 -> video 2; video 1 failed to decode
    txt2vid, vid2txt = [0, 0, 1, 2, 2], [[0, 1], [2], [3, 4]]
    sub = decoded_subset(txt2vid, vid2txt, [0, 2])
    assert sub.texts == [0, 1, 3, 4] and sub.txt2vid == [0, 0, 1, 1] and sub.vid2txt == [[0, 1], [2, 3]]
    # rows in another order than the dataset's (as gathered from ranks): the remap follows the given order
    sub = decoded_subset(txt2vid, vid2txt, [2, 0])
    assert sub.texts == [0, 1, 3, 4] and sub.txt2vid == [1, 1, 0, 0] and sub.vid2txt == [[2, 3], [0, 1]]
