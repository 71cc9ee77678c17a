"""Token masks for masked (UMT-style) training: attention-guided, random and tube.

A mask is a boolean tensor ``[B, 1 + T*P]`` over the student's token sequence ``[cls, frame0 patches, ...,
frame T-1 patches]`` with **True = masked** (the token is dropped). Column 0 (cls) is always visible, and every
sample keeps the same number of tokens, so ``x[~mask].reshape(B, -1, C)`` works
(``shared/spec/videomamba.md`` sections 1.6 and 2.5).

Per frame ``visible_count(P, ratio) = P - int(P * ratio)`` tokens stay visible: 40 of 196 for the video ratio
0.8, 98 of 196 for the image ratio 0.5. Random draws use ``generator`` (on its own device) when given, so masks
are reproducible independently of where the tokens live.

:func:`encode_teacher` runs a frozen teacher (CLIP or VideoMamba), builds the mask from it and gathers the
teacher's targets at the student's visible positions (:func:`gather_visible`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vtr.errors import ConfigError

MASK_KINDS = ("attention", "random", "tube", "none")


def visible_count(num_patches: int, ratio: float) -> int:
    """Visible tokens per frame for a mask ratio, as the official recipe counts them: ``P - int(P * ratio)``."""
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"mask ratio must be in [0, 1), got {ratio}")
    n_vis = num_patches - int(num_patches * ratio)
    if n_vis < 1:
        raise ConfigError(f"mask ratio {ratio} leaves no visible token out of {num_patches} per frame")
    return n_vis


def _sample_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _with_cls(patch_mask: torch.Tensor) -> torch.Tensor:
    """Prepend the (always visible) cls column to a ``[B, T*P]`` patch mask."""
    cls = torch.zeros(patch_mask.shape[0], 1, dtype=torch.bool, device=patch_mask.device)
    return torch.cat([cls, patch_mask], dim=1)


def _mask_from_visible(visible: torch.Tensor, num_patches: int) -> torch.Tensor:
    """``[N, n_vis]`` visible indices -> ``[N, P]`` boolean mask (True = masked)."""
    mask = torch.ones(visible.shape[0], num_patches, dtype=torch.bool, device=visible.device)
    return mask.scatter_(1, visible, False)


def attention_mask(
    cls_attn: torch.Tensor,
    num_frames: int,
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Attention-guided mask from the teacher's cls->patch attention ``[B*T, P]`` -> ``[B, 1 + T*P]``.

    Per frame, the visible patches are the first ``visible_count(P, ratio)`` indices of a sample without
    replacement proportional to the attention (``torch.multinomial``; rows need not sum to 1 — the official
    cls->patch row excludes the cls->cls weight). Drawing only that many samples gives
    exactly the same indices as the official ``torch.multinomial(attn, P)[:, :n_vis]`` for the same generator
    state (torch samples without replacement by one exponential key per category, then top-k).
    """
    if cls_attn.ndim != 2:
        raise ValueError(f"cls_attn must be [B*T, P], got shape {tuple(cls_attn.shape)}")
    bt, num_patches = cls_attn.shape
    if num_frames < 1 or bt % num_frames:
        raise ValueError(f"cls_attn has {bt} rows, not a multiple of num_frames={num_frames}")
    n_vis = visible_count(num_patches, ratio)
    weights = cls_attn.detach().float()
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("cls_attn must be finite and non-negative")
    if ((weights > 0).sum(dim=1) < n_vis).any():
        # Too few non-zero weights (underflowed softmax): give zeros a negligible weight so n_vis can be drawn.
        weights = weights.clamp_min(torch.finfo(torch.float32).tiny)
    if generator is not None and generator.device != weights.device:
        visible = torch.multinomial(weights.to(generator.device), n_vis, generator=generator).to(weights.device)
    else:
        visible = torch.multinomial(weights, n_vis, generator=generator)
    mask = _mask_from_visible(visible, num_patches)
    return _with_cls(mask.view(bt // num_frames, num_frames * num_patches))


def random_mask(
    batch_size: int,
    num_frames: int,
    num_patches: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    per_frame: bool = True,
) -> torch.Tensor:
    """Uniformly random mask ``[B, 1 + T*P]``.

    ``per_frame=True``: every frame keeps ``visible_count(P, ratio)`` random patches. ``per_frame=False``: the
    official UMT ``RandomMaskingGenerator`` layout, ``T*P - int(T*P*ratio)`` visible patches drawn over the whole
    clip (frames may keep different counts; samples still keep equal counts).
    """
    sample_on = _sample_device(generator, device)
    rows, width = (batch_size * num_frames, num_patches) if per_frame else (batch_size, num_frames * num_patches)
    n_vis = visible_count(width, ratio)
    keys = torch.rand(rows, width, generator=generator, device=sample_on)
    visible = keys.argsort(dim=1)[:, :n_vis]
    mask = _mask_from_visible(visible, width).view(batch_size, num_frames * num_patches)
    return _with_cls(mask).to(device if device is not None else sample_on)


def tube_mask(
    batch_size: int,
    num_frames: int,
    num_patches: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Tube mask ``[B, 1 + T*P]``: per sample one random spatial mask, repeated in every frame."""
    sample_on = _sample_device(generator, device)
    n_vis = visible_count(num_patches, ratio)
    keys = torch.rand(batch_size, num_patches, generator=generator, device=sample_on)
    spatial = _mask_from_visible(keys.argsort(dim=1)[:, :n_vis], num_patches)
    mask = spatial.unsqueeze(1).expand(batch_size, num_frames, num_patches).reshape(batch_size, -1)
    return _with_cls(mask).to(device if device is not None else sample_on)


def no_mask(
    batch_size: int, num_frames: int, num_patches: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """All tokens visible: an all-False ``[B, 1 + T*P]`` mask."""
    return torch.zeros(batch_size, 1 + num_frames * num_patches, dtype=torch.bool, device=device)


def make_mask(
    kind: str,
    batch_size: int,
    num_frames: int,
    num_patches: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    cls_attn: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build a mask of ``kind`` (``attention`` needs the teacher's ``cls_attn [B*T, P]``)."""
    if kind == "attention":
        if cls_attn is None:
            raise ConfigError("attention masking needs the teacher's cls attention (cls_attn)")
        if cls_attn.shape != (batch_size * num_frames, num_patches):
            raise ValueError(
                f"cls_attn shape {tuple(cls_attn.shape)} != ({batch_size * num_frames}, {num_patches}) for "
                f"B={batch_size}, T={num_frames}, P={num_patches}"
            )
        mask = attention_mask(cls_attn, num_frames, ratio, generator)
        return mask.to(device) if device is not None else mask
    if kind == "random":
        return random_mask(batch_size, num_frames, num_patches, ratio, generator, device)
    if kind == "tube":
        return tube_mask(batch_size, num_frames, num_patches, ratio, generator, device)
    if kind == "none":
        return no_mask(batch_size, num_frames, num_patches, device)
    raise ConfigError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}")


def gather_visible(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tokens ``[B, N, D]`` at the visible positions of ``mask [B, N]`` (True = masked) -> ``[B, n_vis, D]``."""
    if mask.shape != tokens.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape[:2])}")
    visible = (~mask).sum(dim=1)
    if (visible != visible[0]).any():
        raise ValueError(f"every sample must keep the same number of tokens, got {visible.tolist()}")
    return tokens[~mask.to(tokens.device)].reshape(tokens.shape[0], -1, tokens.shape[-1])


def encode_teacher(
    teacher: nn.Module,
    video: torch.Tensor,
    mask_kind: str,
    ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the teacher once, build the mask, gather its targets -> ``(mask [B, 1+T*P], visible [B, n, out_dim])``.

    ``teacher(video)`` returns ``tokens [B, 1+T*P, D]`` and ``cls_attn [B*T, P]`` (a CLIP teacher's cls attention or
    a VideoMamba teacher's saliency) and has ``num_patches``. ``mask_kind="attention"`` samples the mask from
    ``cls_attn``; ``random``/``tube`` ignore it;
    ``none`` keeps every token. The student must be run with the returned mask.
    """
    if video.ndim == 4:
        video = video.unsqueeze(1)
    b, t = video.shape[:2]
    out = teacher(video)
    mask = make_mask(
        mask_kind, b, t, teacher.num_patches, ratio, generator=generator, device=out.tokens.device,
        cls_attn=out.cls_attn if mask_kind == "attention" else None,
    )
    return mask, gather_visible(out.tokens, mask)
