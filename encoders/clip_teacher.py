"""Frozen CLIP ViT teacher for unmasked token alignment (UMT), built on open_clip's vision tower.

Follows ``shared/spec/videomamba.md`` sections 1.6, 2.5 and 3.2 (official ``clip_teacher="clip_b16"``):

    frames  = video [B, T, 3, H, W] (ImageNet-normalised, exactly the student's input), bicubic-resized to the
              teacher's image size if needed, run as B*T images
    x       = ln_pre(cat(class_embedding, conv1(frame) patches) + positional_embedding) -> resblocks
    tokens  = last block's output (no ln_post) @ proj;  cls averaged over frames  -> [B, 1 + T*P, out_dim]
    cls_attn= last block's attention of cls -> patches, averaged over heads        -> [B*T, P]
              (softmax over all 1 + P keys, so a row sums to 1 - the cls->cls weight, as in the official code)

The official teacher is OpenAI CLIP ViT-B/16, which uses QuickGELU: ``create_clip_teacher`` builds with
QuickGELU unless told otherwise. Weights load from a local file in either the official extracted layout (no
``visual.`` prefix, ``conv1.weight`` inflated to ``[768, 3, 1, 16, 16]``) or a full open_clip/OpenAI CLIP state
dict (``visual.`` prefix; other towers ignored).

Masks and the gathering of the targets at the visible positions live in :mod:`vtr.model.masking`
(:func:`~vtr.model.masking.encode_teacher`). open_clip imports torchvision; :func:`vtr.compat.ensure_torchvision`
runs before it is imported.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from vtr.compat import ensure_torchvision
from vtr.encoders.checkpoint import interpolate_pos_embed, read_checkpoint, unwrap_state_dict
from vtr.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

_STRIP_PREFIXES = ("module.", "clip_teacher.")


def _open_clip():
    """Import open_clip (after making torchvision importable on CPU-only torch)."""
    ensure_torchvision()
    try:
        import open_clip
    except ImportError as err:
        raise ConfigError("the CLIP teacher needs open_clip: pip install 'vtr[distill]' (open_clip_torch)") from err
    return open_clip


class TeacherOutput(NamedTuple):
    """Teacher targets for one batch."""

    tokens: torch.Tensor  # [B, 1 + T*P, out_dim]: frame-averaged cls, then every frame's projected patches
    cls_attn: torch.Tensor  # [B*T, P] float32: last block's cls->patch attention, head-averaged


class CLIPTeacher(nn.Module):
    """A frozen open_clip ``VisionTransformer`` run per frame, returning UMT alignment targets.

    Parameters live under ``visual`` (open_clip's own module, so its key names are ``visual.conv1.weight`` ...).
    Always in eval mode (``train()`` is a no-op) with ``requires_grad=False``; forward runs under ``no_grad``.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        _check_supported(visual)
        self.visual = visual
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.train(False)

    # ------------------------------------------------------------------ structure
    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.visual.image_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.visual.grid_size)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def width(self) -> int:
        return self.visual.transformer.width

    @property
    def output_dim(self) -> int:
        return self.visual.proj.shape[1]

    @property
    def num_heads(self) -> int:
        return self.visual.transformer.resblocks[-1].attn.num_heads

    def train(self, mode: bool = True) -> CLIPTeacher:
        """Stay in eval mode whatever the parent asks (the teacher is frozen)."""
        return super().train(False)

    # ------------------------------------------------------------------ weights
    def load_weights(self, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> list[str]:
        """Load CLIP vision weights from a file or a state dict; returns notes on conversions applied.

        Accepted layouts: the official extracted visual dict (no prefix, ``conv1.weight`` 4-D or Conv3d-inflated
        ``[C, 3, 1, p, p]``), a full open_clip/OpenAI CLIP dict (``visual.`` prefix, other keys ignored),
        optionally under ``model``/``state_dict`` and with a ``module.``/``clip_teacher.`` prefix; ``.pth``,
        ``.safetensors`` or OpenAI's TorchScript ``.pt`` archives. All vision keys must be present.
        """
        name = "state dict" if isinstance(source, Mapping) else repr(str(source))
        if isinstance(source, Mapping):
            sd = unwrap_state_dict(dict(source), source=name)
        else:
            sd = read_teacher_weights(source)
        sd, notes = self._convert(sd, name)
        result = self.visual.load_state_dict(sd, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"CLIP weights {name} do not match the teacher {self.describe()}: "
                f"missing {result.missing_keys[:8]}{' ...' if len(result.missing_keys) > 8 else ''}, "
                f"unexpected {result.unexpected_keys[:8]}{' ...' if len(result.unexpected_keys) > 8 else ''}"
            )
        log.info("CLIP teacher weights loaded from %s%s", name, f" ({'; '.join(notes)})" if notes else "")
        return notes

    def _convert(self, sd: dict[str, torch.Tensor], name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
        notes: list[str] = []
        for prefix in _STRIP_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
        if any(k.startswith("visual.") for k in sd):
            dropped = sum(not k.startswith("visual.") for k in sd)
            sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
            notes.append(f"took the visual tower ({dropped} other tensors ignored)")
        own = self.visual.state_dict()
        conv = sd.get("conv1.weight")
        if conv is not None and conv.ndim == 5:
            if conv.shape[2] != 1:
                raise CheckpointError(
                    f"CLIP weights {name}: conv1.weight {tuple(conv.shape)} spans {conv.shape[2]} frames; only "
                    "per-frame (temporal size 1) patch embeddings are supported"
                )
            sd["conv1.weight"] = conv.squeeze(2)
            notes.append("squeezed Conv3d conv1.weight to 2-D")
        pos = sd.get("positional_embedding")
        want = own["positional_embedding"].shape
        if pos is not None and pos.ndim == 2 and pos.shape != want and pos.shape[1] == want[1]:
            sd["positional_embedding"] = interpolate_pos_embed(pos.unsqueeze(0), want[0] - 1).squeeze(0)
            notes.append(f"interpolated positional_embedding {tuple(pos.shape)} -> {tuple(want)}")
        for key, value in sd.items():
            if key in own and own[key].shape != value.shape:
                raise CheckpointError(
                    f"CLIP weights {name}: {key} has shape {tuple(value.shape)}, the teacher "
                    f"{self.describe()} expects {tuple(own[key].shape)} (wrong model name/config?)"
                )
        return sd, notes

    def describe(self) -> str:
        v = self.visual
        return (
            f"(width {self.width}, {len(v.transformer.resblocks)} layers, {self.num_heads} heads, "
            f"patch {self.patch_size[0]}, image {self.image_size[0]}, out {self.output_dim})"
        )

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> TeacherOutput:
        """``video [B, T, 3, H, W]`` (or an image batch ``[B, 3, H, W]``) -> :class:`TeacherOutput`."""
        if video.ndim == 4:
            video = video.unsqueeze(1)
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"teacher input must be [B, T, 3, H, W], got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        v = self.visual
        x = video.reshape(b * t, *video.shape[2:]).to(v.conv1.weight.dtype)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False)

        x = v.conv1(x).flatten(2).transpose(1, 2)  # [N, P, width]
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)

        blocks = v.transformer.resblocks
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for blk in blocks[:-1]:
            x = blk(x)
        last = blocks[-1]
        cls_attn = _cls_attention(last, x if batch_first else x.transpose(0, 1))
        x = last(x)
        if not batch_first:
            x = x.transpose(0, 1)

        x = x.reshape(b, t, 1 + self.num_patches, -1)
        cls = x[:, :, :1].mean(dim=1)  # [B, 1, width]
        patches = x[:, :, 1:].reshape(b, t * self.num_patches, -1)
        tokens = torch.cat([cls, patches], dim=1) @ v.proj.to(x.dtype)
        return TeacherOutput(tokens=tokens, cls_attn=cls_attn)


def _cls_attention(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention of the cls query over the patch keys in ``block`` for ``x [N, L, D]``.

    Recomputed from the block's own ``ln_1`` and ``attn.in_proj_{weight,bias}`` (queries scaled by
    ``head_dim**-0.5``, softmax over all ``L`` keys in float32), as ``nn.MultiheadAttention(need_weights=True)``
    would return them; only the cls row is formed. Returns ``[N, L - 1]``.
    """
    attn = block.attn
    d, heads = attn.embed_dim, attn.num_heads
    head_dim = d // heads
    h = block.ln_1(x)
    w = attn.in_proj_weight
    bias = attn.in_proj_bias
    q = F.linear(h[:, :1], w[:d], None if bias is None else bias[:d])
    k = F.linear(h, w[d : 2 * d], None if bias is None else bias[d : 2 * d])
    n, length = k.shape[:2]
    q = q.float().view(n, 1, heads, head_dim).transpose(1, 2) * head_dim**-0.5  # [N, h, 1, hd]
    k = k.float().view(n, length, heads, head_dim).transpose(1, 2)  # [N, h, L, hd]
    weights = (q @ k.transpose(-1, -2)).softmax(dim=-1).mean(dim=1)  # [N, 1, L]
    return weights[:, 0, 1:]


def _check_supported(visual: nn.Module) -> None:
    """Raise a clear error unless ``visual`` is a standard open_clip ViT this teacher can run exactly."""
    _open_clip()
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise ConfigError(
            f"CLIP teacher needs an open_clip VisionTransformer, got {type(visual).__name__} "
            "(ResNet and timm towers are not supported)"
        )
    problems = []
    if getattr(visual, "attn_pool", None) is not None:
        problems.append("attentional pooling")
    if getattr(visual, "proj", None) is None:
        problems.append("no output projection (proj)")
    if not isinstance(visual.conv1, nn.Conv2d):
        problems.append("a non-Conv2d patch embedding")
    for i, blk in enumerate(visual.transformer.resblocks):
        if type(blk) is not ResidualAttentionBlock:
            problems.append(f"block {i} is {type(blk).__name__} (custom blocks: qk-norm, scaled-cosine, ...)")
            break
        a = blk.attn
        if not isinstance(a, nn.MultiheadAttention) or not a._qkv_same_embed_dim or a.bias_k is not None:
            problems.append(f"block {i} has a non-standard attention")
            break
        if a.add_zero_attn or hasattr(blk, "ln_1_kv"):
            problems.append(f"block {i} has zero-attention or cross-attention")
            break
    if problems:
        raise ConfigError("unsupported CLIP vision tower for the teacher: " + "; ".join(problems))


def _is_torchscript(path: str | os.PathLike) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_teacher_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file; OpenAI's original ``.pt`` files are TorchScript archives."""
    if not (Path(path).is_file() and _is_torchscript(path)):
        return read_checkpoint(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            archive = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise CheckpointError(f"TorchScript archive {str(path)!r} cannot be loaded: {err}") from err
    return dict(archive.state_dict())


def _model_config(name: str | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    open_clip = _open_clip()
    if isinstance(name, Mapping):
        cfg = copy.deepcopy(dict(name))
        label = "custom config"
    else:
        label = name.replace("/", "-")
        cfg = open_clip.get_model_config(label)
        if cfg is None:
            vits = [m for m in open_clip.list_models() if m.startswith("ViT-")]
            raise ConfigError(f"unknown open_clip model {name!r}; ViT models include: {', '.join(vits[:20])} ...")
    if "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise ConfigError(f"{label}: an open_clip model config needs 'embed_dim' and 'vision_cfg' keys")
    return cfg, label


def create_clip_teacher(
    name: str | Mapping[str, Any] = "ViT-B-16",
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    image_size: int | None = None,
    quick_gelu: bool = True,
) -> CLIPTeacher:
    """Build a frozen CLIP teacher.

    ``name``: a registered open_clip model name (``ViT-B-16`` for the official recipe; ``ViT-B/16`` also works)
    or an open_clip model config dict ``{"embed_dim": 512, "vision_cfg": {...}}`` (e.g. a tiny test model).
    Only the vision tower is built (with open_clip's own builder, as ``open_clip.CLIP`` does).
    ``weights``: a local file or state dict (see :meth:`CLIPTeacher.load_weights`); None = random init.
    ``image_size`` overrides the config's (positional embeddings of loaded weights are then interpolated).
    ``quick_gelu``: True (default) for OpenAI CLIP weights, which were trained with QuickGELU; pass False for
    GELU-trained weights (most LAION/DataComp ones). A ``-quickgelu`` config always uses QuickGELU.
    """
    _open_clip()
    from open_clip.model import _build_vision_tower

    cfg, label = _model_config(name)
    vision_cfg = dict(cfg["vision_cfg"])
    if image_size is not None:
        vision_cfg["image_size"] = int(image_size)
    use_quick_gelu = bool(quick_gelu or cfg.get("quick_gelu", False))
    try:
        visual = _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=use_quick_gelu)
    except TypeError as err:
        raise ConfigError(f"{label}: invalid open_clip vision config {vision_cfg}: {err}") from err
    teacher = CLIPTeacher(visual)
    if weights is not None:
        teacher.load_weights(weights)
    log.info("CLIP teacher %s %s%s", label, teacher.describe(), "" if weights is not None else " (random init)")
    return teacher


__all__ = [
    "CLIPTeacher",
    "TeacherOutput",
    "create_clip_teacher",
]
