"""Typed training configuration: dataclasses loaded from YAML, with dotted command-line overrides.

    cfg = load_config("shapes_tiny", ["model.img_size=96", "optim.lr=1e-4", "data.world=/data/shapes"])

A config file is a YAML mapping with the sections of :class:`TrainConfig` (``model``, ``teacher``, ``losses``,
``optim``, ``schedule``, ``data``, ``trainer``) plus ``name`` and ``seed``. ``CONFIG`` may be a shipped config
name (``vtr/training/configs/<name>.yaml``, see :func:`list_configs`) or a path. Overrides are ``a.b.c=value``
with ``value`` parsed as YAML (``[0.9, 0.95]``, ``null``, ``true``) and then converted to the field's type, so
``optim.lr=1e-4`` is a float even though YAML 1.1 reads ``1e-4`` as a string. Unknown keys, wrong types and
out-of-range values raise :class:`~vtr.errors.ConfigError` naming the key (and the closest valid key).

Two levels of checking: :func:`load_config` validates the schema and value ranges (every shipped config passes);
:func:`check_runnable` additionally checks what a run needs (training data, teacher weights, existing files).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from vtr.dataclass_yaml import apply_overrides, build, read_yaml, to_dict
from vtr.errors import ConfigError
from vtr.model.losses import LossWeights
from vtr.model.masking import MASK_KINDS

CONFIG_DIR = Path(__file__).parent / "configs"

STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp", "single_device")
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
TEACHER_KINDS = ("clip", "videomamba")
MEDIA = ("auto", "video", "image")
TEXT_POOLS = ("cls", "mean")
FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")


# ---------------------------------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    """The retrieval model: a registered architecture plus :class:`~vtr.model.retrieval.RetrievalConfig` overrides.

    ``None`` keeps the architecture's value. ``vision`` / ``text`` hold VideoMamba / text-encoder config overrides
    (``model.vision.depth=4``). ``frame_independent`` turns the video tower into the frame-mean baseline (same
    weights and width, every frame encoded on its own, no temporal mixing). Initial weights: ``pretrained`` (a vtr
    model directory, an installed model name or an official multimodal checkpoint), ``vision_pretrained`` (a
    stage-1 VideoMamba checkpoint, e.g. the ``vision.pt`` of a ``stage1_masked`` run; ``model.vision.pretrained``
    says the same), ``text_weights`` (``default``: the text encoder's registry default, i.e. the
    packaged MiniLM for ``minilm_l6`` and random init for ``bert_base``; ``random``; or a checkpoint path).
    """

    arch: str = "videomamba_t16_minilm"
    num_frames: int | None = None
    img_size: int | None = None
    embed_dim: int | None = None
    max_txt_l: int | None = None
    temp: float | None = None
    text_pool: str | None = None
    drop_path_rate: float = 0.0
    frame_independent: bool = False
    vision: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    vision_pretrained: str | None = None
    text_weights: str = "default"
    text_grad_checkpointing: bool = False


@dataclass
class TeacherConfig:
    """The frozen teacher of unmasked token alignment (UTA). No ``name``/``config``/``model`` = no teacher.

    ``kind: clip`` (official): ``name`` an open_clip model name (``ViT-B-16`` in the official recipe) or ``config``
    an open_clip model config dict (tests); ``weights``: its weights file (required for a real run;
    ``allow_random`` lets a randomly initialised teacher through, for tests only); ``image_size``: default = the
    student's ``img_size``. ``kind: videomamba``: ``model`` a vtr model directory, an installed model name or a
    stage-1 run's ``vision.pt``; its final tokens are the targets (the student's ``clip_decoder`` projects to the
    teacher's width), and ``attention`` masking samples from the teacher's own saliency (the cosine of its pooled
    feature to each patch token; the log says so). Masks: ``video_mask``/``image_mask`` kind and ratio of the
    student's dropped tokens (official: attention masking, 0.8 for video, 0.5 for images).
    """

    kind: str = "clip"
    model: str | None = None
    name: str | None = None
    config: dict[str, Any] | None = None
    weights: str | None = None
    allow_random: bool = False
    image_size: int | None = None
    quick_gelu: bool = True
    video_mask: str = "attention"
    video_mask_ratio: float = 0.8
    image_mask: str = "attention"
    image_mask_ratio: float = 0.5

    @property
    def enabled(self) -> bool:
        if self.kind == "videomamba":
            return self.model is not None
        return self.name is not None or self.config is not None


@dataclass
class SelfDistillConfig:
    """Self-distillation (VideoMamba paper): the student's final features are aligned (``2 - 2 cos``, weight
    ``losses.distill``) to those of a frozen, smaller VideoMamba, ``model`` (a vtr model directory or installed
    name, e.g. a trained ``shapes_small``), through a learned linear projection when the widths differ."""

    model: str | None = None

    @property
    def enabled(self) -> bool:
        return self.model is not None


@dataclass
class DifferentLR:
    """The official ``optimizer.different_lr``: parameters whose name matches one of the ``module_names`` regexes
    (``re.search``) train with ``lr`` instead of ``optim.lr``. Off in the released recipes; the vtr-shapes configs
    use it to keep the pretrained text tower at a low rate while the from-scratch video tower learns fast."""

    enable: bool = False
    module_names: list[str] = field(default_factory=list)
    lr: float = 1e-5


@dataclass
class OptimConfig:
    """AdamW with the official weight-decay rule (see :func:`vtr.training.optim.official_param_groups`).

    ``lr_batch`` > 0: ``lr`` (and ``different_lr.lr``) are given for a total batch of ``lr_batch`` samples and
    scaled linearly to the run's (``batch_size`` x devices x nodes x ``accumulate_grad_batches``), as the official
    stage 1 does (1.5e-4 per 256); 0: used as given.
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = -1.0  # <= 0: no clipping (official)
    different_lr: DifferentLR = field(default_factory=DifferentLR)
    lr_batch: int = 0


@dataclass
class ScheduleConfig:
    """Cosine schedule with linear warmup, stepped after every optimizer step (official ``cosine``).

    ``lr(step) = lr * max(min_lr_multi, step / warmup)`` during warmup, then
    ``lr * max(min_lr_multi, 0.5 * (1 + cos(pi * progress)))``; ``warmup = warmup_epochs * steps_per_epoch``,
    ``total = epochs * steps_per_epoch`` or ``max_steps`` when > 0 (training then stops there).
    """

    epochs: int = 10
    warmup_epochs: float = 1.0
    min_lr_multi: float = 0.01
    max_steps: int = -1


@dataclass
class DataSource:
    """One annotation file in the official JSON format and the folder its media paths are relative to.

    ``root`` defaults to ``<anno dir>/videos`` when that folder exists (vtr-shapes layout), else the annotation's
    folder. ``media``: ``auto`` detects images (``"image"`` keys or image extensions) vs videos; one file holds
    one media type (split mixed files). A plain string is accepted as ``anno``; a directory string means a
    vtr-shapes world (its ``train.json`` / ``test.json`` is picked by the field it is given to).
    """

    SHORTHAND: ClassVar[str] = "anno"

    anno: str
    root: str | None = None
    media: str = "auto"


@dataclass
class DataConfig:
    """Training / validation data.

    ``world``: a vtr-shapes world folder; fills ``train`` (``train.json``) and ``val`` (``test.json``) when they
    are not given. ``videos``: a folder of videos (searched recursively) for video-only training (``stage1_masked``;
    the captions of ``train`` annotations are ignored there). ``batch_size`` is per device and per media type (one
    media type per step). ``expand_captions``: one sample per caption with per-video ids in VTC (retrieval
    fine-tuning) instead of one sample per entry with a random caption (pretraining). ``hflip``: random horizontal
    flip (official True; turn it off when captions name left/right, as vtr-shapes does). ``val_max_videos`` caps the
    validation set (first N entries).
    """

    world: str | None = None
    videos: str | None = None
    train: list[DataSource] = field(default_factory=list)
    val: DataSource | None = None
    batch_size: int = 32
    val_batch_size: int = 64
    num_workers: int = 2
    persistent_workers: bool = True
    pin_memory: bool = True
    expand_captions: bool = False
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = True
    max_words: int | None = None
    backend: str = "auto"
    val_max_videos: int | None = None


@dataclass
class TrainerConfig:
    """Lightning Trainer settings.

    ``precision: auto`` = ``bf16-mixed`` on CUDA, ``32-true`` on CPU (``bf16-true`` casts the whole model to
    bf16 as the official code does). ``strategy``: ``auto``/``ddp``/``fsdp`` (``ddp_spawn`` for notebooks and
    tests); ``find_unused_parameters`` as the official DDP (True). ``val_every_n_epochs``/``val_check_interval``
    schedule validation (0 / null: at epoch ends only when val data exists). ``checkpoint_every_n_steps``: also
    save ``last.ckpt`` every N optimizer steps (0: epoch ends only). ``num_threads``: torch CPU threads.
    """

    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    val_every_n_epochs: int = 1
    val_check_interval: float | None = None
    checkpoint_every_n_steps: int = 0
    keep_checkpoints: int = 1
    find_unused_parameters: bool = True
    fsdp_sharding: str = "FULL_SHARD"
    num_threads: int | None = None
    progress_bar: bool = True
    deterministic: bool = False


@dataclass
class TrainConfig:
    """A whole training run (see the module doc); ``name`` names the run and the exported model."""

    name: str = "vtr-model"
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    self_distill: SelfDistillConfig = field(default_factory=SelfDistillConfig)
    losses: LossWeights = field(default_factory=lambda: LossWeights(uta=0.0))
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def video_only(self) -> bool:
        """Stage-1 style training: no text loss (``vtc = vtm = mlm = 0``), videos without captions."""
        w = self.losses
        return w.vtc == 0 and w.vtm == 0 and w.mlm == 0


# ---------------------------------------------------------------------------------------------------- load


def list_configs() -> list[str]:
    """Names of the shipped configs (``vtr/training/configs/*.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(config: str | os.PathLike) -> Path:
    """Resolve a shipped config name or a path to a YAML file."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{Path(str(config)).stem}.yaml"
    if not path.suffix and shipped.is_file():
        return shipped
    raise ConfigError(f"no config file {str(config)!r}: pass a YAML path or one of the shipped configs "
                      f"({', '.join(list_configs())})")


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested mapping."""
    cfg = build(TrainConfig, dict(data))
    validate(cfg)
    return cfg


def load_config(config: str | os.PathLike | dict | TrainConfig = "shapes_tiny",
                overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a shipped config name, a YAML path, a mapping or a :class:`TrainConfig`, apply ``overrides``, validate."""
    if isinstance(config, TrainConfig):
        data = to_dict(config)
    elif isinstance(config, dict):
        data = dict(config)
    else:
        data = read_yaml(config_path(config))
    return from_dict(apply_overrides(TrainConfig, data, list(overrides)))


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------------- checks


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Value checks that need no files (ranges, choices, names of registered architectures)."""
    from vtr.model.retrieval import MODEL_CONFIGS

    m = cfg.model
    _check(m.arch in MODEL_CONFIGS, f"model.arch {m.arch!r} is not one of {', '.join(sorted(MODEL_CONFIGS))}")
    for key in ("num_frames", "img_size", "embed_dim", "max_txt_l"):
        value = getattr(m, key)
        _check(value is None or value >= 1, f"model.{key} must be >= 1, got {value}")
    if m.img_size is not None:
        _check(m.img_size % 16 == 0, f"model.img_size must be a multiple of the patch size 16, got {m.img_size}")
    _check(m.max_txt_l is None or m.max_txt_l >= 2, "model.max_txt_l must be >= 2 ([CLS] and [SEP])")
    _check(m.temp is None or 0.0 < m.temp <= 1.0, f"model.temp must be in (0, 1], got {m.temp}")
    _check(m.text_pool is None or m.text_pool in TEXT_POOLS, f"model.text_pool must be one of {TEXT_POOLS}")
    _check(0.0 <= m.drop_path_rate < 1.0, f"model.drop_path_rate must be in [0, 1), got {m.drop_path_rate}")

    t = cfg.teacher
    _check(t.kind in TEACHER_KINDS, f"teacher.kind must be one of {', '.join(TEACHER_KINDS)}, got {t.kind!r}")
    _check(t.kind == "videomamba" or t.model is None,
           "teacher.model names a VideoMamba teacher: set teacher.kind=videomamba (or teacher.name for CLIP)")
    for kind_key, ratio_key in (("video_mask", "video_mask_ratio"), ("image_mask", "image_mask_ratio")):
        kind, ratio = getattr(t, kind_key), getattr(t, ratio_key)
        _check(kind in MASK_KINDS, f"teacher.{kind_key} must be one of {', '.join(MASK_KINDS)}, got {kind!r}")
        _check(0.0 <= ratio < 1.0, f"teacher.{ratio_key} must be in [0, 1), got {ratio}")
    _check(t.image_size is None or t.image_size >= 16, "teacher.image_size must be >= 16")

    w = cfg.losses  # LossWeights checks each weight is a finite number >= 0
    _check(sum(w.as_dict().values()) > 0, "all loss weights are 0: nothing to train")
    _check(w.uta == 0 or t.enabled, "losses.uta > 0 needs a teacher: teacher.name (CLIP, e.g. ViT-B-16) or "
                                    "teacher.kind=videomamba teacher.model=NAME|DIR")
    _check((w.distill > 0) == cfg.self_distill.enabled,
           "self-distillation needs both self_distill.model=NAME|DIR (the smaller VideoMamba) and losses.distill > 0")
    _check(not cfg.video_only or (w.uta > 0 and w.distill == 0),
           "video-only training (vtc = vtm = mlm = 0) trains UTA only: set losses.uta > 0 and a teacher")
    _check(not cfg.video_only or t.video_mask != "none", "stage-1 masked training needs teacher.video_mask != none")
    _check(not (m.frame_independent and (w.distill > 0 or (t.enabled and w.uta > 0))),
           "model.frame_independent (the frame-mean baseline) cannot be combined with UTA or self-distillation")

    o = cfg.optim
    _check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _check(all(0.0 <= b < 1.0 for b in o.betas), f"optim.betas must be in [0, 1), got {list(o.betas)}")
    _check(o.eps > 0, f"optim.eps must be > 0, got {o.eps}")
    _check(o.lr_batch >= 0, f"optim.lr_batch must be >= 0 (0: lr used as given), got {o.lr_batch}")
    _check(o.different_lr.lr > 0, f"optim.different_lr.lr must be > 0, got {o.different_lr.lr}")
    for pattern in o.different_lr.module_names:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"optim.different_lr.module_names: bad regex {pattern!r}: {err}") from None
    _check(not o.different_lr.enable or bool(o.different_lr.module_names),
           "optim.different_lr.enable needs module_names (regexes of parameter names)")

    s = cfg.schedule
    _check(s.epochs >= 1, f"schedule.epochs must be >= 1, got {s.epochs}")
    _check(s.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {s.warmup_epochs}")
    _check(0.0 <= s.min_lr_multi <= 1.0, f"schedule.min_lr_multi must be in [0, 1], got {s.min_lr_multi}")
    _check(s.max_steps == -1 or s.max_steps >= 1, f"schedule.max_steps must be -1 (off) or >= 1, got {s.max_steps}")

    d = cfg.data
    _check(d.batch_size >= 2, f"data.batch_size must be >= 2 (VTM needs a negative in the batch), got {d.batch_size}")
    _check(d.val_batch_size >= 1, f"data.val_batch_size must be >= 1, got {d.val_batch_size}")
    _check(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    lo, hi = d.crop_scale
    _check(0.0 < lo <= hi <= 1.0, f"data.crop_scale must satisfy 0 < min <= max <= 1, got {list(d.crop_scale)}")
    _check(d.backend in ("auto", "decord", "pyav"), f"data.backend must be auto, decord or pyav, got {d.backend!r}")
    _check(d.val_max_videos is None or d.val_max_videos >= 1, "data.val_max_videos must be >= 1 or null")
    for i, src in enumerate(d.train + ([d.val] if d.val is not None else [])):
        _check(src.media in MEDIA, f"data source {i}: media must be one of {', '.join(MEDIA)}, got {src.media!r}")

    tr = cfg.trainer
    _check(tr.strategy in STRATEGIES, f"trainer.strategy must be one of {', '.join(STRATEGIES)}, got {tr.strategy!r}")
    _check(str(tr.precision) in PRECISIONS,
           f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {tr.precision!r}")
    _check(tr.accelerator in ACCELERATORS,
           f"trainer.accelerator must be one of {', '.join(ACCELERATORS)}, got {tr.accelerator!r}")
    _check(tr.devices == "auto" or (isinstance(tr.devices, int) and (tr.devices >= 1 or tr.devices == -1)),
           f"trainer.devices must be 'auto', -1 or a positive integer, got {tr.devices!r}")
    _check(tr.num_nodes >= 1, f"trainer.num_nodes must be >= 1, got {tr.num_nodes}")
    _check(tr.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches must be >= 1")
    _check(tr.log_every_n_steps >= 1, "trainer.log_every_n_steps must be >= 1")
    _check(tr.val_every_n_epochs >= 0, "trainer.val_every_n_epochs must be >= 0 (0: no validation during training)")
    _check(tr.checkpoint_every_n_steps >= 0, "trainer.checkpoint_every_n_steps must be >= 0")
    _check(tr.keep_checkpoints >= 0, "trainer.keep_checkpoints must be >= 0")
    _check(tr.fsdp_sharding in FSDP_SHARDING, f"trainer.fsdp_sharding must be one of {', '.join(FSDP_SHARDING)}")
    _check(tr.num_threads is None or tr.num_threads >= 1, "trainer.num_threads must be >= 1 or null")
    _check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    _check(bool(cfg.name) and "/" not in cfg.name, f"name must be a non-empty name without '/', got {cfg.name!r}")
    return cfg


def resolve_data(cfg: TrainConfig) -> tuple[list[DataSource], DataSource | None]:
    """The training sources and the validation source with ``world`` and directory shorthands expanded."""
    d = cfg.data

    def expand(src: DataSource, split: str) -> DataSource:
        anno = Path(os.path.expanduser(src.anno))
        if anno.is_dir():
            root = src.root or str(anno / "videos")
            return DataSource(str(anno / f"{split}.json"), root, src.media)
        root = src.root
        if root is None:
            videos = anno.parent / "videos"
            root = str(videos if videos.is_dir() else anno.parent)
        return DataSource(str(anno), os.path.expanduser(root), src.media)

    train = [expand(s, "train") for s in d.train]
    val = expand(d.val, "test") if d.val is not None else None
    if d.world is not None:
        world = DataSource(d.world)
        if not train:
            train = [expand(world, "train")]
        if val is None and (Path(os.path.expanduser(d.world)) / "test.json").is_file():
            val = expand(world, "test")
    return train, val


def check_runnable(cfg: TrainConfig) -> TrainConfig:
    """What a run needs beyond :func:`validate`: training data and the files the config names."""
    train, val = resolve_data(cfg)
    videos = cfg.data.videos
    if videos is not None:
        if not cfg.video_only:
            raise ConfigError("data.videos (videos without captions) is for video-only training (stage1_masked); "
                              "a run with text losses needs data.train=ANNOTATION.json or data.world=DIR")
        if not Path(os.path.expanduser(videos)).is_dir():
            raise ConfigError(f"data.videos {videos!r} is not a folder of videos")
    elif not train:
        raise ConfigError("no training data: set data.train=ANNOTATION.json (or a list of {anno, root}) or "
                          "data.world=WORLD_DIR (a vtr-shapes world from `vtr synth`)")
    for src in train + ([val] if val is not None else []):
        if not Path(src.anno).is_file():
            raise ConfigError(f"annotation file {src.anno!r} does not exist")
        if not Path(src.root).is_dir():
            raise ConfigError(f"media root {src.root!r} of {src.anno!r} is not a folder")
    t = cfg.teacher
    if t.enabled and cfg.losses.uta > 0 and t.kind == "clip":
        if t.weights is None and not t.allow_random:
            raise ConfigError("teacher.weights is required for UTA: pass teacher.weights=PATH to the CLIP "
                              f"{t.name or 'teacher'} weights (official: OpenAI CLIP ViT-B/16 visual tower), or "
                              "set losses.uta=0 teacher.name=null to train without a teacher")
        if t.weights is not None and not Path(t.weights).is_file():
            raise ConfigError(f"teacher.weights {t.weights!r} does not exist")
    for key, value in (("model.vision_pretrained", cfg.model.vision_pretrained),
                       ("model.vision.pretrained", cfg.model.vision.get("pretrained"))):
        if value is not None and not Path(value).exists():
            raise ConfigError(f"{key} {value!r} does not exist")
    from vtr.model.registry import resolve_model_path

    for key, value in (("teacher.model", t.model if t.kind == "videomamba" and cfg.losses.uta > 0 else None),
                       ("self_distill.model", cfg.self_distill.model)):
        if value is not None and not Path(value).is_file() and resolve_model_path(value) is None:
            raise ConfigError(f"{key} {value!r} is neither a vtr model directory, an installed model name nor a "
                              "stage-1 vision checkpoint file (vision.pt)")
    return cfg
