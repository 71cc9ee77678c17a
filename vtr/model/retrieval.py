"""The multimodal retrieval model (official ``UMT_VIDEOMAMBA``): VideoMamba + BERT with fusion layers.

    video  -> vision_encoder -> pooled [B,T,Cv] -> vision_proj -> [B,T,512]   \\  similarity = mean over frames
    text   -> text layers    -> [CLS]  [B,Ct]   -> text_proj   -> [B,512]     /  of per-frame cosine
    (video patch tokens, text states) -> fusion layers -> [CLS] -> itm_head -> match logit   (re-ranking, VTM)

Parameter names follow the official checkpoint (``vision_encoder.*``, ``text_encoder.*``, ``vision_proj``,
``text_proj``, ``temp``, ``itm_head``), so released weights load by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import torch
import torch.nn as nn

from vtr.encoders.bert import TextEncoder, create_text_encoder, load_tokenizer, tokenize
from vtr.encoders.videomamba import VIDEO_ENCODERS, VideoMamba, create_video_encoder
from vtr.errors import ConfigError
from vtr.model import losses as L


@dataclass(frozen=True)
class RetrievalConfig:
    """Architecture of a retrieval model; stored as ``config.json`` in a vtr model directory."""

    name: str
    vision_encoder: str = "videomamba_middle"
    text_encoder: str = "bert_base"
    num_frames: int = 8
    img_size: int = 224
    embed_dim: int = 512
    temp: float = 0.07
    max_txt_l: int = 32
    text_pool: str = "cls"  # "cls" (official) or "mean" (sentence-transformers MiniLM was trained with it)
    mlm_head: bool = True
    vision: dict = field(default_factory=dict)  # VideoMambaConfig overrides (depth, drop_path_rate, ...)
    text: dict = field(default_factory=dict)  # TextEncoderConfig overrides (fusion_layer, ...)
    # Frame-mean baseline: every frame goes through the video tower on its own (as a T=1 image: no temporal
    # position embedding, no scan across frames); per-frame features are averaged by the frame-mean similarity.
    frame_independent: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RetrievalConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown model config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


MODEL_CONFIGS: dict[str, RetrievalConfig] = {
    # The released OpenGVLab architecture: VideoMamba-M (32 x 576) + BERT-base with fusion layers 9-11.
    "videomamba_m16_umt": RetrievalConfig("videomamba_m16_umt"),
    # Small models for the synthetic world and CPU demos: the pretrained MiniLM-L6 text tower + 2 fusion layers.
    "videomamba_t16_minilm": RetrievalConfig("videomamba_t16_minilm", "videomamba_tiny", "minilm_l6",
                                             text_pool="mean"),
    "videomamba_s16_minilm": RetrievalConfig("videomamba_s16_minilm", "videomamba_small", "minilm_l6",
                                             text_pool="mean"),
}


def list_models() -> list[str]:
    """Registered architecture names for :func:`vtr.create_model`."""
    return sorted(MODEL_CONFIGS)


class VideoFeatures(NamedTuple):
    tokens: torch.Tensor  # [B, N, Cv] final-norm patch tokens (fusion-layer input)
    embeds: torch.Tensor  # [B, T, 512] projected per-frame features (unnormalised)
    aligned: torch.Tensor | None  # [B, 1 + n_vis, clip_dim] distillation features (masked forward only)


class TextFeatures(NamedTuple):
    states: torch.Tensor  # [B, L, Ct] text-layer output (fusion-layer input)
    mask: torch.Tensor  # [B, L] attention mask
    embeds: torch.Tensor  # [B, 512] projected text feature (unnormalised)


class RetrievalModel(nn.Module):
    """VideoMamba + BERT retrieval model with contrastive heads, ITM head and (optional) MLM head."""

    def __init__(self, cfg: RetrievalConfig, text_pretrained: bool | None = None) -> None:
        super().__init__()
        if cfg.vision_encoder not in VIDEO_ENCODERS:
            raise ConfigError(f"unknown vision encoder {cfg.vision_encoder!r}")
        if cfg.text_pool not in ("cls", "mean"):
            raise ConfigError(f"text_pool must be 'cls' or 'mean', got {cfg.text_pool!r}")
        self.cfg = cfg
        self.vision_encoder: VideoMamba = create_video_encoder(
            cfg.vision_encoder, num_frames=cfg.num_frames, img_size=cfg.img_size, **cfg.vision)
        vision_width = self.vision_encoder.cfg.embed_dim
        self.text_encoder: TextEncoder = create_text_encoder(
            cfg.text_encoder, encoder_width=vision_width, pretrained=text_pretrained, with_mlm_head=cfg.mlm_head,
            **cfg.text)
        text_width = self.text_encoder.hidden_size
        self.vision_proj = nn.Linear(vision_width, cfg.embed_dim)
        self.text_proj = nn.Linear(text_width, cfg.embed_dim)
        self.temp = nn.Parameter(torch.tensor(cfg.temp))
        self.itm_head = nn.Linear(text_width, 2)
        self._tokenizer = None

    # Tower-config fields that the top-level config or the build itself sets (not saved in ``vision``/``text``).
    _VISION_SET_BY_BUILD = ("name", "num_frames", "img_size", "scan_backend")
    _TEXT_SET_BY_BUILD = ("name", "encoder_width", "pretrained")

    def resolved_config(self) -> RetrievalConfig:
        """``cfg`` with every tower field spelled out (not only overrides of the registry defaults), so a saved
        model directory keeps its meaning when a registry default changes."""
        vision = {k: v for k, v in asdict(self.vision_encoder.cfg).items() if k not in self._VISION_SET_BY_BUILD}
        text = {k: v for k, v in asdict(self.text_encoder.config).items() if k not in self._TEXT_SET_BY_BUILD}
        return replace(self.cfg, vision=vision, text=text)

    # ------------------------------------------------------------------ inputs

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer()
        return self._tokenizer

    def tokenize(self, captions: str | list[str], max_len: int | None = None) -> dict[str, torch.Tensor]:
        """Official cleaning + WordPiece to ``max_len`` (default the model's ``max_txt_l``), on the model's device."""
        enc = tokenize(self.tokenizer, captions, max_len or self.cfg.max_txt_l)
        device = self.temp.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    # ------------------------------------------------------------------ features

    def encode_video(self, video: torch.Tensor, mask: torch.Tensor | None = None,
                     keep_temporal: bool | None = None) -> VideoFeatures:
        """video [B, T, 3, H, W] (T=1 for images) -> patch tokens, projected per-frame features."""
        if self.cfg.frame_independent and video.shape[1] > 1:
            return self._encode_frames_independently(video, mask, keep_temporal)
        out = self.vision_encoder(video, mask=mask, keep_temporal=keep_temporal)
        return VideoFeatures(out.tokens, self.vision_proj(out.pooled), out.aligned)

    def _encode_frames_independently(self, video: torch.Tensor, mask: torch.Tensor | None,
                                     keep_temporal: bool | None) -> VideoFeatures:
        """Frame-mean baseline: [B, T, ...] -> [B*T, 1, ...] images -> tokens [B, T*hw, C], pooled [B, T, C]."""
        if mask is not None:
            raise ConfigError("frame_independent encoding (the frame-mean baseline) does not support token masking")
        b, t = video.shape[:2]
        out = self.vision_encoder(video.reshape(b * t, 1, *video.shape[2:]))
        tokens = out.tokens.reshape(b, t * out.tokens.shape[1], out.tokens.shape[2])
        pooled = out.pooled.reshape(b, t, out.pooled.shape[-1])
        keep = self.vision_encoder.cfg.keep_temporal if keep_temporal is None else keep_temporal
        if not keep:
            pooled = pooled.mean(1, keepdim=True)
        return VideoFeatures(tokens, self.vision_proj(pooled), None)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        """Text layers -> [CLS] (or masked mean) -> text_proj."""
        states = self.text_encoder.encode_text(input_ids, attention_mask)
        if self.cfg.text_pool == "cls":
            pooled = states[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return TextFeatures(states, attention_mask, self.text_proj(pooled))

    def itm_logits(self, vision_tokens: torch.Tensor, text_states: torch.Tensor,
                   text_mask: torch.Tensor) -> torch.Tensor:
        """Fusion layers over (text, video) pairs -> itm_head logits [B, 2] (column 1: match)."""
        fused = self.text_encoder.fuse(text_states, text_mask, vision_tokens)
        return self.itm_head(fused[:, 0])

    @staticmethod
    def similarity(video_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Text-to-video cosine scores [Nt, Nv]: mean over frames of per-frame cosine (float32, temp 1)."""
        _, sim_t2v = L.get_sim(video_embeds, text_embeds, 1.0)
        return sim_t2v

    # ------------------------------------------------------------------ training

    def training_losses(
        self,
        video: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        idx: torch.Tensor | None = None,
        weights: L.LossWeights | None = None,
        teacher: nn.Module | None = None,
        mask_kind: str = "none",
        mask_ratio: float = 0.0,
        generator: torch.Generator | None = None,
        distill: Callable[[torch.Tensor, VideoFeatures, torch.Tensor | None], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The official stage-2 objectives on one batch: VTC, VTM (hard negatives), MLM and UTA distillation.

        ``teacher`` + ``mask_kind`` != "none": the teacher picks the visible tokens (attention masking), the
        student runs on them (pooled over all visible tokens, as the official masked stage does) and UTA aligns
        the student's features with the teacher's. ``distill(video, video_features, mask_or_None)``: the
        self-distillation loss (weight ``weights.distill``) on this forward's features. Losses with weight 0 are
        skipped.
        """
        weights = weights or L.LossWeights()
        L.clamp_temperature_(self.temp)
        out: dict[str, torch.Tensor] = {}
        b = video.shape[0]
        idx = torch.arange(b, device=video.device) if idx is None else idx
        mask = None
        if teacher is not None and mask_kind != "none" and weights.uta > 0:
            from vtr.model.masking import encode_teacher

            mask, targets = encode_teacher(teacher, video, mask_kind, mask_ratio, generator=generator)
            vid = self.encode_video(video, mask=mask, keep_temporal=False)
            out["uta"] = L.uta_loss(vid.aligned.float(), targets.float())
        else:
            vid = self.encode_video(video)
        if distill is not None and weights.distill > 0:
            out["distill"] = distill(video, vid, mask)
        txt = self.encode_text(input_ids, attention_mask)
        if weights.vtc > 0:
            out["vtc"] = L.vtc_loss(vid.embeds, txt.embeds, self.temp, idx=idx)
        if weights.vtm > 0:
            with torch.no_grad():
                sim_v2t, sim_t2v = L.get_sim(vid.embeds, txt.embeds, self.temp)

            def fuse(text_states, text_mask, vision_tokens):
                return self.text_encoder.fuse(text_states, text_mask, vision_tokens)

            out["vtm"] = L.vtm_loss(fuse, self.itm_head, vid.tokens, txt.states, attention_mask, sim_v2t, sim_t2v,
                                    idx=idx, generator=generator)
        if weights.mlm > 0 and self.text_encoder.has_mlm_head:
            tok = self.tokenizer
            masked, labels = L.mask_tokens_for_mlm(
                input_ids, attention_mask, self.text_encoder.config.vocab_size, tok.mask_token_id,
                tok.pad_token_id, tok.cls_token_id, generator=generator)
            states = self.text_encoder.encode_text(masked, attention_mask)
            fused = self.text_encoder.fuse(states, attention_mask, vid.tokens)
            out["mlm"] = L.mlm_loss(self.text_encoder.mlm_logits(fused), labels)
        out["loss"] = L.combine({k: v for k, v in out.items()}, weights)
        return out


def build_model(cfg: RetrievalConfig, text_pretrained: bool | None = None) -> RetrievalModel:
    """Instantiate ``cfg`` (``text_pretrained=None``: the text encoder's registry default)."""
    return RetrievalModel(cfg, text_pretrained=text_pretrained)


def config_for(name: str, **overrides) -> RetrievalConfig:
    """The registered config ``name`` with top-level field ``overrides``."""
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())} "
                          "(or pass a vtr model directory / an imported model name)")
    return replace(MODEL_CONFIGS[name], **overrides)
