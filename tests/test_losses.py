"""Losses and similarity of the retrieval model (spec §2.3/§2.4), each checked against hand computations."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vtr.errors import ConfigError
from vtr.model.losses import (
    IGNORE_INDEX,
    LossWeights,
    VTMOutput,
    all_gather_with_grad,
    clamp_temperature_,
    combine,
    get_sim,
    hard_negative_weights,
    mask_tokens_for_mlm,
    mlm_loss,
    sample_hard_negatives,
    uta_loss,
    vtc_loss,
    vtm_loss,
)

# ------------------------------------------------------------------------------------------------------------
# plain-python reference helpers (explicit loops, no torch maths)
# ------------------------------------------------------------------------------------------------------------


def _unit(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _sim_loops(vision: torch.Tensor, text: torch.Tensor, temp: float) -> list[list[float]]:
    """sim[m][n] = mean over frames of cos(v[m, f], t[n]) / temp, by loops."""
    v = vision.tolist()
    t = text.tolist()
    if vision.ndim == 2:
        v = [[row] for row in v]
    sim = []
    for m in range(len(v)):
        row = []
        for n in range(len(t)):
            cosines = [_dot(_unit(frame), _unit(t[n])) for frame in v[m]]
            row.append(sum(cosines) / len(cosines) / temp)
        sim.append(row)
    return sim


def _soft_ce_loops(sim: list[list[float]], targets: list[list[float]]) -> float:
    total = 0.0
    for i, row in enumerate(sim):
        log_z = math.log(sum(math.exp(x) for x in row))
        total += -sum(targets[i][j] * (row[j] - log_z) for j in range(len(row)))
    return total / len(sim)


def _targets_loops(ids: list[int]) -> list[list[float]]:
    out = []
    for a in ids:
        row = [1.0 if a == b else 0.0 for b in ids]
        s = sum(row)
        out.append([x / s for x in row])
    return out


def _transpose(mat: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*mat, strict=True)]


def _vtc_loops(vision: torch.Tensor, text: torch.Tensor, temp: float, ids: list[int]) -> float:
    sim = _sim_loops(vision, text, temp)
    tg = _targets_loops(ids)
    return 0.5 * (_soft_ce_loops(sim, tg) + _soft_ce_loops(_transpose(sim), tg))


# ------------------------------------------------------------------------------------------------------------
# get_sim and temperature
# ------------------------------------------------------------------------------------------------------------


def test_get_sim_2d_closed_form():
    v = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    sim_v2t, sim_t2v = get_sim(v, t, 0.5)
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[0.8, 1.4 * r], [0.0, r]], dtype=torch.float64) / 0.5
    torch.testing.assert_close(sim_v2t.double(), expected)
    torch.testing.assert_close(sim_t2v, sim_v2t.T)
    assert sim_v2t.dtype == torch.float32


def test_get_sim_3d_is_mean_of_per_frame_cosines():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 4, 5, generator=g) * 3.0
    t = torch.randn(2, 5, generator=g)
    sim_v2t, sim_t2v = get_sim(v, t, 0.07)
    expected = torch.tensor(_sim_loops(v, t, 0.07), dtype=torch.float64)
    assert sim_v2t.shape == (3, 2) and sim_t2v.shape == (2, 3)
    torch.testing.assert_close(sim_v2t.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sim_t2v, sim_v2t.T)
    # it is NOT the cosine of the frame-pooled video vector
    pooled = torch.tensor(_sim_loops(v.mean(1), t, 0.07), dtype=torch.float64)
    assert not torch.allclose(sim_v2t.double(), pooled, atol=1e-3)


def test_get_sim_float32_from_half_and_tensor_temperature_gets_grad():
    v = torch.randn(2, 3, 4).to(torch.bfloat16)
    t = torch.randn(2, 4).to(torch.bfloat16)
    temp = torch.nn.Parameter(torch.tensor(0.1))
    sim_v2t, _ = get_sim(v, t, temp)
    assert sim_v2t.dtype == torch.float32
    sim_v2t.sum().backward()
    assert temp.grad is not None and torch.isfinite(temp.grad)


def test_get_sim_rejects_bad_shapes():
    with pytest.raises(ValueError, match="widths differ"):
        get_sim(torch.randn(2, 3, 4), torch.randn(2, 5), 1.0)
    with pytest.raises(ValueError, match="text features"):
        get_sim(torch.randn(2, 4), torch.randn(2, 1, 4), 1.0)
    with pytest.raises(ValueError, match="vision features"):
        get_sim(torch.randn(4), torch.randn(2, 4), 1.0)


def test_clamp_temperature():
    temp = torch.nn.Parameter(torch.tensor(0.07))
    assert clamp_temperature_(temp) is temp
    assert temp.item() == pytest.approx(0.07)
    temp.data.fill_(2.0)
    clamp_temperature_(temp)
    assert temp.item() == pytest.approx(0.5)
    temp.data.fill_(1e-6)
    clamp_temperature_(temp)
    assert temp.item() == pytest.approx(0.001)
    assert temp.is_leaf and temp.requires_grad and temp.grad_fn is None
    temp.data.fill_(0.3)
    clamp_temperature_(temp, min=0.01, max=0.2)
    assert temp.item() == pytest.approx(0.2)
    with pytest.raises(ValueError):
        clamp_temperature_(temp, min=0.5, max=0.1)


# ------------------------------------------------------------------------------------------------------------
# VTC
# ------------------------------------------------------------------------------------------------------------


def test_vtc_2x2_by_hand():
    v = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    temp = 0.5
    r = 1 / math.sqrt(2)
    s00, s01, s10, s11 = 0.8 / temp, 1.4 * r / temp, 0.0, r / temp
    # v2t rows: video 0 vs texts (s00, s01), video 1 vs texts (s10, s11); targets diagonal
    v2t = -(s00 - math.log(math.exp(s00) + math.exp(s01))) - (s11 - math.log(math.exp(s10) + math.exp(s11)))
    # t2v rows: text 0 vs videos (s00, s10), text 1 vs videos (s01, s11)
    t2v = -(s00 - math.log(math.exp(s00) + math.exp(s10))) - (s11 - math.log(math.exp(s01) + math.exp(s11)))
    expected = 0.5 * (v2t / 2 + t2v / 2)
    loss = vtc_loss(v, t, temp)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # idx=None is the diagonal: same as distinct ids; gather without a process group is a no-op
    assert vtc_loss(v, t, temp, idx=torch.tensor([5, 9])).item() == pytest.approx(expected, rel=1e-6)
    assert vtc_loss(v, t, temp, gather=False).item() == pytest.approx(expected, rel=1e-6)


def test_vtc_repeated_ids_soft_targets_3d():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(4, 3, 6, generator=g)
    t = torch.randn(4, 6, generator=g)
    ids = [7, 7, 3, 7]
    loss = vtc_loss(v, t, 0.1, idx=torch.tensor(ids))
    assert loss.item() == pytest.approx(_vtc_loops(v, t, 0.1, ids), rel=1e-5)
    # differs from the diagonal-only loss
    assert abs(loss.item() - _vtc_loops(v, t, 0.1, [0, 1, 2, 3])) > 1e-3


def test_vtc_gradients_flow_to_features_and_temperature():
    v = torch.randn(3, 2, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    temp = torch.nn.Parameter(torch.tensor(0.07))
    vtc_loss(v, t, temp).backward()
    for grad in (v.grad, t.grad, temp.grad):
        assert grad is not None and torch.isfinite(grad).all()


def test_vtc_rejects_unpaired_batches():
    with pytest.raises(ValueError, match="paired"):
        vtc_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match="idx"):
        vtc_loss(torch.randn(3, 4), torch.randn(3, 4), 1.0, idx=torch.tensor([0, 1]))


# ------------------------------------------------------------------------------------------------------------
# hard negatives
# ------------------------------------------------------------------------------------------------------------


def test_hard_negative_weights_by_hand():
    sim = torch.tensor([[2.0, 1.0, 0.0], [0.5, 3.0, -1.0], [1.0, 1.0, 1.0]])
    ids = [4, 4, 2]
    w = hard_negative_weights(sim, torch.tensor(ids))
    for i in range(3):
        z = sum(math.exp(x) for x in sim[i].tolist())
        for j in range(3):
            expected = 0.0 if ids[i] == ids[j] else math.exp(sim[i, j].item()) / z + 1e-4
            assert w[i, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # NaN (a row with +inf similarity) becomes 0.01 on negatives, positives stay 0
    bad = torch.tensor([[float("inf"), 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w = hard_negative_weights(bad)
    assert w[0, 0] == 0 and w[0, 1].item() == pytest.approx(0.01) and w[0, 2].item() == pytest.approx(0.01)


@pytest.mark.parametrize(
    "ids", [list(range(12)), [0, 0, 1, 2, 2, 2, 5, 5, 5, 5, 6, 0], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 9]]
)
def test_hard_negatives_never_positive(ids, one_thread):
    g = torch.Generator().manual_seed(2)
    idx = torch.tensor(ids)
    b = len(ids)
    # make positives by far the most similar pairs: a naive sampler would pick them almost always
    same = (idx[:, None] == idx[None, :]).float()
    for _ in range(300):
        sim = torch.randn(b, b, generator=g) + 20.0 * same
        neg_v, neg_t = sample_hard_negatives(sim, sim.T, idx, generator=g)
        assert neg_v.shape == (b,) and neg_t.shape == (b,)
        assert (idx[neg_v] != idx).all()
        assert (idx[neg_t] != idx).all()


def test_hard_negatives_proportional_to_softmax(one_thread):
    sim = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 1.5, 1.0], [3.0, -2.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0]])
    g = torch.Generator().manual_seed(3)
    n = 4000  # fixed generator: deterministic; 0.03 is > 3.5 standard errors of each frequency
    counts_v = torch.zeros(4, 4)
    counts_t = torch.zeros(4, 4)
    rows = torch.arange(4)
    for _ in range(n):
        neg_v, neg_t = sample_hard_negatives(sim, sim.T, None, generator=g)
        counts_v[rows, neg_v] += 1
        counts_t[rows, neg_t] += 1

    def expected_probs(mat: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(4, 4)
        for i in range(4):
            z = sum(math.exp(x) for x in mat[i].tolist())
            w = [0.0 if j == i else math.exp(mat[i, j].item()) / z + 1e-4 for j in range(4)]
            out[i] = torch.tensor(w) / sum(w)
        return out

    # negative videos for text i follow row i of sim_t2v; negative texts for video i row i of sim_v2t
    assert (counts_v / n - expected_probs(sim.T)).abs().max() < 0.03
    assert (counts_t / n - expected_probs(sim)).abs().max() < 0.03
    assert counts_v.diagonal().sum() == 0 and counts_t.diagonal().sum() == 0


def test_hard_negatives_deterministic_with_generator_and_error_without_negatives():
    sim = torch.randn(5, 5)
    a = sample_hard_negatives(sim, sim.T, None, generator=torch.Generator().manual_seed(7))
    b = sample_hard_negatives(sim, sim.T, None, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="shares its id"):
        sample_hard_negatives(sim, sim.T, torch.tensor([1, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="shares its id"):
        sample_hard_negatives(torch.zeros(1, 1), torch.zeros(1, 1), None)


# ------------------------------------------------------------------------------------------------------------
# VTM
# ------------------------------------------------------------------------------------------------------------


def test_vtm_pairs_and_loss_by_hand():
    torch.manual_seed(4)
    b, n_vis, c, seq, h = 3, 5, 4, 6, 8
    vision = torch.randn(b, n_vis, c, requires_grad=True)
    text = torch.randn(b, seq, h, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    proj = torch.randn(c, h)
    head = torch.nn.Linear(h, 2)
    calls = []

    def fuse(text_states, text_mask, vision_tokens):
        calls.append((text_states.detach().clone(), text_mask.clone(), vision_tokens.detach().clone()))
        return text_states + (vision_tokens.mean(1) @ proj)[:, None, :]

    sim = torch.randn(b, b)
    idx = torch.tensor([0, 1, 2])
    out = vtm_loss(
        fuse, head, vision, text, mask, sim, sim.T, idx, generator=torch.Generator().manual_seed(5), return_output=True
    )
    assert isinstance(out, VTMOutput)
    neg_v, neg_t = sample_hard_negatives(sim, sim.T, idx, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out.neg_video_for_text, neg_v) and torch.equal(out.neg_text_for_video, neg_t)
    assert out.labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert out.logits.shape == (3 * b, 2)

    (t_all, m_all, v_all) = calls[0]
    total = 0.0
    for k in range(3 * b):
        i = k % b
        if k < b:  # positive (video i, text i)
            vid, txt, label = i, i, 1
        elif k < 2 * b:  # (negative video for text i, text i)
            vid, txt, label = int(neg_v[i]), i, 0
        else:  # (video i, negative text for video i)
            vid, txt, label = i, int(neg_t[i]), 0
        assert torch.equal(v_all[k], vision[vid].detach())
        assert torch.equal(t_all[k], text[txt].detach())
        assert torch.equal(m_all[k], mask[txt])
        cls = text[txt, 0].detach() + vision[vid].detach().mean(0) @ proj
        logits = [float(head.weight[o].detach() @ cls + head.bias[o].detach()) for o in range(2)]
        total += -(logits[label] - math.log(math.exp(logits[0]) + math.exp(logits[1])))
    assert out.loss.item() == pytest.approx(total / (3 * b), rel=1e-5)

    out.loss.backward()
    assert vision.grad is not None and text.grad is not None and head.weight.grad is not None
    # plain call returns the loss tensor
    loss = vtm_loss(fuse, head, vision, text, mask, sim, sim.T, idx, generator=torch.Generator().manual_seed(5))
    assert isinstance(loss, torch.Tensor) and loss.item() == pytest.approx(out.loss.item())


def test_vtm_negatives_respect_repeated_ids(one_thread):
    b = 4
    idx = torch.tensor([0, 0, 1, 1])
    seen = []

    def fuse(text_states, text_mask, vision_tokens):
        seen.append((text_states[:, 0, 0].clone(), vision_tokens[:, 0, 0].clone()))
        return text_states

    # feature value = sample position, so pairs can be read back from what fuse_fn received
    vision = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, 2, 3).contiguous()
    text = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, 3, 5).contiguous()
    g = torch.Generator().manual_seed(6)
    for _ in range(50):
        sim = torch.randn(b, b, generator=g)
        vtm_loss(fuse, torch.nn.Linear(5, 2), vision, text, torch.ones(b, 3), sim, sim.T, idx, generator=g)
        txt_ids, vid_ids = (x.long() for x in seen[-1])
        assert (idx[txt_ids[b:]] != idx[vid_ids[b:]]).all()  # every negative pair mixes different ids
        assert torch.equal(txt_ids[:b], vid_ids[:b])


# ------------------------------------------------------------------------------------------------------------
# MLM
# ------------------------------------------------------------------------------------------------------------

PAD, CLS, SEP, MASK, VOCAB = 0, 101, 102, 103, 30522


def _random_batch(b: int, seq: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1000, VOCAB, (b, seq), generator=g)
    lengths = torch.randint(3, seq + 1, (b,), generator=g)
    pos = torch.arange(seq)[None, :]
    ids[:, 0] = CLS
    ids[pos == (lengths[:, None] - 1)] = SEP
    ids[pos >= lengths[:, None]] = PAD
    return ids, (ids != PAD).long()


def test_mlm_masking_statistics():
    g = torch.Generator().manual_seed(8)
    ids, att = _random_batch(600, 40, g)
    original = ids.clone()
    masked, labels = mask_tokens_for_mlm(ids, att, VOCAB, MASK, PAD, CLS, prob=0.5, generator=g)
    assert torch.equal(ids, original)  # input untouched
    selected = labels != IGNORE_INDEX
    eligible = (ids != PAD) & (ids != CLS)
    assert not selected[~eligible].any()  # pad and [CLS] never selected
    assert torch.equal(masked[~selected], ids[~selected])  # unselected tokens unchanged
    assert torch.equal(labels[selected], ids[selected])  # labels = original ids
    frac = selected.sum().item() / eligible.sum().item()
    assert abs(frac - 0.5) < 0.02
    n_sel = selected.sum().item()
    sel_masked = masked[selected]
    sel_orig = ids[selected]
    to_mask = (sel_masked == MASK).sum().item() / n_sel
    to_random = ((sel_masked != MASK) & (sel_masked != sel_orig)).sum().item() / n_sel
    kept = (sel_masked == sel_orig).sum().item() / n_sel
    assert abs(to_mask - 0.8) < 0.02
    assert abs(to_random - 0.1) < 0.015
    assert abs(kept - 0.1) < 0.015
    # [SEP] is eligible (the spec only excludes pad and [CLS]) and does get selected
    assert selected[ids == SEP].any()
    # the random replacements are spread over the vocabulary
    rand_ids = sel_masked[(sel_masked != MASK) & (sel_masked != sel_orig)]
    assert rand_ids.min() < 1000 and rand_ids.max() >= VOCAB - 1000


def test_mlm_masking_respects_attention_mask_and_is_reproducible():
    ids = torch.full((4, 10), 2000)
    ids[:, 0] = CLS
    att = torch.ones(4, 10, dtype=torch.long)
    att[:, 6:] = 0  # padding positions whose id is not the pad id are still never selected
    a = mask_tokens_for_mlm(ids, att, VOCAB, MASK, PAD, CLS, prob=1.0, generator=torch.Generator().manual_seed(1))
    b = mask_tokens_for_mlm(ids, att, VOCAB, MASK, PAD, CLS, prob=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    selected = a[1] != IGNORE_INDEX
    assert selected[:, 1:6].all() and not selected[:, 6:].any() and not selected[:, 0].any()
    none = mask_tokens_for_mlm(ids, att, VOCAB, MASK, PAD, CLS, prob=0.0)
    assert torch.equal(none[0], ids) and (none[1] == IGNORE_INDEX).all()
    with pytest.raises(ValueError):
        mask_tokens_for_mlm(ids, att, VOCAB, MASK, PAD, CLS, prob=1.5)


def test_mlm_loss_by_hand():
    logits = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [2.0, -1.0, 0.0, 0.5], [0.0, 0.0, 3.0, 1.0]]], requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, 2, 0]])
    expected = 0.0
    for pos, lab in ((1, 2), (2, 0)):
        row = logits[0, pos].tolist()
        expected += -(row[lab] - math.log(sum(math.exp(x) for x in row)))
    loss = mlm_loss(logits, labels)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)
    loss.backward()
    assert torch.equal(logits.grad[0, 0], torch.zeros(4))  # ignored position gets no gradient
    empty = mlm_loss(logits, torch.full((1, 3), IGNORE_INDEX))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError):
        mlm_loss(logits, labels[:, :2])


# ------------------------------------------------------------------------------------------------------------
# UTA
# ------------------------------------------------------------------------------------------------------------


def test_uta_identical_opposite_and_by_hand():
    x = torch.randn(2, 5, 8)
    assert uta_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert uta_loss(x, 3.0 * x).item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    assert uta_loss(x, -x).item() == pytest.approx(4.0, abs=1e-6)
    g = torch.Generator().manual_seed(9)
    s = torch.randn(1, 2, 3, 4, generator=g)
    t = torch.randn(1, 2, 3, 4, generator=g)
    vals = []
    for k in range(1):
        for bb in range(2):
            for n in range(3):
                vals.append(2 - 2 * _dot(_unit(s[k, bb, n].tolist()), _unit(t[k, bb, n].tolist())))
    assert uta_loss(s, t).item() == pytest.approx(sum(vals) / len(vals), rel=1e-5)
    assert uta_loss(s[0], t[0]).item() == pytest.approx(sum(vals) / len(vals), rel=1e-5)  # [B, N, D] too
    assert uta_loss(s.to(torch.bfloat16), t.to(torch.bfloat16)).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        uta_loss(s, t[..., :3])


# ------------------------------------------------------------------------------------------------------------
# weights and total
# ------------------------------------------------------------------------------------------------------------


def test_loss_weights_and_combine():
    w = LossWeights()
    assert w.as_dict() == {"vtc": 1.0, "vtm": 1.0, "mlm": 1.0, "uta": 1.0, "distill": 0.0}
    losses = {"vtc": torch.tensor(2.0), "vtm": torch.tensor(3.0), "uta": torch.tensor(float("nan"))}
    total = combine(losses, LossWeights(vtm=0.5, uta=0.0))
    assert total.item() == pytest.approx(2.0 + 1.5)  # the disabled NaN loss is skipped
    assert not LossWeights(uta=0.0).enabled("uta") and LossWeights().enabled("vtc")
    assert combine({"vtc": torch.tensor(1.0)}, {"vtc": 2.0}).item() == pytest.approx(2.0)
    assert LossWeights.from_mapping({"uta": 0}) == LossWeights(uta=0.0)
    with pytest.raises(KeyError):
        combine({"itc": torch.tensor(1.0)}, LossWeights())
    with pytest.raises(ValueError):
        combine({"uta": torch.tensor(1.0)}, LossWeights(uta=0.0))
    with pytest.raises(ConfigError):
        LossWeights(vtc=-1.0)
    with pytest.raises(ConfigError):
        LossWeights(mlm=float("nan"))
    with pytest.raises(ConfigError, match="unknown"):
        LossWeights.from_mapping({"itc": 1.0})


# ------------------------------------------------------------------------------------------------------------
# distributed: real 2-process gloo run
# ------------------------------------------------------------------------------------------------------------

WORLD, LOCAL_B = 2, 3


def _ddp_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {
        "v": torch.randn(WORLD * LOCAL_B, 4, 8, generator=g),
        "t": torch.randn(WORLD * LOCAL_B, 8, generator=g),
        # id 1 is shared across the two ranks (rank 0 row 2, rank 1 row 0): a cross-rank positive
        "idx": torch.tensor([0, 5, 1, 1, 2, 3]),
        "x": torch.randn(WORLD * LOCAL_B, 5, generator=g),
        "w": torch.randn(WORLD * LOCAL_B, 5, generator=g),
    }


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        data = _ddp_data()
        sl = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        result: dict[str, torch.Tensor] = {}

        # all_gather_with_grad alone: gathered value is the full tensor, gradient is the local slice
        x = data["x"][sl].clone().requires_grad_(True)
        gathered = all_gather_with_grad(x)
        result["gathered"] = gathered.detach().clone()
        (gathered * data["w"]).sum().backward()
        result["x_grad"] = x.grad.clone()

        for name, idx in (("ids", data["idx"][sl]), ("diag", None)):
            v = data["v"][sl].clone().requires_grad_(True)
            t = data["t"][sl].clone().requires_grad_(True)
            temp = torch.nn.Parameter(torch.tensor(0.1))
            loss = vtc_loss(v, t, temp, idx=idx)
            loss.backward()
            result[f"{name}_loss"] = loss.detach().clone()
            result[f"{name}_v_grad"] = v.grad.clone()
            result[f"{name}_t_grad"] = t.grad.clone()
            result[f"{name}_temp_grad"] = temp.grad.clone()
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_all_gather_and_vtc_two_process_gloo(tmp_path: Path):
    """Two gloo ranks on CPU, each holding LOCAL_B samples, against one process holding all of them.

    Derivation of the expected gradients. Every rank gathers both sides and computes the *same* loss
    ``L = vtc(concat(x_0, x_1))`` on the full ``[2B, 2B]`` matrix (so "mean over ranks of the losses" is just
    ``L``). Autograd on rank r yields ``∂L/∂X`` for the gathered tensor ``X``; the gather's backward (official
    ``AllGather``) keeps rows ``r·B:(r+1)·B`` only, and since ``X[r·B:(r+1)·B] = x_r`` those rows are exactly
    ``∂L/∂x_r`` of the single-process loss: rank r's local gradient == slice r of the single-process gradient
    (no factor W, no all-reduce). The temperature is used directly in ``L``, so each rank gets the full
    ``∂L/∂temp``. Consequence for training (not asserted here): DDP *averages* parameter gradients over ranks,
    so parameters upstream of the features receive ``(1/W)·∂L/∂θ`` while the temperature receives ``∂L/∂temp``
    — the official behaviour, reproduced as is.
    """
    init_file = tmp_path / "rendezvous"
    ctx = mp.start_processes(
        _ddp_worker, args=(str(init_file), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            pytest.fail("2-process gloo run did not finish within 120 s")

    data = _ddp_data()
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    # all_gather_with_grad: forward gathers in rank order, backward keeps this rank's slice of the gradient
    for r, res in enumerate(results):
        sl = slice(r * LOCAL_B, (r + 1) * LOCAL_B)
        torch.testing.assert_close(res["gathered"], data["x"])
        torch.testing.assert_close(res["x_grad"], data["w"][sl])

    for name, idx in (("ids", data["idx"]), ("diag", None)):
        v = data["v"].clone().requires_grad_(True)
        t = data["t"].clone().requires_grad_(True)
        temp = torch.nn.Parameter(torch.tensor(0.1))
        loss = vtc_loss(v, t, temp, idx=idx, gather=False)
        loss.backward()
        for r, res in enumerate(results):
            sl = slice(r * LOCAL_B, (r + 1) * LOCAL_B)
            torch.testing.assert_close(res[f"{name}_loss"], loss.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(res[f"{name}_v_grad"], v.grad[sl], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(res[f"{name}_t_grad"], t.grad[sl], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(res[f"{name}_temp_grad"], temp.grad, rtol=1e-4, atol=1e-6)
    # the cross-rank shared id matters: the two target sets give different losses
    assert abs(results[0]["ids_loss"].item() - results[0]["diag_loss"].item()) > 1e-4
