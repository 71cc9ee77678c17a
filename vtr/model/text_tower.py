"""A cached text tower for search start-up: a model's text encoder + ``text_proj`` traced to TorchScript.

A search process then loads only torch, this file and the ``tokenizers`` tokenizer: neither transformers (which
pulls in torchvision and torch._dynamo) nor the video tower nor the weights of the whole model. The cache lives
in ``<home>/cache/text_tower/`` under the model's weights sha256, its text length and the torch version, is
written atomically after the first search that loaded the full model (CPU only), and is ignored (rebuilt) when
it cannot be loaded. Its embeddings are the full model's (tested to 1e-5).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

from vtr.home import data_home

log = logging.getLogger(__name__)

FORMAT = 1
CACHE_DIR = ("cache", "text_tower")


def cache_path(home: str | os.PathLike | None, weights_sha256: str, max_len: int) -> Path:
    """Where the tower of the model with ``weights_sha256`` is cached (one file per torch version)."""
    torch_tag = torch.__version__.replace("+", "_")
    return data_home(home).joinpath(*CACHE_DIR) / f"{weights_sha256[:32]}-l{max_len}-v{FORMAT}-torch{torch_tag}.pt"


@lru_cache(maxsize=4)
def fast_tokenizer(max_len: int):
    """The model's WordPiece tokenizer (the packaged ``tokenizer.json``) through ``tokenizers`` alone, padded and
    truncated to ``max_len`` as :func:`vtr.encoders.bert.tokenize` does."""
    from tokenizers import Tokenizer

    from vtr.encoders.bert import minilm_path

    tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.enable_padding(length=max_len, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    return tok


def tokenize_fast(texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` [B, max_len] of ``texts`` after the official cleaning."""
    from vtr.data.text import pre_text

    encs = fast_tokenizer(max_len).encode_batch([pre_text(t) for t in texts])
    return (torch.tensor([e.ids for e in encs], dtype=torch.long),
            torch.tensor([e.attention_mask for e in encs], dtype=torch.long))


class _TextEmbed(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, attention_mask).embeds


class TextTower:
    """Text embeddings from a traced tower: ``encode(texts)`` -> [B, embed_dim] (the model's ``embeds``)."""

    def __init__(self, module: torch.jit.ScriptModule, max_len: int) -> None:
        self.module, self.max_len = module, max_len

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.module(*tokenize_fast(texts, self.max_len))


def load_text_tower(path: Path, max_len: int) -> TextTower | None:
    """The cached tower at ``path``, or None when there is none or it cannot be loaded (it is then removed)."""
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated (still supported): without it, no cache
            warnings.simplefilter("ignore", DeprecationWarning)
            return TextTower(torch.jit.load(str(path), map_location="cpu").eval(), max_len)
    except Exception as err:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
        log.warning("text tower cache %s unusable (%s); rebuilding it", path, err)
        path.unlink(missing_ok=True)
        return None


@torch.no_grad()
def save_text_tower(model: torch.nn.Module, path: Path, max_len: int) -> None:
    """Trace ``model``'s text tower (fp32, CPU) and write it to ``path`` atomically (best effort)."""
    try:
        ids, mask = tokenize_fast(["a short caption to trace the text tower with"], max_len)  # padded: the
        with warnings.catch_warnings():  # masked-attention branch is the one traced (valid for full rows too)
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_TextEmbed(model).eval(), (ids, mask), check_trace=False)
        # Serialised in memory, written with Python's file I/O: torch's own file writer aborts the whole process
        # when the disk fills (a C++ exception), where an OSError here is just a skipped cache.
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, buf)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tower.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getbuffer())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except Exception as err:  # noqa: BLE001 - the cache only saves time
        log.debug("could not cache the text tower: %s", err)
