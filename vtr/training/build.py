"""Build what a training run trains and learns from: the student and its frozen teachers.

* :func:`build_retrieval_model` — the student from ``cfg.model`` with its initial weights (``pretrained``,
  ``vision_pretrained`` / ``model.vision.pretrained``);
* :func:`build_teacher` — the UTA teacher (``teacher.kind``: an open_clip CLIP tower or a VideoMamba), or None;
* :func:`build_distill_teacher` — the smaller VideoMamba of self-distillation (``self_distill.model``), or None.

Teachers are frozen and their width sets the student's ``clip_output_dim`` (the ``clip_decoder`` projects the
student's features to the teacher's width), so a student and its teacher of different widths fit.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from vtr.errors import ConfigError
from vtr.model.retrieval import RetrievalConfig, RetrievalModel, build_model, config_for
from vtr.training.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["build_distill_teacher", "build_retrieval_model", "build_teacher", "load_vision_weights",
           "retrieval_config", "vision_pretrained"]


def _uses_teacher(cfg: TrainConfig) -> bool:
    return cfg.teacher.enabled and cfg.losses.uta > 0


def teacher_output_dim(cfg: TrainConfig) -> int | None:
    """Width of the UTA teacher's targets when the config fixes it (None: the student's default, 512)."""
    t = cfg.teacher
    if not _uses_teacher(cfg):
        return None
    if t.kind == "videomamba":
        from vtr.model.teachers import load_video_encoder_from

        return load_video_encoder_from(t.model).cfg.embed_dim
    if t.config is not None:
        return int(t.config.get("embed_dim", 512))
    return None  # registered open_clip ViTs used as UMT teachers project to 512 = the student's default


def vision_pretrained(cfg: TrainConfig) -> str | None:
    """The stage-1 vision checkpoint to start from: ``model.vision_pretrained`` or ``model.vision.pretrained``."""
    m = cfg.model
    nested = m.vision.get("pretrained")
    if nested is not None and m.vision_pretrained is not None and nested != m.vision_pretrained:
        raise ConfigError("model.vision.pretrained and model.vision_pretrained name different files: set one")
    return m.vision_pretrained or nested


def retrieval_config(cfg: TrainConfig) -> RetrievalConfig:
    """The :class:`RetrievalConfig` a training config describes (architecture + overrides)."""
    m = cfg.model
    base = config_for(m.arch)
    overrides: dict[str, Any] = {k: getattr(m, k) for k in ("num_frames", "img_size", "embed_dim", "max_txt_l",
                                                             "temp", "text_pool") if getattr(m, k) is not None}
    vision = {**base.vision, **{k: v for k, v in m.vision.items() if k != "pretrained"}}
    if m.drop_path_rate or "drop_path_rate" in base.vision:
        vision["drop_path_rate"] = m.drop_path_rate
    if "clip_output_dim" not in vision:
        out_dim = teacher_output_dim(cfg)
        if out_dim is not None:
            vision["clip_output_dim"] = out_dim
    return config_for(m.arch, **overrides, vision=vision, text={**base.text, **m.text},
                      frame_independent=m.frame_independent)


def load_vision_weights(model: RetrievalModel, path: str):
    """Load a stage-1 vision checkpoint; its ``clip_decoder`` is dropped when it was trained for another width."""
    from vtr.encoders.checkpoint import load_video_encoder, read_checkpoint, vision_state_dict

    sd = vision_state_dict(read_checkpoint(path))
    own = model.vision_encoder.state_dict()
    dropped = [k for k in sd if k.startswith("clip_decoder.") and k in own and sd[k].shape != own[k].shape]
    for key in dropped:
        del sd[key]
    report = load_video_encoder(model.vision_encoder, sd)
    log.info("vision weights from %s: %s%s", path, report.summary(),
             " (clip_decoder of another teacher width left at init)" if dropped else "")
    return report


def build_retrieval_model(cfg: TrainConfig) -> RetrievalModel:
    """Build the student from ``cfg.model`` and load its initial weights (``pretrained``, ``vision_pretrained``)."""
    m = cfg.model
    text_weights: bool | str | None = {"default": None, "random": False}.get(m.text_weights, m.text_weights)
    model = build_model(retrieval_config(cfg), text_pretrained=text_weights)
    vision_path = vision_pretrained(cfg)
    if vision_path is not None:
        load_vision_weights(model, vision_path)
    if m.pretrained is not None:
        from vtr.model.registry import _tied, load_model_dir, load_official_weights, resolve_model_path

        path = resolve_model_path(m.pretrained)
        if path is not None:
            src = load_model_dir(path)
            missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
            missing = [k for k in missing if not _tied(k)]
            if missing or unexpected:
                raise ConfigError(f"model.pretrained {m.pretrained!r} does not fit model.arch {m.arch!r}: missing "
                                  f"{missing[:4]}, unexpected {unexpected[:4]}")
        else:
            load_official_weights(model, m.pretrained)
    if m.text_grad_checkpointing:
        model.text_encoder.set_grad_checkpointing(True)
    return model


def _check_grid(what: str, teacher_grid: Any, teacher_frames: int | None, student: RetrievalModel) -> None:
    vcfg = student.vision_encoder.cfg
    grid = teacher_grid if isinstance(teacher_grid, int) else teacher_grid[0]
    if grid != vcfg.grid_size:
        raise ConfigError(f"{what} grid {teacher_grid} does not match the student's {vcfg.grid_size}x"
                          f"{vcfg.grid_size} patches: give both the same image size / patch grid")
    if teacher_frames is not None and teacher_frames != vcfg.num_frames:
        raise ConfigError(f"{what} was built for {teacher_frames} frames, the student for {vcfg.num_frames}: "
                          f"set model.num_frames={teacher_frames}")


def build_teacher(cfg: TrainConfig, student: RetrievalModel) -> nn.Module | None:
    """The frozen UTA teacher (CLIP or VideoMamba), or None (no teacher configured, or UTA weight 0)."""
    t = cfg.teacher
    if not _uses_teacher(cfg):
        return None
    vcfg = student.vision_encoder.cfg
    if t.kind == "videomamba":
        from vtr.model.teachers import create_videomamba_teacher

        teacher = create_videomamba_teacher(t.model)
        _check_grid("teacher", teacher.grid_size, teacher.num_frames, student)
        masking = {"attention": "saliency-guided (the teacher's cosine of pooled feature to each patch; VideoMamba "
                                "has no cls attention)"}.get(t.video_mask, t.video_mask)
        log.warning("VideoMamba teacher: video masking %s, ratio %.2f", masking, t.video_mask_ratio)
    else:
        from vtr.encoders.clip_teacher import create_clip_teacher

        teacher = create_clip_teacher(t.config if t.config is not None else t.name, weights=t.weights,
                                      image_size=t.image_size or student.cfg.img_size, quick_gelu=t.quick_gelu)
        _check_grid("teacher", teacher.grid_size, None, student)
    if teacher.output_dim != vcfg.clip_output_dim:
        raise ConfigError(f"teacher output dim {teacher.output_dim} != student clip_output_dim "
                          f"{vcfg.clip_output_dim}: set model.vision.clip_output_dim={teacher.output_dim}")
    return teacher


def build_distill_teacher(cfg: TrainConfig, student: RetrievalModel) -> nn.Module | None:
    """The frozen smaller VideoMamba of self-distillation, or None."""
    if not cfg.self_distill.enabled or cfg.losses.distill == 0:
        return None
    from vtr.model.teachers import create_videomamba_teacher

    teacher = create_videomamba_teacher(cfg.self_distill.model)
    _check_grid("self_distill.model", teacher.grid_size, teacher.num_frames, student)
    return teacher
