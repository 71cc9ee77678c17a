"""``RetrievalLitModule``: the VideoMamba/UMT training objectives in Lightning hooks.

The student and its teachers are built by :mod:`vtr.training.build`; validation metrics are
:func:`vtr.evaluation.metrics.retrieval_eval` (the code path of ``vtr eval``).

* losses: :meth:`~vtr.model.retrieval.RetrievalModel.training_losses` (VTC over all ranks, VTM with hard negatives,
  MLM, UTA with a frozen CLIP or VideoMamba teacher under attention masking, self-distillation to a frozen smaller
  VideoMamba; temperature clamped every step); video-only configs (``stage1_masked``: vtc = vtm = mlm = 0) train
  the video tower with UTA alone (UMT stage 1);
* optimizer: AdamW on :func:`~vtr.training.optim.official_param_groups` — the official weight-decay rule;
* schedule: :class:`~vtr.training.optim.CosineWarmup` (official ``get_cosine_schedule_with_warmup`` with
  ``min_lr_multi``) in a ``LambdaLR`` stepped after every optimizer step;
* teachers: frozen, kept out of checkpoints (``teacher.*`` / ``distill_teacher.*`` keys are dropped on save and
  refilled on load);
* validation: R@1/5/10, MdR and MnR both ways (dual encoder: :meth:`RetrievalModel.similarity`) on the held-out
  split (deterministic tie rule; unrounded), so ``vtr eval`` of the exported model reports the same numbers; and
  R@1 on the temporal hard-negative subset of vtr-shapes (each text of a clip in a ``temporal_group`` ranked
  against the clips of its group only; see :func:`vtr.evaluation.metrics.temporal_metrics`);
* reproducibility: the global RNG is reseeded at every training batch from ``(seed, global batch number, rank)``,
  so a resumed run repeats the uninterrupted run's dropout, MLM masks and hard negatives exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from vtr.compat import ensure_torchvision
from vtr.errors import ConfigError
from vtr.evaluation.metrics import decoded_subset, retrieval_eval
from vtr.model import losses as Lo
from vtr.model.masking import encode_teacher, gather_visible
from vtr.model.retrieval import RetrievalModel, VideoFeatures
from vtr.training.build import build_distill_teacher, build_retrieval_model, build_teacher
from vtr.training.config import TrainConfig, to_dict
from vtr.training.optim import CosineWarmup, decays, official_param_groups

ensure_torchvision()
import lightning as L  # noqa: E402  (after the torchvision shim)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- module


class RetrievalLitModule(L.LightningModule):
    """Trains a :class:`RetrievalModel` with the official stage-2 recipe (see the module doc).

    ``model`` / ``teacher`` may be passed in (tests); by default they are built from ``cfg``.
    """

    def __init__(self, cfg: TrainConfig, model: RetrievalModel | None = None, teacher: nn.Module | None = None,
                 distill_teacher: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg)})
        self.model = model if model is not None else build_retrieval_model(cfg)
        self.teacher = teacher if teacher is not None else build_teacher(cfg, self.model)
        self.distill_teacher = (distill_teacher if distill_teacher is not None
                                else build_distill_teacher(cfg, self.model))
        w = cfg.losses
        self.loss_weights = Lo.LossWeights(vtc=w.vtc, vtm=w.vtm, mlm=w.mlm,
                                           uta=w.uta if self.teacher is not None else 0.0,
                                           distill=w.distill if self.distill_teacher is not None else 0.0)
        # self-distillation: the student's final tokens projected to the teacher's width (trained, exported no)
        self.distill_proj: nn.Module | None = None
        if self.distill_teacher is not None:
            width, target = self.model.vision_encoder.cfg.embed_dim, self.distill_teacher.output_dim
            self.distill_proj = nn.Linear(width, target) if width != target else nn.Identity()
        if self.cfg.video_only and self.teacher is None:
            raise ConfigError("video-only (stage-1) training needs a teacher: teacher.kind=videomamba "
                              "teacher.model=NAME|DIR, or teacher.name=ViT-B-16 teacher.weights=FILE")
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

    _FROZEN = ("teacher.", "distill_teacher.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen teachers (they are rebuilt from their files); record the counters."""
        sd = checkpoint.get("state_dict", {})
        for key in [k for k in sd if k.startswith(self._FROZEN)]:
            del sd[key]
        checkpoint["vtr"] = {"train_samples": self.train_samples, "train_time_s": self.train_time_s,
                             "retrieval_config": self.model.cfg.to_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sd = checkpoint.setdefault("state_dict", {})
        for prefix, frozen in (("teacher.", self.teacher), ("distill_teacher.", self.distill_teacher)):
            if frozen is not None:
                for key, value in frozen.state_dict().items():
                    sd.setdefault(prefix + key, value)
        info = checkpoint.get("vtr", {})
        self.train_samples = int(info.get("train_samples", 0))
        self.train_time_s = float(info.get("train_time_s", 0.0))

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        o, s = self.cfg.optim, self.cfg.schedule
        diff = o.different_lr
        scale = self.lr_scale()
        groups = official_param_groups(self._trained_parameters(), o.weight_decay, self._decay_by_name,
                                       different_lr_names=diff.module_names if diff.enable else (),
                                       different_lr=diff.lr * scale if diff.enable else None)
        optimizer = torch.optim.AdamW(groups, lr=o.lr * scale, betas=tuple(o.betas), eps=o.eps,
                                      weight_decay=o.weight_decay)
        steps_per_epoch = self._steps_per_epoch()
        total = s.max_steps if s.max_steps > 0 else s.epochs * steps_per_epoch
        schedule = CosineWarmup(s.warmup_epochs * steps_per_epoch, total, s.min_lr_multi)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def lr_scale(self) -> float:
        """``total batch / optim.lr_batch`` when ``optim.lr_batch`` > 0 (linear scaling), else 1."""
        o = self.cfg.optim
        if o.lr_batch <= 0:
            return 1.0
        trainer = self._trainer
        world = trainer.world_size if trainer is not None else 1
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        total = self.cfg.data.batch_size * world * accumulate
        log.info("lr %.3g per %d samples -> %.3g at a total batch of %d", o.lr, o.lr_batch,
                 o.lr * total / o.lr_batch, total)
        return total / o.lr_batch

    def _trained_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """The student's parameters that the losses reach (video tower only in video-only training), plus the
        self-distillation projection."""
        named = list(self.model.named_parameters())
        if self.cfg.video_only:
            named = [(n, p) for n, p in named if n.startswith("vision_encoder.")]
        if self.distill_proj is not None:
            named += [(f"distill_proj.{n}", p) for n, p in self.distill_proj.named_parameters()]
            self._decay_by_name.update({n: decays(n, p) for n, p in named if n.startswith("distill_proj.")})
        return named

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

    def distill_loss(self, video: torch.Tensor, vid: VideoFeatures, mask: torch.Tensor | None) -> torch.Tensor:
        """Self-distillation: ``2 - 2 cos`` between the student's final patch tokens (projected) and the frozen
        smaller VideoMamba's, at the student's visible positions (all of them in an unmasked forward)."""
        target = self.distill_teacher(video).tokens[:, 1:]  # [B, T*P, Ct], the teacher's final-norm patch tokens
        if mask is not None:
            target = gather_visible(target, mask[:, 1:])
        return Lo.uta_loss(self.distill_proj(vid.tokens.float()), target)

    def stage1_losses(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """UMT stage 1: the teacher picks the visible tokens, the student's ``clip_decoder`` output at those
        positions is aligned to the teacher's tokens (``2 - 2 cos``); no text."""
        kind, ratio = self.masking_for(video)
        mask, targets = encode_teacher(self.teacher, video, kind, ratio)
        aligned = self.model.vision_encoder(video, mask=mask, keep_temporal=False).aligned
        uta = Lo.uta_loss(aligned.float(), targets.float())
        return {"uta": uta, "loss": self.loss_weights.uta * uta}

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:  # every sample of the batch failed to decode (single-process only; see data.py)
            return None
        video = batch["video"]
        if self.cfg.video_only:
            losses = self.stage1_losses(video)
        else:
            kind, ratio = self.masking_for(video)
            distill = self.distill_loss if self.distill_teacher is not None else None
            losses = self.model.training_losses(video, batch["input_ids"], batch["attention_mask"],
                                                idx=batch["idx"], weights=self.loss_weights, teacher=self.teacher,
                                                mask_kind=kind, mask_ratio=ratio, distill=distill)
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
        if not self.cfg.video_only:
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
        keep_t, t2v, v2t = decoded_subset(txt2vid, vid2txt, video_ids)
        text_embeds = self.encode_texts([texts[t] for t in keep_t], batch_size)
        sim = RetrievalModel.similarity(video_embeds, text_embeds)  # [Nt, Nv] float32
        sub_groups = [groups[v] for v in video_ids] if groups is not None else None
        return retrieval_eval(sim, t2v, v2t, sub_groups)
