"""Frozen VideoMamba teachers: UTA targets for stage-1 masked training and features for self-distillation.

A VideoMamba teacher runs unmasked and returns the same targets as the CLIP teacher
(:class:`~vtr.encoders.clip_teacher.TeacherOutput`), so :func:`vtr.model.masking.encode_teacher` treats both alike:

    tokens   = [frame-mean of the pooled per-frame features, every frame's final-norm patch tokens]   [B, 1+T*P, C]
    cls_attn = per frame softmax(cos(pooled_t, patch_p) / SALIENCY_TEMP) over the patches             [B*T, P]

VideoMamba has no attention to read the cls->patch weights from; its *saliency* (how close each patch token is to
the frame's pooled feature) stands in for them in attention-guided masking. The teacher is frozen (no parameter
requires grad, always in eval mode, forward under ``no_grad``) and the training module keeps it out of checkpoints.

A teacher comes from a vtr model directory / installed model name (its video tower) or from a stage-1 run's
``vision.pt`` (:func:`save_vision_checkpoint`: the encoder's weights and its :class:`VideoMambaConfig`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vtr.encoders.clip_teacher import TeacherOutput
from vtr.encoders.videomamba import VideoMamba, VideoMambaConfig
from vtr.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

SALIENCY_TEMP = 0.1
"""Temperature of the saliency softmax (cosines lie in [-1, 1]; 0.1 makes the most salient patches several times
likelier to stay visible than the least, without collapsing onto a few)."""

CONFIG_KEY = "video_encoder_config"


class VideoMambaTeacher(nn.Module):
    """A frozen :class:`VideoMamba` returning UMT-style targets (see the module doc)."""

    def __init__(self, encoder: VideoMamba) -> None:
        super().__init__()
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.train(False)

    @property
    def num_patches(self) -> int:
        return self.encoder.num_patches

    @property
    def grid_size(self) -> int:
        return self.encoder.cfg.grid_size

    @property
    def num_frames(self) -> int:
        return self.encoder.cfg.num_frames

    @property
    def output_dim(self) -> int:
        return self.encoder.cfg.embed_dim

    def train(self, mode: bool = True) -> VideoMambaTeacher:
        """Stay in eval mode whatever the parent asks (the teacher is frozen; no drop-path)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> TeacherOutput:
        """``video [B, T, 3, H, W]`` (or images ``[B, 3, H, W]``) -> :class:`TeacherOutput` (tokens in float32)."""
        if video.ndim == 4:
            video = video.unsqueeze(1)
        b, t = video.shape[:2]
        out = self.encoder(video, keep_temporal=True)
        patches = out.tokens.float()  # [B, T*P, C]
        pooled = out.pooled.float()  # [B, T, C]
        tokens = torch.cat([pooled.mean(1, keepdim=True), patches], dim=1)
        per_frame = F.normalize(patches.view(b, t, self.num_patches, -1), dim=-1)
        cos = torch.einsum("btpc,btc->btp", per_frame, F.normalize(pooled, dim=-1))
        saliency = (cos / SALIENCY_TEMP).softmax(dim=-1).reshape(b * t, self.num_patches)
        return TeacherOutput(tokens=tokens, cls_attn=saliency)


def save_vision_checkpoint(encoder: VideoMamba, path: str | os.PathLike) -> Path:
    """Write ``encoder``'s weights and config to ``path`` (a stage-1 ``vision.pt``: ``model.vision_pretrained``
    of a stage-2 config loads it, and ``teacher.model`` / ``self_distill.model`` accept it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in encoder.cfg.to_dict().items() if k != "scan_backend"}
    state = {k: v.detach().float().cpu().contiguous() for k, v in encoder.state_dict().items()}
    torch.save({"model": state, CONFIG_KEY: cfg}, path)
    return path


def load_video_encoder_from(source: str | os.PathLike) -> VideoMamba:
    """The VideoMamba of a vtr model directory / installed model name, or of a ``vision.pt`` file."""
    from vtr.model.registry import load_model_dir, resolve_model_path

    if Path(source).is_file():
        try:
            obj = torch.load(str(source), map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{str(source)!r} cannot be read as a vision checkpoint: {err}") from err
        if not isinstance(obj, dict) or CONFIG_KEY not in obj:
            raise ConfigError(f"{str(source)!r} has no {CONFIG_KEY}: a VideoMamba teacher file must be a stage-1 "
                              "run's vision.pt (or pass a vtr model directory)")
        encoder = VideoMamba(VideoMambaConfig(**obj[CONFIG_KEY]))
        missing, unexpected = encoder.load_state_dict(obj["model"], strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{str(source)!r} does not match its own config: missing {missing[:4]}, "
                                  f"unexpected {unexpected[:4]}")
        return encoder
    path = resolve_model_path(source)
    if path is None:
        raise ConfigError(f"{str(source)!r} is neither a vtr model directory, an installed model name nor a "
                          "stage-1 vision.pt")
    return load_model_dir(path).vision_encoder


def create_videomamba_teacher(source: str | os.PathLike) -> VideoMambaTeacher:
    """A frozen :class:`VideoMambaTeacher` from ``source`` (see :func:`load_video_encoder_from`)."""
    teacher = VideoMambaTeacher(load_video_encoder_from(source))
    c = teacher.encoder.cfg
    log.info("VideoMamba teacher %s: %d layers x %d, %d frames at %d px", source, c.depth, c.embed_dim,
             c.num_frames, c.img_size)
    return teacher
