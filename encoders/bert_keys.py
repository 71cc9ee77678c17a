"""Official checkpoint key forms of the BERT text tower -> this encoder's names, and loading them.

The word embeddings always come from ``embeddings.word_embeddings.weight`` (as in the official model); the MLM
decoder (``cls.predictions.decoder.weight``, :data:`DECODER_KEY`) is tied to them unless a checkpoint's two
matrices differ, when the head keeps its own copy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn as nn

from vtr.errors import CheckpointError

if TYPE_CHECKING:
    from vtr.encoders.bert import TextEncoder

log = logging.getLogger(__name__)

WORD_EMBEDDINGS_KEY = "embeddings.word_embeddings.weight"
DECODER_KEY = "cls.predictions.decoder.weight"  # tied to WORD_EMBEDDINGS_KEY in a model (one tensor)

__all__ = ["DECODER_KEY", "TextLoadResult", "WORD_EMBEDDINGS_KEY", "load_text_state_dict", "normalize_text_keys",
           "read_text_weights"]


class TextLoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


# keys of BERT checkpoints that this encoder has no use for (loaded silently as nothing)
_IGNORED_PREFIXES = ("pooler.", "cls.seq_relationship.", "embeddings.position_ids")
# tied pairs: a key counts as provided when its partner is
_TIED = {
    DECODER_KEY: WORD_EMBEDDINGS_KEY,
    "cls.predictions.decoder.bias": "cls.predictions.bias",
    "cls.predictions.bias": "cls.predictions.decoder.bias",
}


def normalize_text_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official/HF key forms -> this encoder's flat names.

    Accepts ``text_encoder.bert.X``, ``text_encoder.X``, ``bert.X`` or bare ``X`` (plus a ``module.`` DDP prefix);
    when any key starts with ``text_encoder.`` only those keys are taken (the rest of a full model checkpoint is
    dropped). Old-style ``LayerNorm.gamma``/``beta`` become ``weight``/``bias``.
    """
    items = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}
    if any(k.startswith("text_encoder.") for k in items):
        items = {k[len("text_encoder.") :]: v for k, v in items.items() if k.startswith("text_encoder.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in items.items():
        if key.startswith("bert."):
            key = key[len("bert.") :]
        if key.endswith("LayerNorm.gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith("LayerNorm.beta"):
            key = key[: -len("beta")] + "bias"
        out[key] = value
    return out


def load_text_state_dict(model: TextEncoder, sd: Mapping[str, torch.Tensor], strict: bool = False) -> TextLoadResult:
    """Load official-form text weights into ``model``; return the missing and unexpected keys.

    ``cls.predictions.*`` goes to the MLM head when the model has one and is ignored otherwise; ``pooler.*``,
    ``cls.seq_relationship.*`` and ``embeddings.position_ids`` are ignored. Tensors are cast to the model's
    dtype. A shape mismatch raises :class:`CheckpointError`; so do missing/unexpected keys when ``strict``.
    """
    sd = normalize_text_keys(sd)
    own = model.state_dict()
    provided: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in sd.items():
        if key.startswith(_IGNORED_PREFIXES) or (key.startswith("cls.") and model.cls is None):
            continue
        if key not in own:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"text weight {key!r} has shape {tuple(value.shape)} but the model expects {tuple(own[key].shape)}: "
                f"the checkpoint is for a different text encoder (model: {model.config.name}, "
                f"hidden {model.hidden_size}, encoder_width {model.encoder_width})"
            )
        provided[key] = value
    _untie_differing_decoder(model, provided)
    missing = [k for k in own if k not in provided and _TIED.get(k) not in provided]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"text weights do not match the model: {len(missing)} missing ({_summarize(missing)}), "
            f"{len(unexpected)} unexpected ({_summarize(unexpected)})"
        )
    result = model.load_state_dict(provided, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return TextLoadResult(missing, unexpected)


_WORD, _DECODER = WORD_EMBEDDINGS_KEY, DECODER_KEY


def _untie_differing_decoder(model: TextEncoder, provided: dict[str, torch.Tensor]) -> bool:
    """The word embeddings always come from ``embeddings.word_embeddings.weight`` (as the official model).

    The MLM decoder is tied to them (one tensor), so loading both keys would let the decoder's values win.
    When the checkpoint's two matrices are equal the decoder key is dropped; when they differ the head gets
    its own decoder matrix (untied) holding the checkpoint's decoder values. Returns True when it was untied.
    """
    if model.cls is None or _WORD not in provided or _DECODER not in provided:
        return False
    decoder = provided.pop(_DECODER)
    if torch.equal(decoder.to(provided[_WORD].dtype), provided[_WORD]):
        return False
    head = model.cls.predictions.decoder
    head.weight = nn.Parameter(decoder.detach().to(head.weight.device, head.weight.dtype).clone(),
                               requires_grad=head.weight.requires_grad)
    log.warning("text encoder: the checkpoint's MLM decoder weight differs from its word embeddings; the word "
                "embeddings come from %s and the MLM head keeps its own (untied) decoder", _WORD)
    return True


def _summarize(keys: list[str], limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "") if keys else "none"


def read_text_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file, or from a transformers folder (model.safetensors / pytorch_model.bin)."""
    from vtr.encoders.checkpoint import read_checkpoint

    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_checkpoint(path / name)
        raise CheckpointError(f"{str(path)!r} holds no model.safetensors or pytorch_model.bin")
    return read_checkpoint(path)
