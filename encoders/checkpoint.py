"""Load official VideoMamba weights: stage-1 vision checkpoints and the vision part of multimodal ones.

Accepts ``{"model": sd}``, ``{"module": sd}`` or a bare state dict, bf16 or fp32 tensors, keys with or
without the ``vision_encoder.`` prefix. Position embeddings are interpolated when the frame count or the
resolution differs (bicubic over the patch grid with the cls row kept; linear over time).
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vtr.errors import CheckpointError

log = logging.getLogger(__name__)

VISION_PREFIX = "vision_encoder."
# Keys the official stage-1 checkpoint lacks (added in multimodal stage 2); left at init when missing.
OPTIONAL_PREFIXES = ("pool_norm.", "clip_decoder.")
ALIASES = {"norm_f.weight": "norm.weight"}  # Vim-style name of the final norm


@dataclass
class LoadReport:
    """What a load did: keys filled, keys left at init, keys ignored, interpolations applied."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    interpolated: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.interpolated:
            parts.append("interpolated " + ", ".join(f"{k} {v}" for k, v in self.interpolated.items()))
        if self.left_at_init:
            parts.append(f"{len(self.left_at_init)} left at init ({_prefixes(self.left_at_init)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} ignored ({_prefixes(self.unexpected)})")
        return "; ".join(parts)


def _prefixes(keys: list[str]) -> str:
    return ", ".join(sorted({k.split(".")[0] + ".*" if "." in k else k for k in keys}))


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.safetensors`` file into a flat state dict (unwrapping ``model``/``module``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): download it again")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch's advice (file an issue, weights_only=False) does not apply
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({err.strerror or err})") from err
    except Exception as err:  # torch's and pickle's errors (with advice that does not apply) become one line
        raise CheckpointError(f"{str(path)!r} is not a checkpoint vtr can read: {_what_is_it(path)}") from err
    return unwrap_state_dict(obj, source=str(path))


def _what_is_it(path: Path) -> str:
    """Why a file failed to load as a checkpoint, guessed from its first bytes (one short clause)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix == ".safetensors":
        return "a damaged or truncated safetensors file: download it again"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return "a truncated PyTorch file: download it again"
        return ("a PyTorch file holding more than plain tensors (code or objects vtr does not load), or a damaged "
                "one: give an official VideoMamba .pth or a .safetensors file")
    if head[:1] == b"\x80":
        return "a Python pickle that is not a file of plain tensors: give an official VideoMamba .pth"
    return "not a PyTorch or safetensors file: give an official VideoMamba .pth (e.g. videomamba_m16_25M_f8_res224.pth)"


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the tensor dict inside ``obj`` (bare, or under ``model``/``module``/``state_dict``)."""
    if isinstance(obj, Mapping):
        for key in ("model", "module", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(f"{source} holds no state dict (expected a dict of tensors, or one under 'model')")


def vision_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision-encoder part of ``sd``: keys under ``vision_encoder.`` (stripped), else the whole dict."""
    if any(k.startswith(VISION_PREFIX) for k in sd):
        sd = {k[len(VISION_PREFIX):]: v for k, v in sd.items() if k.startswith(VISION_PREFIX)}
    return {ALIASES.get(k, k): v for k, v in sd.items()}


def interpolate_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Resize a [1, 1 + n*n, C] spatial embedding to ``num_patches`` rows (bicubic, cls row kept)."""
    old = pos_embed.shape[1] - 1
    if old == num_patches:
        return pos_embed
    g_old, g_new = int(round(old**0.5)), int(round(num_patches**0.5))
    if g_old * g_old != old or g_new * g_new != num_patches:
        raise CheckpointError(f"pos_embed with {old} patches cannot be resized to {num_patches} (not square)")
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    c = grid.shape[-1]
    grid = grid.float().reshape(1, g_old, g_old, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(g_new, g_new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, g_new * g_new, c).to(pos_embed.dtype)
    return torch.cat([cls, grid], dim=1)


def interpolate_temporal_embed(temporal: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Resize a [1, T, C] temporal embedding to ``num_frames`` (linear, align_corners=False)."""
    if temporal.shape[1] == num_frames:
        return temporal
    t = F.interpolate(temporal.float().permute(0, 2, 1), size=num_frames, mode="linear", align_corners=False)
    return t.permute(0, 2, 1).to(temporal.dtype)


def load_video_encoder(
    model: torch.nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = True,
) -> LoadReport:
    """Load official VideoMamba weights into ``model`` (a :class:`VideoMamba`); return a :class:`LoadReport`.

    ``strict``: every key of the encoder except ``pool_norm``/``clip_decoder`` must be present and of the
    right shape, else :class:`CheckpointError` names them. Unknown keys are reported, never fatal.
    """
    sd = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else dict(checkpoint)
    sd = vision_state_dict(sd)
    own = model.state_dict()
    report = LoadReport()
    if "pos_embed" in sd and sd["pos_embed"].shape != own["pos_embed"].shape:
        before = tuple(sd["pos_embed"].shape)
        sd["pos_embed"] = interpolate_pos_embed(sd["pos_embed"], own["pos_embed"].shape[1] - 1)
        report.interpolated["pos_embed"] = f"{before}->{tuple(sd['pos_embed'].shape)}"
    key_t = "temporal_pos_embedding"
    if key_t in sd and sd[key_t].shape != own[key_t].shape:
        before = tuple(sd[key_t].shape)
        sd[key_t] = interpolate_temporal_embed(sd[key_t], own[key_t].shape[1])
        report.interpolated[key_t] = f"{before}->{tuple(sd[key_t].shape)}"

    to_load, mismatched = {}, []
    for key, target in own.items():
        if key not in sd:
            (report.left_at_init if key.startswith(OPTIONAL_PREFIXES) else report.missing).append(key)
        elif sd[key].shape != target.shape:
            mismatched.append(f"{key}: checkpoint {tuple(sd[key].shape)} vs model {tuple(target.shape)}")
        else:
            to_load[key] = sd[key].to(target.dtype)
    report.unexpected = sorted(k for k in sd if k not in own)
    if mismatched:
        raise CheckpointError("checkpoint does not match the encoder architecture:\n  " + "\n  ".join(mismatched[:10])
                              + "\n(is --model the right size? videomamba_middle for the released files)")
    if strict and report.missing:
        raise CheckpointError(
            f"checkpoint lacks {len(report.missing)} encoder keys, e.g. {report.missing[:5]}; it is not a "
            "VideoMamba vision checkpoint of this size"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    log.info("video encoder: %s", report.summary())
    return report
