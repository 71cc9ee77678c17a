"""``RetrievalLitModule``: the official stage-2 training objectives of the VideoMamba/UMT retrieval model in Lightning.

* losses: :meth:`~vtr.model.retrieval.RetrievalModel.training_losses` (VTC over all ranks, VTM with hard negatives,
  MLM, UTA with a frozen CLIP teacher under attention masking; temperature clamped every step);
* optimizer: AdamW on :func:`official_param_groups` — the official weight-decay rule, see there;
* schedule: :class:`CosineWarmup` (official ``get_cosine_schedule_with_warmup`` with ``min_lr_multi``) in a
  ``LambdaLR`` stepped after every optimizer step;
* teacher: frozen, kept out of checkpoints (``teacher.*`` keys are dropped on save and refilled on load);
* validation: R@1/5/10, MdR and MnR both ways (dual encoder: :meth:`RetrievalModel.similarity`) on the held-out
  split, computed by :func:`vtr.evaluation.metrics.retrieval_metrics` (its deterministic tie rule; unrounded), so
  ``vtr eval`` of the exported model reports the same numbers; and R@1 on the temporal hard-negative subset of
  vtr-shapes (training only: each text of a clip in a ``temporal_group`` ranked against the clips of its group
  only; chance = 1/group size; a tie at the top counts as a random tie-break, see :func:`temporal_metrics`);
* reproducibility: the global RNG is reseeded at every training batch from ``(seed, global batch number, rank)``,
  so a resumed run repeats the uninterrupted run's dropout, MLM masks and hard negatives exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from vtr.compat import ensure_torchvision
from vtr.errors import ConfigError
from vtr.evaluation.metrics import retrieval_metrics
from vtr.model import losses as Lo
from vtr.model.retrieval import RetrievalConfig, RetrievalModel, build_model, config_for
from vtr.training.config import TrainConfig, to_dict

ensure_torchvision()
import lightning as L  # noqa: E402  (after the torchvision shim)

log = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("_forward_module.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "module.")


# ---------------------------------------------------------------------------------------------- model / teacher


def retrieval_config(cfg: TrainConfig) -> RetrievalConfig:
    """The :class:`RetrievalConfig` a training config describes (architecture + overrides)."""
    m = cfg.model
    base = config_for(m.arch)
    overrides: dict[str, Any] = {k: getattr(m, k) for k in ("num_frames", "img_size", "embed_dim", "max_txt_l",
                                                             "temp", "text_pool") if getattr(m, k) is not None}
    vision = {**base.vision, **m.vision}
    if m.drop_path_rate or "drop_path_rate" in base.vision:
        vision["drop_path_rate"] = m.drop_path_rate
    if cfg.teacher.enabled and cfg.losses.uta > 0 and "clip_output_dim" not in vision:
        out_dim = _teacher_output_dim(cfg)
        if out_dim is not None:
            vision["clip_output_dim"] = out_dim
    return config_for(m.arch, **overrides, vision=vision, text={**base.text, **m.text},
                      frame_independent=m.frame_independent)


def _teacher_output_dim(cfg: TrainConfig) -> int | None:
    if cfg.teacher.config is not None:
        return int(cfg.teacher.config.get("embed_dim", 512))
    return None  # registered open_clip ViTs used as UMT teachers project to 512 = the student's default


def build_retrieval_model(cfg: TrainConfig) -> RetrievalModel:
    """Build the student from ``cfg.model`` and load its initial weights (``pretrained``, ``vision_pretrained``)."""
    m = cfg.model
    text_weights: bool | str | None = {"default": None, "random": False}.get(m.text_weights, m.text_weights)
    model = build_model(retrieval_config(cfg), text_pretrained=text_weights)
    if m.vision_pretrained is not None:
        from vtr.encoders.checkpoint import load_video_encoder

        load_video_encoder(model.vision_encoder, m.vision_pretrained)
    if m.pretrained is not None:
        from vtr.model.registry import load_model_dir, load_official_weights, resolve_model_path

        path = resolve_model_path(m.pretrained)
        if path is not None:
            src = load_model_dir(path)
            missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
            missing = [k for k in missing if k != "text_encoder.cls.predictions.decoder.weight"]
            if missing or unexpected:
                raise ConfigError(f"model.pretrained {m.pretrained!r} does not fit model.arch {m.arch!r}: missing "
                                  f"{missing[:4]}, unexpected {unexpected[:4]}")
        else:
            load_official_weights(model, m.pretrained)
    if m.text_grad_checkpointing:
        model.text_encoder.set_grad_checkpointing(True)
    return model


def build_teacher(cfg: TrainConfig, student: RetrievalModel) -> nn.Module | None:
    """The frozen CLIP teacher, or None (no teacher configured, or UTA weight 0)."""
    t = cfg.teacher
    if not t.enabled or cfg.losses.uta == 0:
        return None
    from vtr.encoders.clip_teacher import create_clip_teacher

    image_size = t.image_size or student.cfg.img_size
    teacher = create_clip_teacher(t.config if t.config is not None else t.name, weights=t.weights,
                                  image_size=image_size, quick_gelu=t.quick_gelu)
    vcfg = student.vision_encoder.cfg
    if teacher.num_patches != vcfg.grid_size ** 2:
        raise ConfigError(f"teacher grid {teacher.grid_size} does not match the student's {vcfg.grid_size}x"
                          f"{vcfg.grid_size} patches: set teacher.image_size so both have the same patch grid")
    if teacher.output_dim != vcfg.clip_output_dim:
        raise ConfigError(f"teacher output dim {teacher.output_dim} != student clip_output_dim "
                          f"{vcfg.clip_output_dim}: set model.vision.clip_output_dim={teacher.output_dim}")
    return teacher


# ---------------------------------------------------------------------------------------------- optimizer


def strip_wrappers(name: str) -> str:
    """A parameter name without DDP/FSDP/checkpoint wrapper prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if prefix in name:
                name = name.replace(prefix, "")
                changed = True
    return name


def decays(name: str, param: torch.Tensor) -> bool:
    """The official weight-decay rule (``utils/optimizer.py::add_weight_decay`` with ``filter_bias_and_bn``).

    No decay for 1-D parameters (norm weights, ``D``/``D_b``, MLM bias) and for names ending in ``.bias``; decay
    for everything else. The multimodal model defines no ``no_weight_decay()``, so position embeddings,
    ``cls_token``, ``temporal_pos_embedding``, ``A_log``/``A_b_log`` (2-D) and even the 0-dim temperature ``temp``
    (``len(shape) == 0``, not 1) are decayed. Reproduced as is.
    """
    return not (param.ndim == 1 or name.endswith(".bias"))


def official_param_groups(named_params: Iterable[tuple[str, torch.Tensor]], weight_decay: float,
                          decay_by_name: dict[str, bool] | None = None, different_lr_names: Sequence[str] = (),
                          different_lr: float | None = None) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: ``decay`` (``weight_decay``) and ``no_decay`` (0) by :func:`decays`,
    each split again when ``different_lr_names`` regexes (``re.search`` on the name) move parameters to
    ``different_lr`` (official ``add_different_lr``; those groups are named ``*_different_lr`` and carry ``lr``).

    ``decay_by_name`` (computed on the unwrapped model) overrides :func:`decays` for wrapped/sharded parameters whose
    shapes no longer tell (FSDP flattens them). Frozen parameters are left out, as officially; a tied parameter is
    listed once.
    """
    patterns = [re.compile(p) for p in different_lr_names]
    groups: dict[tuple[bool, bool], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, param in named_params:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        clean = strip_wrappers(name)
        flag = decay_by_name[clean] if decay_by_name is not None and clean in decay_by_name else decays(clean, param)
        other = different_lr is not None and any(p.search(clean) for p in patterns)
        if (flag, other) not in groups:
            group = {"params": [], "weight_decay": weight_decay if flag else 0.0,
                     "group": ("decay" if flag else "no_decay") + ("_different_lr" if other else ""),
                     "param_names": []}
            if other:
                group["lr"] = different_lr
            groups[(flag, other)] = group
        groups[(flag, other)]["params"].append(param)
        groups[(flag, other)]["param_names"].append(clean)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[1], not k[0]))]


class CosineWarmup:
    """LR multiplier of the official ``get_cosine_schedule_with_warmup`` (``num_cycles=0.5``).

    ``max(min_lr_multi, step / warmup)`` for ``step < warmup``, then
    ``max(min_lr_multi, 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))))``.
    """

    def __init__(self, warmup_steps: float, total_steps: int, min_lr_multi: float) -> None:
        self.warmup_steps = float(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_multi = float(min_lr_multi)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return max(self.min_lr_multi, step / max(1.0, self.warmup_steps))
        progress = (step - self.warmup_steps) / max(1.0, self.total_steps - self.warmup_steps)
        return max(self.min_lr_multi, 0.5 * (1.0 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------- metrics


def _top1(score: float, others: np.ndarray) -> float:
    """1 if ``score`` beats every one of ``others``, ``1/(m+1)`` if it ties ``m`` of them at the top, else 0."""
    if len(others) == 0 or score > others.max():
        return 1.0
    if score < others.max():
        return 0.0
    return 1.0 / (1 + int((others == score).sum()))


def temporal_metrics(score_t2v: np.ndarray, txt2vid: Sequence[int], groups: Sequence[str | None]) -> dict[str, float]:
    """R@1 of each text whose video is in a temporal group, ranked among that group's videos only.

    Returns ``temporal_r1`` (percent), ``temporal_chance`` (mean 1/group size, percent), ``temporal_queries`` and
    ``temporal_full_r1`` (the same texts ranked over the whole gallery). A tie at the top between the right clip
    and ``m`` others counts ``1 / (m + 1)`` (the expected hit of a random tie-break), so a model that cannot tell a
    clip from its reversed partner (the frame-mean baseline, which sees the same bag of frames) scores chance.
    """
    members: dict[str, list[int]] = {}
    for v, g in enumerate(groups):
        if g is not None:
            members.setdefault(g, []).append(v)
    hits, chance, full = [], [], []
    for t, v in enumerate(txt2vid):
        g = groups[v]
        if g is None or len(members[g]) < 2:
            continue
        row = score_t2v[t]
        others = row[[u for u in members[g] if u != v]]
        hits.append(_top1(row[v], others))
        chance.append(1.0 / len(members[g]))
        full.append(_top1(row[v], np.delete(row, v)))
    if not hits:
        return {}
    return {"temporal_r1": 100.0 * float(np.mean(hits)), "temporal_chance": 100.0 * float(np.mean(chance)),
            "temporal_queries": float(len(hits)), "temporal_full_r1": 100.0 * float(np.mean(full))}


def retrieval_eval(score_t2v: torch.Tensor | np.ndarray, txt2vid: Sequence[int], vid2txt: Sequence[Sequence[int]],
                   groups: Sequence[str | None] | None = None) -> dict[str, float]:
    """Both directions' metrics of a dual-encoder score matrix [Nt, Nv] (``retrieval_metrics``, the tie rule of
    ``vtr eval``), plus :func:`temporal_metrics` (own tie rule) and ``t2v_chance_r1``."""
    scores = score_t2v.detach().float().cpu().numpy() if isinstance(score_t2v, torch.Tensor) else score_t2v
    # the evaluation code's own metrics (ranks, tie rule), unrounded, so `vtr eval` reports the same numbers
    out = {k: float(v) for k, v in retrieval_metrics(scores, txt2vid, vid2txt, decimals=None).items()}
    if groups is not None:
        out.update(temporal_metrics(scores, txt2vid, groups))
    out["t2v_chance_r1"] = 100.0 / scores.shape[1]
    return out


# ---------------------------------------------------------------------------------------------- module


class RetrievalLitModule(L.LightningModule):
    """Trains a :class:`RetrievalModel` with the official stage-2 recipe (see the module doc).

    ``model`` / ``teacher`` may be passed in (tests); by default they are built from ``cfg``.
    """

    def __init__(self, cfg: TrainConfig, model: RetrievalModel | None = None,
                 teacher: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg)})
        self.model = model if model is not None else build_retrieval_model(cfg)
        self.teacher = teacher if teacher is not None else build_teacher(cfg, self.model)
        self.loss_weights = Lo.LossWeights(vtc=cfg.losses.vtc, vtm=cfg.losses.vtm, mlm=cfg.losses.mlm,
                                           uta=cfg.losses.uta if self.teacher is not None else 0.0)
        if self.loss_weights.mlm > 0 and not self.model.text_encoder.has_mlm_head:
            raise ConfigError("losses.mlm > 0 but the model has no MLM head (mlm_head=false in its config)")
        # The official rule, decided on the unwrapped model (FSDP flattens shapes later).
        self._decay_by_name = {n: decays(n, p) for n, p in self.model.named_parameters()}
        self._val_embeds: list[torch.Tensor] = []
        self._val_index: list[torch.Tensor] = []
        self.last_metrics: dict[str, float] = {}
        self.last_metrics_step: int | None = None
        self.train_samples = 0
        self.train_time_s = 0.0
        self._batch_t0: float | None = None
        self._multi_media = False

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen teacher (it is rebuilt from its weights file); record the counters."""
        sd = checkpoint.get("state_dict", {})
        for key in [k for k in sd if k.startswith("teacher.")]:
            del sd[key]
        checkpoint["vtr"] = {"train_samples": self.train_samples, "train_time_s": self.train_time_s,
                             "retrieval_config": self.model.cfg.to_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.teacher is not None:
            sd = checkpoint.setdefault("state_dict", {})
            for key, value in self.teacher.state_dict().items():
                sd.setdefault(f"teacher.{key}", value)
        info = checkpoint.get("vtr", {})
        self.train_samples = int(info.get("train_samples", 0))
        self.train_time_s = float(info.get("train_time_s", 0.0))

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        o, s = self.cfg.optim, self.cfg.schedule
        diff = o.different_lr
        groups = official_param_groups(self.model.named_parameters(), o.weight_decay, self._decay_by_name,
                                       different_lr_names=diff.module_names if diff.enable else (),
                                       different_lr=diff.lr if diff.enable else None)
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        steps_per_epoch = self._steps_per_epoch()
        total = s.max_steps if s.max_steps > 0 else s.epochs * steps_per_epoch
        schedule = CosineWarmup(s.warmup_epochs * steps_per_epoch, total, s.min_lr_multi)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def _steps_per_epoch(self) -> int:
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and hasattr(dm, "steps_per_epoch"):
            return max(1, dm.steps_per_epoch())
        if trainer is not None:
            batches = trainer.num_training_batches
            if batches == float("inf") or batches == 0:
                trainer.estimated_stepping_batches  # noqa: B018  (sets num_training_batches up)
                batches = trainer.num_training_batches
            if batches not in (0, float("inf")):
                return max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        return 1

    # ------------------------------------------------------------------ training

    def _step_seed(self, batch_idx: int) -> int:
        """A seed from ``(seed, global batch number, rank)``: the global batch number (Lightning's total batch
        count, restored on resume) also fixes the data, so a resumed run repeats every random draw."""
        try:
            position = int(self.trainer.fit_loop.epoch_loop.batch_progress.total.ready)
        except (AttributeError, RuntimeError):  # not attached to a trainer
            position = batch_idx
        text = f"{self.cfg.seed}/{position}/{self.global_rank}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(self._step_seed(batch_idx))
        self._batch_t0 = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._batch_t0 is not None:
            self.train_time_s += time.perf_counter() - self._batch_t0
            self._batch_t0 = None

    def masking_for(self, video: torch.Tensor) -> tuple[str, float]:
        t = self.cfg.teacher
        if self.teacher is None:
            return "none", 0.0
        return (t.image_mask, t.image_mask_ratio) if video.shape[1] == 1 else (t.video_mask, t.video_mask_ratio)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:  # every sample of the batch failed to decode (single-process only; see data.py)
            return None
        video = batch["video"]
        kind, ratio = self.masking_for(video)
        losses = self.model.training_losses(video, batch["input_ids"], batch["attention_mask"], idx=batch["idx"],
                                            weights=self.loss_weights, teacher=self.teacher, mask_kind=kind,
                                            mask_ratio=ratio)
        b = video.shape[0]
        self.train_samples += b * self.trainer.world_size
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=False, prog_bar=name == "loss",
                     batch_size=b)
            if self._multi_media:
                self.log(f"train/{batch['media']}_{name}", value.detach(), on_step=True, on_epoch=False,
                         batch_size=b)
        for group in self.trainer.optimizers[0].param_groups:
            if group.get("group") in ("decay", "decay_different_lr"):
                key = "train/lr" if group["group"] == "decay" else "train/lr_different"
                self.log(key, group["lr"], on_step=True, on_epoch=False, batch_size=b)
        self.log("train/temp", self.model.temp.detach().float(), on_step=True, on_epoch=False, batch_size=b)
        return losses["loss"]

    def on_train_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        self._multi_media = len(getattr(dm, "media_types", [])) > 1

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        self._val_embeds, self._val_index = [], []

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        vid = self.model.encode_video(batch["video"])
        self._val_embeds.append(vid.embeds.float())
        self._val_index.append(batch["index"].to(vid.embeds.device))

    def _gathered_val(self) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        if self._val_embeds:
            embeds, index = torch.cat(self._val_embeds), torch.cat(self._val_index)
        else:
            t, d = self.model.cfg.num_frames, self.model.cfg.embed_dim
            embeds, index = torch.zeros(0, t, d, device=dev), torch.zeros(0, dtype=torch.long, device=dev)
        if self.trainer.world_size > 1:
            n = torch.tensor([embeds.shape[0]], device=dev)
            n_max = int(self.all_gather(n).max())
            pad = n_max - embeds.shape[0]
            embeds = torch.cat([embeds, embeds.new_zeros(pad, *embeds.shape[1:])])
            index = torch.cat([index, index.new_full((pad,), -1)])
            embeds = self.all_gather(embeds).flatten(0, 1)
            index = self.all_gather(index).flatten(0, 1)
            keep = index >= 0
            embeds, index = embeds[keep], index[keep]
        return embeds, index

    @torch.no_grad()
    def on_validation_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not getattr(dm, "val_texts", None):
            return
        embeds, index = self._gathered_val()
        self._val_embeds, self._val_index = [], []
        if embeds.shape[0] == 0:
            return
        order = torch.argsort(index)
        embeds, index = embeds[order], index[order].tolist()
        metrics = self.evaluate_embeddings(embeds, index, dm.val_texts, dm.val_txt2vid, dm.val_vid2txt,
                                           dm.val_groups, batch_size=self.cfg.data.val_batch_size)
        metrics["val_failed_videos"] = float(len(dm.val_vid2txt) - len(index))
        self.last_metrics = metrics
        self.last_metrics_step = self.global_step
        for key, value in metrics.items():
            # identical on every rank (gathered embeddings); sync_dist only keeps Lightning from warning
            self.log(f"val/{key}", value, prog_bar=key in ("t2v_r1", "temporal_r1"), sync_dist=True)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            tok = self.model.tokenize(list(texts[i:i + batch_size]))
            out.append(self.model.encode_text(tok["input_ids"], tok["attention_mask"]).embeds.float())
        return torch.cat(out)

    @torch.no_grad()
    def evaluate_embeddings(self, video_embeds: torch.Tensor, video_ids: Sequence[int], texts: Sequence[str],
                            txt2vid: Sequence[int], vid2txt: Sequence[Sequence[int]],
                            groups: Sequence[str | None] | None = None, batch_size: int = 64) -> dict[str, float]:
        """Metrics of the videos ``video_ids`` (rows of ``video_embeds``); texts of missing videos are left out."""
        position = {v: i for i, v in enumerate(video_ids)}
        keep_t = [t for t, v in enumerate(txt2vid) if v in position]
        text_embeds = self.encode_texts([texts[t] for t in keep_t], batch_size)
        sim = RetrievalModel.similarity(video_embeds, text_embeds)  # [Nt, Nv] float32
        new_t = {t: i for i, t in enumerate(keep_t)}
        t2v = [position[txt2vid[t]] for t in keep_t]
        v2t = [[new_t[t] for t in vid2txt[v] if t in new_t] for v in video_ids]
        sub_groups = [groups[v] for v in video_ids] if groups is not None else None
        return retrieval_eval(sim, t2v, v2t, sub_groups)
