"""``train()``: one training run end to end (``vtr train`` and the demo call it).

    summary = train("shapes_tiny", ["data.world=/data/shapes"], name="shapes-tiny")

Layout of a run directory (``out``, default ``<home>/runs/<name>``)::

    config.yaml                 the resolved config
    checkpoints/                Lightning checkpoints: last.ckpt (+ the latest epoch/step ones), resumable
    logs/version_N/metrics.csv  logged values (losses, lr, temperature, validation metrics); one per run/resume
    tb/                         TensorBoard logs, if tensorboard is installed
    summary.json                what :func:`train` returns

The final model is exported to the data home as a vtr model directory (``<home>/models/<name>``) and registered
under ``name`` (``vtr models list``; ``create_model(name)`` loads it), with the training config and final metrics
in its ``meta.json``. A video-only run (``stage1_masked``) writes ``vision.pt`` in the run directory instead (the
video tower and its config; ``model.vision_pretrained`` of a stage-2 config and ``teacher.model`` load it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from vtr.compat import ensure_torchvision
from vtr.errors import ConfigError
from vtr.home import data_home
from vtr.model.registry import count_parameters
from vtr.runtime import set_offline
from vtr.training.config import TrainConfig, check_runnable, load_config, save_config, to_dict

log = logging.getLogger(__name__)


def _precision(cfg: TrainConfig, accelerator: str) -> str:
    p = str(cfg.trainer.precision)
    if p == "auto":
        return "bf16-mixed" if accelerator in ("gpu", "cuda") else "32-true"
    return {"32": "32-true"}.get(p, p)


def _accelerator(cfg: TrainConfig) -> str:
    a = cfg.trainer.accelerator
    if a == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if a == "cuda" else a


def _strategy(cfg: TrainConfig):
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    tr = cfg.trainer
    if tr.strategy in ("ddp", "ddp_spawn"):
        return DDPStrategy(start_method="spawn" if tr.strategy == "ddp_spawn" else "popen",
                           find_unused_parameters=tr.find_unused_parameters)
    if tr.strategy == "fsdp":
        from vtr.encoders.bert import FusionLayer
        from vtr.encoders.videomamba import Block

        text_layer = _text_layer_class()
        policy = {Block, FusionLayer} | ({text_layer} if text_layer is not None else set())
        return FSDPStrategy(auto_wrap_policy=policy, sharding_strategy=tr.fsdp_sharding, use_orig_params=True,
                            state_dict_type="full")
    return tr.strategy


def _text_layer_class():
    try:
        from transformers.models.bert.modeling_bert import BertLayer

        return BertLayer
    except ImportError:  # pragma: no cover
        return None


def _stderr_progress_bar():
    """Lightning's TQDM progress bar, drawn on stderr (Lightning's own writes to stdout, which --json keeps clean)."""
    import contextlib
    import sys

    from lightning.pytorch.callbacks import TQDMProgressBar

    class StderrProgressBar(TQDMProgressBar):
        def _on_stderr(self, make):
            with contextlib.redirect_stdout(sys.stderr):
                return make()

        def init_sanity_tqdm(self):
            return self._on_stderr(super().init_sanity_tqdm)

        def init_train_tqdm(self):
            return self._on_stderr(super().init_train_tqdm)

        def init_predict_tqdm(self):
            return self._on_stderr(super().init_predict_tqdm)

        def init_validation_tqdm(self):
            return self._on_stderr(super().init_validation_tqdm)

        def init_test_tqdm(self):
            return self._on_stderr(super().init_test_tqdm)

    return StderrProgressBar()


def resolve_resume(resume: str | os.PathLike | None, run_dir: Path) -> str | None:
    """``"last"`` -> ``<run>/checkpoints/last.ckpt``; a path is checked for existence."""
    if resume is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if str(resume) == "last" else Path(resume)
    if not path.is_file():
        raise ConfigError(f"no checkpoint to resume from at {str(path)!r}"
                          + (" (no earlier run with this name/--out)" if str(resume) == "last" else ""))
    return str(path)


def build_trainer(cfg: TrainConfig, run_dir: Path, callbacks: list | None = None, max_steps: int | None = None,
                  **extra):
    """A Lightning Trainer for ``cfg`` (loggers, checkpointing, strategy, precision, validation schedule)."""
    ensure_torchvision()
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    tr, s = cfg.trainer, cfg.schedule
    accelerator = _accelerator(cfg)
    loggers = [CSVLogger(str(run_dir), name="logs")]  # logs/version_N: one per run or resume
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(run_dir), name="tb"))
    except ImportError:
        pass
    ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=tr.keep_checkpoints,
                           every_n_train_steps=tr.checkpoint_every_n_steps or None,
                           filename="{epoch}-{step}")
    from lightning.pytorch.callbacks import ModelSummary

    # plain ModelSummary logs to stderr (the rich one Lightning picks by default prints to stdout)
    cbs = [ckpt, ModelSummary(max_depth=1), *(callbacks or [])]
    if tr.progress_bar:
        cbs.append(_stderr_progress_bar())
    steps = max_steps if max_steps is not None else s.max_steps
    val_every = tr.val_every_n_epochs
    validate = val_every > 0 or tr.val_check_interval is not None
    kwargs: dict[str, Any] = dict(
        accelerator=accelerator, devices=tr.devices, num_nodes=tr.num_nodes, strategy=_strategy(cfg),
        precision=_precision(cfg, accelerator), max_epochs=-1 if steps and steps > 0 else s.epochs,
        max_steps=steps if steps and steps > 0 else -1, accumulate_grad_batches=tr.accumulate_grad_batches,
        gradient_clip_val=cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else None,
        log_every_n_steps=tr.log_every_n_steps, logger=loggers, callbacks=cbs, default_root_dir=str(run_dir),
        enable_progress_bar=tr.progress_bar, num_sanity_val_steps=0, use_distributed_sampler=False,
        # no validation during training: an epoch interval never reached (the final trainer.validate still runs)
        check_val_every_n_epoch=val_every if validate and val_every > 0 else 1 << 30,
        deterministic=tr.deterministic,
    )
    if tr.val_check_interval is not None:
        kwargs["val_check_interval"] = (int(tr.val_check_interval) if tr.val_check_interval >= 1
                                        else float(tr.val_check_interval))
        if val_every == 0:
            kwargs["check_val_every_n_epoch"] = None
    kwargs.update(extra)
    return L.Trainer(**kwargs)


def export_model(model, name: str, home: str | os.PathLike | None = None, make_default: bool | None = None,
                 **meta) -> Path:
    """Write ``model`` to ``<home>/models/<name>`` (vtr model directory) and register it under ``name``."""
    from vtr.model.registry import models_root, register_model, save_model_dir

    path = save_model_dir(model.float().eval(), models_root(home) / name, source="vtr train", **meta)
    register_model(name, path, home, make_default=make_default)
    return path


def _model_from_checkpoint(cfg: TrainConfig, ckpt_path: str):
    """The student with the weights of a Lightning checkpoint (used after FSDP, whose live module is sharded)."""
    from vtr.training.build import build_retrieval_model

    model = build_retrieval_model(cfg)
    sd = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}, strict=False)
    return model


def train(config: str | os.PathLike | dict | TrainConfig = "shapes_tiny", overrides: list[str] | tuple = (),
          resume: str | os.PathLike | None = None, name: str | None = None, home: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, export: bool = True, callbacks: list | None = None,
          trainer_kwargs: dict | None = None) -> dict[str, Any]:
    """Train a retrieval model; return a summary (final metrics, paths, wall time, samples/s).

    ``config``: a shipped config name, a YAML path, a mapping or a :class:`TrainConfig`; ``overrides``:
    ``key.sub=value`` strings. ``resume``: a checkpoint path or ``"last"`` (the run directory's last.ckpt).
    ``name``: run and model name (default: the config's ``name``). ``out``: run directory (default
    ``<home>/runs/<name>``). ``export``: write and register the final model in the data home (rank 0).
    """
    set_offline()
    cfg = load_config(config, list(overrides))
    if name:
        cfg.name = name
    check_runnable(cfg)
    ensure_torchvision()
    import lightning as L

    from vtr.training.data import RetrievalDataModule
    from vtr.training.module import RetrievalLitModule

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    run_dir = Path(out) if out is not None else data_home(home) / "runs" / cfg.name
    run_dir = run_dir.expanduser().resolve()
    ckpt_path = resolve_resume(resume, run_dir)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    t0 = time.perf_counter()
    module = RetrievalLitModule(cfg)
    rc = module.model.cfg
    dm = RetrievalDataModule(cfg, num_frames=rc.num_frames, img_size=rc.img_size, max_txt_l=rc.max_txt_l)
    trainer = build_trainer(cfg, run_dir, callbacks=callbacks, **(trainer_kwargs or {}))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    fit_s = time.perf_counter() - t0

    metrics = dict(module.last_metrics)
    if dm.val_source is not None and module.last_metrics_step != trainer.global_step:
        trainer.validate(module, datamodule=dm, verbose=False)
        metrics = dict(module.last_metrics)
    wall_s = time.perf_counter() - t0
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not last_ckpt.is_file() and trainer.global_step > 0:
        trainer.save_checkpoint(str(last_ckpt))
    summary: dict[str, Any] = {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "checkpoint": str(last_ckpt) if last_ckpt.is_file() else None,
        "model_dir": None,
        "metrics": metrics,
        "global_step": int(trainer.global_step),
        "epoch": int(trainer.current_epoch),
        "train_samples": int(module.train_samples),
        "train_time_s": round(module.train_time_s, 3),
        "samples_per_s": round(module.train_samples / module.train_time_s, 3) if module.train_time_s else None,
        "fit_s": round(fit_s, 3),
        "wall_s": round(wall_s, 3),
        "world_size": int(trainer.world_size),
        "parameters": count_parameters(module.model),
        "resumed_from": ckpt_path,
    }
    if trainer.is_global_zero and cfg.video_only:
        # stage 1 trains the video tower only: its output is a vision checkpoint, not a retrieval model
        from vtr.model.teachers import save_vision_checkpoint

        model = module.model
        if cfg.trainer.strategy == "fsdp":
            model = _model_from_checkpoint(cfg, str(last_ckpt))
        summary["vision_checkpoint"] = str(save_vision_checkpoint(model.vision_encoder, run_dir / "vision.pt"))
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    elif trainer.is_global_zero:
        if export:
            model = module.model
            if cfg.trainer.strategy == "fsdp":
                model = _model_from_checkpoint(cfg, str(last_ckpt))
            path = export_model(model, cfg.name, home, training={"config": to_dict(cfg), "metrics": metrics,
                                                                  "global_step": summary["global_step"],
                                                                  "run_dir": str(run_dir)})
            summary["model_dir"] = str(path)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
