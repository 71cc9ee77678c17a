"""``create_model`` (open_clip style), vtr's model directory format, and the data-home model registry.

A vtr model directory holds ``config.json`` (:class:`RetrievalConfig`), ``model.safetensors`` (all weights,
tied ones once) and ``meta.json`` (vtr version, weights sha256, source). ``create_model`` accepts a registered
architecture name, a model directory, or the name of a model imported into the data home.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from vtr.errors import CheckpointError, ConfigError
from vtr.hashing import sha256_file
from vtr.home import data_home
from vtr.model.retrieval import MODEL_CONFIGS, RetrievalConfig, RetrievalModel, build_model, config_for, list_models

log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, META_FILE = "config.json", "model.safetensors", "meta.json"
REGISTRY_FILE = "models.json"
HEAD_KEYS = ("vision_proj.weight", "vision_proj.bias", "text_proj.weight", "text_proj.bias", "temp",
             "itm_head.weight", "itm_head.bias")


# ---------------------------------------------------------------------------------------------- model directories


def is_model_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def save_model_dir(model: RetrievalModel, path: str | os.PathLike, source: str = "vtr", **meta) -> Path:
    """Write ``model`` as a vtr model directory (atomically: a temp folder renamed into place)."""
    from safetensors.torch import save_model

    import vtr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / CONFIG_FILE).write_text(json.dumps(model.resolved_config().to_dict(), indent=2))
        save_model(model, str(tmp / WEIGHTS_FILE))
        info = {"vtr_version": vtr.__version__, "weights_sha256": sha256_file(tmp / WEIGHTS_FILE), "source": source,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "parameters": count_parameters(model), **meta}
        (tmp / META_FILE).write_text(json.dumps(info, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_meta(path: str | os.PathLike) -> dict:
    p = Path(path) / META_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def load_model_dir(path: str | os.PathLike, device: str | torch.device | None = None) -> RetrievalModel:
    """Build the model a vtr model directory describes and load its weights (strict)."""
    from safetensors.torch import load_model

    path = Path(path)
    if not is_model_dir(path):
        raise ConfigError(f"{str(path)!r} is not a vtr model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg = RetrievalConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    model = build_model(cfg, text_pretrained=False)
    try:
        missing, unexpected = load_model(model, str(path / WEIGHTS_FILE), strict=False)
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read weights {str(path / WEIGHTS_FILE)!r}: {err}") from err
    missing = [k for k in missing if not _tied(k)]
    if missing or unexpected:
        raise CheckpointError(f"weights in {str(path)!r} do not match its config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    model.weights_sha256 = read_meta(path).get("weights_sha256")
    model.source_name, model.source_path = path.name, str(path.resolve())  # what reports name (e.g. vtr eval)
    return model.to(device) if device is not None else model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (a tied tensor counted once)."""
    return sum(p.numel() for p in model.parameters())


def _tied(key: str) -> bool:
    """The MLM decoder weight: tied to the word embeddings (one tensor), so never missing on its own."""
    from vtr.encoders.bert_keys import DECODER_KEY

    return key == f"text_encoder.{DECODER_KEY}"


# ---------------------------------------------------------------------------------------------- data-home registry


def models_root(home: str | os.PathLike | None = None) -> Path:
    root = data_home(home) / "models"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _read_registry(home) -> dict:
    p = models_root(home) / REGISTRY_FILE
    return json.loads(p.read_text()) if p.is_file() else {"default": None, "models": {}}


def _write_registry(home, reg: dict) -> None:
    p = models_root(home) / REGISTRY_FILE
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(reg, indent=2))
    os.replace(tmp, p)


def register_model(name: str, path: str | os.PathLike, home=None, make_default: bool | None = None) -> None:
    """Record model directory ``path`` under ``name`` in the data home (first one becomes the default)."""
    reg = _read_registry(home)
    reg["models"][name] = str(Path(path).resolve())
    if make_default or (make_default is None and not reg.get("default")):
        reg["default"] = name
    _write_registry(home, reg)


def installed_models(home=None) -> dict[str, str]:
    """Imported/trained models in the data home: name -> model directory."""
    return dict(_read_registry(home)["models"])


def default_model(home=None) -> str | None:
    return _read_registry(home).get("default")


def set_default_model(name: str, home=None) -> None:
    reg = _read_registry(home)
    if name not in reg["models"]:
        raise ConfigError(f"no model named {name!r} in {models_root(home)}; installed: "
                          f"{', '.join(sorted(reg['models'])) or 'none'} (vtr models import FILE)")
    reg["default"] = name
    _write_registry(home, reg)


def resolve_model_path(name_or_path: str | os.PathLike | None, home=None) -> Path | None:
    """A model directory for ``name_or_path`` (a directory, an installed name, or None = the default)."""
    if name_or_path is None:
        name_or_path = default_model(home)
        if name_or_path is None:
            return None
    if is_model_dir(name_or_path):
        return Path(name_or_path)
    installed = installed_models(home)
    if str(name_or_path) in installed:
        return Path(installed[str(name_or_path)])
    return None


# ---------------------------------------------------------------------------------------------- create_model


def create_model(
    name: str | os.PathLike | None = None,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    home: str | os.PathLike | None = None,
    **overrides,
) -> RetrievalModel:
    """Build a retrieval model, open_clip style.

    ``name``: a vtr model directory, a model imported into the data home (``vtr models list``), or a
    registered architecture (``videomamba_m16_umt``, ``videomamba_t16_minilm``, ``videomamba_s16_minilm``);
    None = the data home's default model. ``pretrained``: weights for an architecture name — a vtr model
    directory or an official OpenGVLab checkpoint file. ``overrides``: :class:`RetrievalConfig` fields.
    """
    path = resolve_model_path(name, home)
    if path is not None and not overrides:
        model = load_model_dir(path, device)
        if name is None or not is_model_dir(name):  # the default or an installed model: its registered name
            model.source_name = str(name) if name is not None else default_model(home) or path.name
        return model
    if name is None:
        raise ConfigError("no model given and no default model in the data home: pass --model NAME|DIR, or "
                          "import one with `vtr models import FILE` (see README: Official weights)")
    if str(name) not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model {str(name)!r}: not a model directory, not installed in "
                          f"{models_root(home)}, and not one of {', '.join(list_models())}")
    cfg = config_for(str(name), **overrides)
    if pretrained is not None and is_model_dir(pretrained):
        return load_model_dir(pretrained, device)
    model = build_model(cfg, text_pretrained=None if pretrained is None else False)
    if pretrained is not None:
        load_official_weights(model, pretrained)
    return model.to(device) if device is not None else model


# ---------------------------------------------------------------------------------------------- official checkpoints


def load_official_weights(model: RetrievalModel, checkpoint: str | os.PathLike | dict) -> dict:
    """Fill ``model`` from an official multimodal checkpoint; every model key must be filled.

    Accepts ``{"model": sd}`` or bare, bf16 or fp32, ``text_encoder.bert.*`` (pretraining) or ``text_encoder.*``
    (retrieval) text keys; ``text_encoder.cls.*`` fills the MLM head when the model has one; ``clip_teacher.*``
    and optimizer state are ignored. Returns a report dict; raises :class:`CheckpointError` naming what is wrong.
    """
    from vtr.encoders.bert import load_text_state_dict
    from vtr.encoders.checkpoint import load_video_encoder, read_checkpoint

    sd = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else dict(checkpoint)
    if not any(k.startswith("vision_encoder.") for k in sd):
        raise CheckpointError("not a VideoMamba multimodal checkpoint: no vision_encoder.* keys (a stage-1 vision "
                              "checkpoint loads with create_video_encoder(name, pretrained=FILE))")
    if not any(k.startswith("text_encoder.") for k in sd):
        raise CheckpointError("checkpoint has vision weights but no text_encoder.* keys: it is not a multimodal "
                              "retrieval checkpoint")
    missing_heads = [k for k in HEAD_KEYS if k not in sd]
    if missing_heads:
        raise CheckpointError(f"checkpoint lacks the retrieval heads {missing_heads}: is the file complete?")
    vision = load_video_encoder(model.vision_encoder, sd, strict=True)
    if vision.left_at_init:
        raise CheckpointError(f"checkpoint lacks vision keys {vision.left_at_init[:4]} of the multimodal model")
    text = load_text_state_dict(model.text_encoder, {k: v for k, v in sd.items() if k.startswith("text_encoder.")})
    text_missing = [k for k in text.missing_keys if not (k.startswith("cls.") and model.text_encoder.has_mlm_head)]
    if text_missing:
        raise CheckpointError(f"checkpoint lacks {len(text_missing)} text encoder keys, e.g. {text_missing[:4]}")
    mlm_filled = model.text_encoder.has_mlm_head and not any(k.startswith("cls.") for k in text.missing_keys)
    with torch.no_grad():
        for key in HEAD_KEYS:
            target = model.get_parameter(key)
            if tuple(sd[key].shape) != tuple(target.shape):
                raise CheckpointError(f"{key}: checkpoint {tuple(sd[key].shape)} vs model {tuple(target.shape)}")
            target.copy_(sd[key].to(target.dtype))
    ignored = sorted({k.split(".")[0] for k in sd if not k.startswith(("vision_encoder.", "text_encoder."))
                      and k not in HEAD_KEYS})
    return {"vision": vision.summary(), "text_unexpected": text.unexpected_keys[:10], "mlm_head": mlm_filled,
            "mlm_decoder_untied": _untied(model), "ignored_prefixes": ignored, "tensors": len(sd)}


def _untied(model: RetrievalModel) -> bool:
    """The text encoder's MLM decoder has its own matrix (the checkpoint's differed from the word embeddings)."""
    te = model.text_encoder
    return bool(te.has_mlm_head and te.cls.predictions.decoder.weight is not te.embeddings.word_embeddings.weight)


def mlm_decoder_differs(sd: dict) -> bool:
    """True when a checkpoint's MLM decoder weight is not its word-embedding matrix (they are tied in BERT)."""
    from vtr.encoders.bert_keys import DECODER_KEY, WORD_EMBEDDINGS_KEY, normalize_text_keys

    text = normalize_text_keys({k: v for k, v in sd.items() if k.startswith("text_encoder.")})
    word, decoder = text.get(WORD_EMBEDDINGS_KEY), text.get(DECODER_KEY)
    if word is None or decoder is None:
        return False
    return tuple(word.shape) != tuple(decoder.shape) or not torch.equal(decoder.to(word.dtype), word)


def import_official_checkpoint(
    file: str | os.PathLike, name: str | None = None, home: str | os.PathLike | None = None,
    make_default: bool | None = None,
) -> dict:
    """``vtr models import``: validate an official checkpoint, convert it to a model directory, register it.

    Nothing is registered unless every model key was filled. Returns a summary (name, path, sha256, report).
    """
    from vtr.encoders.checkpoint import read_checkpoint

    file = Path(file)
    sd = read_checkpoint(file)
    frames = sd.get("vision_encoder.temporal_pos_embedding")
    if frames is None:
        raise CheckpointError(f"{file.name}: no vision_encoder.temporal_pos_embedding: not a VideoMamba "
                              "multimodal checkpoint")
    has_mlm = any(k.startswith("text_encoder.cls.predictions") for k in sd)
    # A model directory ties the MLM decoder to the word embeddings; a checkpoint whose two matrices differ
    # (fine-tuned or converted) is imported without the head: the word embeddings (what retrieval uses) come
    # from the embeddings key, as in the official zero-shot model, and the report says the head was dropped.
    dropped = has_mlm and mlm_decoder_differs(sd)
    if dropped:
        log.warning("%s: the MLM decoder weight differs from the word embeddings; importing without the MLM head "
                    "(retrieval does not use it; the word embeddings come from the embeddings key)", file.name)
    cfg = config_for("videomamba_m16_umt", num_frames=int(frames.shape[1]), mlm_head=has_mlm and not dropped)
    name = name or file.name.removesuffix(".pth").removesuffix(".pt").removesuffix(".safetensors")
    model = build_model(cfg, text_pretrained=False)
    report = load_official_weights(model, sd)
    report["mlm_head_dropped"] = "the MLM decoder weight differs from the word embeddings" if dropped else None
    del sd
    weights_sha = sha256_file(file)
    out = save_model_dir(model, models_root(home) / name, source=str(file.resolve()), source_sha256=weights_sha)
    register_model(name, out, home, make_default=make_default)
    return {"name": name, "path": str(out), "source_sha256": weights_sha, "num_frames": cfg.num_frames,
            "parameters": count_parameters(model), "report": report}
