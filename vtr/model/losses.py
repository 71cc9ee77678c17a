"""Training losses and the video-text similarity of the VideoMamba/UMT retrieval model (spec §2.3, §2.4).

Every loss is a plain function on tensors so that the model code can call it and the tests can check it
against hand computations:

* :func:`get_sim` — frame-mean cosine similarity divided by the temperature (also used at evaluation time).
* :func:`vtc_loss` — video-text contrastive loss over the features of all ranks (:func:`all_gather_with_grad`).
* :func:`vtm_loss` — video-text matching with one hard negative video per text and one hard negative text per
  video (:func:`sample_hard_negatives`); the fusion layers and the ITM head are passed in as callables.
* :func:`mask_tokens_for_mlm` / :func:`mlm_loss` — BERT-style masking (probability 0.5) and its loss.
* :func:`uta_loss` — unmasked token alignment between the student's ``x_clip`` and the CLIP teacher.
* :class:`LossWeights` / :func:`combine` — the weighted total.

Distributed semantics of the contrastive loss (same as the official ``AllGather``): every rank computes the
*same* loss ``L`` on the gathered ``[W·B, W·B]`` similarity matrix, and the gather's backward hands each rank
only the rows of the incoming gradient that belong to its own samples — no all-reduce. Rank ``r``'s local
features therefore receive exactly ``∂L/∂x_r``, the slice of the single-process gradient of ``L`` on the
concatenated batch. DDP then averages parameter gradients over ranks, so parameters upstream of the
features get ``(1/W)·∂L/∂θ`` while a parameter used directly in the loss (the temperature) gets ``∂L/∂temp``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vtr.errors import ConfigError

__all__ = [
    "IGNORE_INDEX",
    "LossWeights",
    "VTMOutput",
    "all_gather_with_grad",
    "clamp_temperature_",
    "combine",
    "get_sim",
    "hard_negative_weights",
    "mask_tokens_for_mlm",
    "mlm_loss",
    "positive_mask",
    "sample_hard_negatives",
    "uta_loss",
    "vtc_loss",
    "vtm_loss",
]

IGNORE_INDEX = -100
"""Label value of positions that do not count in :func:`mlm_loss` (same as PyTorch/HF)."""

TEMP_MIN = 0.001
TEMP_MAX = 0.5


# --------------------------------------------------------------------------------------------------------------
# similarity and temperature
# --------------------------------------------------------------------------------------------------------------


def get_sim(
    vision_proj_feats: torch.Tensor, text_proj_feats: torch.Tensor, temp: float | torch.Tensor = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise video-text similarity logits.

    Args:
        vision_proj_feats: ``[Bv, T, D]`` per-frame projected features (or ``[Bv, D]`` pooled ones).
        text_proj_feats: ``[Bt, D]`` projected text [CLS] features.
        temp: temperature (a float or a scalar tensor; gradient flows into it when it is a parameter).

    Both inputs are L2-normalised in float32. For 3-D vision features the similarity of video ``m`` and text
    ``n`` is the mean over frames of the per-frame cosines, ``mean_t(v[m, t] · t[n]) / temp`` (frame-level
    similarities averaged, *not* the cosine of a pooled video vector).

    Returns:
        ``(sim_v2t [Bv, Bt], sim_t2v [Bt, Bv])`` with ``sim_t2v == sim_v2t.T``.
    """
    if vision_proj_feats.ndim not in (2, 3):
        raise ValueError(f"vision features must be [B, T, D] or [B, D], got shape {tuple(vision_proj_feats.shape)}")
    if text_proj_feats.ndim != 2:
        raise ValueError(f"text features must be [B, D], got shape {tuple(text_proj_feats.shape)}")
    if vision_proj_feats.shape[-1] != text_proj_feats.shape[-1]:
        raise ValueError(
            f"vision and text feature widths differ ({vision_proj_feats.shape[-1]} vs "
            f"{text_proj_feats.shape[-1]}); both must be projected to the same embed_dim"
        )
    v = F.normalize(vision_proj_feats.float(), dim=-1)
    t = F.normalize(text_proj_feats.float(), dim=-1)
    if v.ndim == 3:
        # [Bv, T, D] x [Bt, D] -> [Bv, T, Bt] -> mean over frames
        sim_v2t = torch.einsum("mtd,nd->mtn", v, t).mean(dim=1)
    else:
        sim_v2t = v @ t.T
    sim_v2t = sim_v2t / temp
    return sim_v2t, sim_v2t.T


def clamp_temperature_(temp_param: torch.Tensor, min: float = TEMP_MIN, max: float = TEMP_MAX) -> torch.Tensor:
    """Clamp the learnable temperature in place to ``[min, max]`` (done at the start of every training forward).

    Runs under ``no_grad`` so it is not recorded by autograd; returns ``temp_param`` itself.
    """
    if min > max:
        raise ValueError(f"temperature clamp range is empty: min={min} > max={max}")
    with torch.no_grad():
        temp_param.clamp_(min=min, max=max)
    return temp_param


# --------------------------------------------------------------------------------------------------------------
# distributed gather
# --------------------------------------------------------------------------------------------------------------


def _dist_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherLocalGrad(torch.autograd.Function):
    """All-gather along dim 0; backward returns only this rank's rows of the incoming gradient (no all-reduce)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = _dist_world()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rank = rank
        ctx.local_rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        start = ctx.rank * ctx.local_rows
        return grad_output[start : start + ctx.local_rows]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order); identity when not distributed (or world 1).

    The gradient reaching the local ``x`` is the slice ``grad[rank·B : (rank+1)·B]`` of the gradient of the
    gathered tensor — the official ``AllGather`` semantics (see the module docstring for what this means for
    a loss that every rank computes on the full gathered batch). All ranks must pass the same shape.
    """
    _, world = _dist_world()
    if world == 1:
        return x
    return _AllGatherLocalGrad.apply(x)


def _all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Plain all-gather along dim 0 for tensors that need no gradient (ids)."""
    _, world = _dist_world()
    if world == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


# --------------------------------------------------------------------------------------------------------------
# VTC
# --------------------------------------------------------------------------------------------------------------


def positive_mask(idx: torch.Tensor | None, n: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``[n, n]`` matrix, True where row and column share an id (the diagonal when ``idx`` is None)."""
    if idx is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    idx = idx.reshape(-1)
    if idx.numel() != n:
        raise ValueError(f"idx has {idx.numel()} entries but the batch has {n} samples")
    return idx.view(-1, 1) == idx.view(1, -1)


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-(log_softmax(logits, 1) * targets).sum(1).mean()``."""
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def vtc_loss(
    vision_feats: torch.Tensor,
    text_feats: torch.Tensor,
    temp: float | torch.Tensor,
    idx: torch.Tensor | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """Video-text contrastive loss (``VTC_VTM_Loss.vtc_loss``).

    Args:
        vision_feats: ``[B, T, D]`` (or ``[B, D]``) projected vision features of the local batch.
        text_feats: ``[B, D]`` projected text features of the local batch.
        temp: temperature, applied once inside :func:`get_sim`.
        idx: ``[B]`` sample/video ids; samples sharing an id are all positives of each other (soft targets,
            rows normalised to sum 1). ``None`` means only the matching pair is positive (the diagonal).
        gather: all-gather features (and ids) over ranks first, as the official training does; the loss is
            then computed on the full gathered matrix (rows *and* columns are all gathered samples).

    Returns:
        ``½·[CE_soft(sim_v2t, targets) + CE_soft(sim_t2v, targets)]`` as a float32 scalar.
    """
    if vision_feats.shape[0] != text_feats.shape[0]:
        raise ValueError(f"VTC needs paired batches: {vision_feats.shape[0]} videos vs {text_feats.shape[0]} texts")
    if gather:
        vision_feats = all_gather_with_grad(vision_feats)
        text_feats = all_gather_with_grad(text_feats)
        if idx is not None:
            idx = _all_gather_no_grad(idx.reshape(-1).to(vision_feats.device))
    sim_v2t, sim_t2v = get_sim(vision_feats, text_feats, temp)
    with torch.no_grad():
        targets = positive_mask(idx, sim_v2t.shape[0], device=sim_v2t.device).to(sim_v2t.dtype)
        targets = targets / targets.sum(dim=1, keepdim=True)
    # the positive relation is symmetric, so the same row-normalised targets serve both directions
    return 0.5 * (_soft_ce(sim_v2t, targets) + _soft_ce(sim_t2v, targets))


# --------------------------------------------------------------------------------------------------------------
# VTM with hard negatives
# --------------------------------------------------------------------------------------------------------------


def hard_negative_weights(sim: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Sampling weights of hard negatives for each row of a square similarity matrix ``sim [B, B]``.

    ``softmax(sim, dim=1) + 1e-4`` (the small floor keeps every negative reachable), positives (same id)
    set to 0, then NaN/±inf set to 0.01 — the official order. Not normalised (``torch.multinomial`` does not
    need it). Computed in float32 without gradient.
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"hard negatives need a square local similarity matrix, got {tuple(sim.shape)}")
    with torch.no_grad():
        weights = F.softmax(sim.detach().float(), dim=1) + 1e-4
        weights = weights.masked_fill(positive_mask(idx, sim.shape[0], device=sim.device), 0.0)
        weights = torch.nan_to_num(weights, nan=1e-2, posinf=1e-2, neginf=1e-2)
    return weights


def _sample_rows(weights: torch.Tensor, what: str, generator: torch.Generator | None) -> torch.Tensor:
    empty = weights.sum(dim=1) <= 0
    if bool(empty.any()):
        row = int(torch.nonzero(empty)[0, 0])
        raise ValueError(
            f"cannot sample a hard negative {what} for row {row}: every sample in the local batch shares its id. "
            "VTM needs at least two different ids per local batch (use a batch size >= 2 with distinct videos)"
        )
    return torch.multinomial(weights, 1, generator=generator)[:, 0]


def sample_hard_negatives(
    sim_v2t: torch.Tensor,
    sim_t2v: torch.Tensor,
    idx: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one hard negative per row with ``torch.multinomial`` on :func:`hard_negative_weights`.

    Args:
        sim_v2t: ``[B, B]`` local video→text logits; ``sim_t2v``: ``[B, B]`` text→video logits.
        idx: ``[B]`` ids (same id = positive, never sampled); None = only the diagonal is positive.
        generator: optional ``torch.Generator`` (on the tensors' device) for reproducible draws.

    Returns:
        ``(neg_video_for_text [B], neg_text_for_video [B])`` — indices into the local batch. The video
        negatives are drawn first (official order), which matters only for generator reproducibility.

    Raises:
        ValueError: when some row has no negative at all (all samples share its id).
    """
    if sim_v2t.shape != sim_t2v.shape:
        raise ValueError(f"sim_v2t {tuple(sim_v2t.shape)} and sim_t2v {tuple(sim_t2v.shape)} differ in shape")
    w_v2t = hard_negative_weights(sim_v2t, idx)
    w_t2v = hard_negative_weights(sim_t2v, idx)
    neg_video_for_text = _sample_rows(w_t2v, "video", generator)
    neg_text_for_video = _sample_rows(w_v2t, "text", generator)
    return neg_video_for_text, neg_text_for_video


@dataclass
class VTMOutput:
    """Everything :func:`vtm_loss` computed (for logging and tests)."""

    loss: torch.Tensor
    logits: torch.Tensor  # [3B, 2]
    labels: torch.Tensor  # [3B]: 1 for the B positives, 0 for the 2B negatives
    neg_video_for_text: torch.Tensor  # [B]
    neg_text_for_video: torch.Tensor  # [B]


FuseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def vtm_loss(
    fuse_fn: FuseFn,
    itm_head: Callable[[torch.Tensor], torch.Tensor],
    vision_tokens: torch.Tensor,
    text_states: torch.Tensor,
    text_mask: torch.Tensor,
    sim_v2t: torch.Tensor,
    sim_t2v: torch.Tensor,
    idx: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_output: bool = False,
) -> torch.Tensor | VTMOutput:
    """Video-text matching loss with hard negatives, on the local batch only.

    Args:
        fuse_fn: ``fuse_fn(text_states [3B, L, H], text_mask [3B, L], vision_tokens [3B, N, C]) -> [3B, L, H]``
            — runs the cross-attention fusion layers (the vision attention mask is all ones).
        itm_head: maps the fused [CLS] states ``[3B, H]`` to logits ``[3B, 2]``.
        vision_tokens: ``[B, N, C]`` patch tokens; text_states ``[B, L, H]`` (text-mode output);
            text_mask ``[B, L]`` (1 = token, 0 = pad).
        sim_v2t, sim_t2v: ``[B, B]`` local similarity logits (detached here; only used for sampling).
        idx: ``[B]`` ids, or None for the diagonal.
        generator: optional generator for the negative sampling.
        return_output: return a :class:`VTMOutput` instead of just the loss.

    Pairs are ``[(v_i, t_i); (v_neg(i), t_i); (v_i, t_neg(i))]`` with labels ``[1]*B + [0]*2B``; the loss is
    the mean cross-entropy over the ``3B`` pairs.
    """
    b = vision_tokens.shape[0]
    if text_states.shape[0] != b or text_mask.shape[0] != b:
        raise ValueError(
            f"VTM needs paired batches: {b} videos, {text_states.shape[0]} text states, {text_mask.shape[0]} masks"
        )
    if sim_v2t.shape != (b, b):
        raise ValueError(f"VTM needs the local [B, B] similarities, got {tuple(sim_v2t.shape)} for B={b}")
    neg_video, neg_text = sample_hard_negatives(sim_v2t, sim_t2v, idx, generator=generator)
    vision_all = torch.cat([vision_tokens, vision_tokens[neg_video], vision_tokens], dim=0)
    text_all = torch.cat([text_states, text_states, text_states[neg_text]], dim=0)
    mask_all = torch.cat([text_mask, text_mask, text_mask[neg_text]], dim=0)
    fused = fuse_fn(text_all, mask_all, vision_all)
    if fused.ndim != 3 or fused.shape[0] != 3 * b:
        raise ValueError(f"fuse_fn must return [3B, L, H] = [{3 * b}, L, H], got {tuple(fused.shape)}")
    logits = itm_head(fused[:, 0])
    labels = torch.zeros(3 * b, dtype=torch.long, device=logits.device)
    labels[:b] = 1
    loss = F.cross_entropy(logits.float(), labels)
    if return_output:
        return VTMOutput(loss, logits, labels, neg_video, neg_text)
    return loss


# --------------------------------------------------------------------------------------------------------------
# MLM
# --------------------------------------------------------------------------------------------------------------


def mask_tokens_for_mlm(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    vocab_size: int,
    mask_token_id: int,
    pad_token_id: int,
    cls_token_id: int,
    prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking for the MLM loss (``MLMLoss.mask``).

    Each token is selected with probability ``prob`` (0.5 in the official config), except pad and [CLS]
    tokens, which are never selected (identified by id, as the official code does; [SEP] *can* be selected).
    Positions where ``attention_mask == 0`` are treated as padding too (never selected), even if their id is
    not ``pad_token_id``. Of the selected tokens, 80% become ``[MASK]``; of the remaining ones, half get a
    random id uniform in ``[0, vocab_size)`` (10% overall) and the rest stay unchanged.

    Returns:
        ``(masked_ids, labels)``: a new id tensor (the input is not modified) and labels holding the original
        id at selected positions and :data:`IGNORE_INDEX` elsewhere.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"MLM masking probability must be in [0, 1], got {prob}")
    device = input_ids.device
    ids = input_ids.clone()
    selected = torch.bernoulli(torch.full(ids.shape, float(prob), device=device), generator=generator).bool()
    selected &= ids != pad_token_id
    selected &= ids != cls_token_id
    if attention_mask is not None:
        selected &= attention_mask.to(device).bool()
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8, device=device), generator=generator).bool() & selected
    ids[to_mask] = mask_token_id
    to_random = (
        torch.bernoulli(torch.full(ids.shape, 0.5, device=device), generator=generator).bool() & selected & ~to_mask
    )
    random_ids = torch.randint(vocab_size, ids.shape, dtype=ids.dtype, device=device, generator=generator)
    ids[to_random] = random_ids[to_random]
    return ids, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits [B, L, V]`` over positions whose label is not :data:`IGNORE_INDEX`.

    Returns a (differentiable) zero when no position is labelled instead of PyTorch's NaN.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    if not bool((flat_labels != IGNORE_INDEX).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)


# --------------------------------------------------------------------------------------------------------------
# UTA
# --------------------------------------------------------------------------------------------------------------


def uta_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Unmasked token alignment: ``mean(2 - 2·<s, t>)`` of channel-L2-normalised student and teacher tokens.

    Shapes ``[B, N, D]`` or ``[K, B, N, D]`` (identical for both); the mean runs over every position
    (all K, B and visible tokens, the cls position included). Computed in float32; the result lies in [0, 4].
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} features must have the same shape"
        )
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return (2.0 - 2.0 * (s * t).sum(dim=-1)).mean()


# --------------------------------------------------------------------------------------------------------------
# total
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossWeights:
    """Weights of the losses; the total is ``Σ weight·loss`` (all 1.0 in the masked stage, ``uta=0`` in the
    unmasked stage; ``distill``: self-distillation from a smaller VideoMamba, off by default). A loss whose weight
    is 0 need not be computed at all. Also the ``losses`` section of a training config."""

    vtc: float = 1.0
    vtm: float = 1.0
    mlm: float = 1.0
    uta: float = 1.0
    distill: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"loss weight {f.name!r} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"loss weight {f.name!r} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, float]) -> LossWeights:
        """Build from a config mapping; unknown names raise :class:`~vtr.errors.ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ConfigError(f"unknown loss weight(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in mapping.items()})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def enabled(self, name: str) -> bool:
        """Whether loss ``name`` contributes (weight > 0)."""
        return self.as_dict()[name] > 0


def combine(losses: Mapping[str, torch.Tensor], weights: LossWeights | Mapping[str, float]) -> torch.Tensor:
    """``Σ weights[name]·losses[name]`` over the given losses.

    Losses whose weight is 0 are skipped (so a NaN in a disabled loss cannot leak into the total). Names
    without a weight raise ``KeyError``; raises ``ValueError`` when nothing contributes.
    """
    w = weights.as_dict() if isinstance(weights, LossWeights) else dict(weights)
    total: torch.Tensor | None = None
    for name, loss in losses.items():
        if name not in w:
            raise KeyError(f"no weight for loss {name!r}; weights are given for {sorted(w)}")
        if w[name] == 0:
            continue
        term = w[name] * loss
        total = term if total is None else total + term
    if total is None:
        raise ValueError(f"no loss contributes to the total (losses {sorted(losses)}, weights {w})")
    return total
