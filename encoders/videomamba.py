"""VideoMamba video encoder (bidirectional Mamba, spatial-first scan), exact to OpenGVLab's multimodal model.

Parameter names match the official ``vision_encoder.*`` state dict, so released checkpoints load as is.
Structure (``shared/spec/videomamba.md`` sections 1 and 7):

    tokens  = [cls, frame0 patches (raster 14x14), frame1 patches, ...]     (spatial-first order)
    cls     = cls_token + pos_embed[0];  patch(t, p) = proj(x) + pos_embed[1 + p] + temporal_pos_embedding[t]
    layer i = residual += drop_path(hidden); hidden = mixer(rmsnorm(residual))     (fp32 residual)
    mixer   = out_proj(scan_fwd(x, z) + scan_bwd(x, z))    shared in/out projections, per-direction SSM
    out     = rmsnorm_f(residual + hidden);  pooled = pool_norm(cls + per-frame mean of patches)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vtr.encoders.grad_pair import split_xz
from vtr.encoders.selective_scan import ScanBackend, ScanDirection, get_backend
from vtr.errors import ConfigError


@dataclass(frozen=True)
class VideoMambaConfig:
    """Hyperparameters of a VideoMamba encoder (defaults: the official multimodal VideoMamba-M)."""

    name: str = "videomamba_middle"
    depth: int = 32
    embed_dim: int = 576
    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 8
    tubelet_size: int = 1
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5
    clip_decoder_embed_dim: int = 576
    clip_output_dim: int = 512
    keep_temporal: bool = True
    checkpoint_num: int = 0
    scan_backend: str | None = None

    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.embed_dim / 16)

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)


VIDEO_ENCODERS: dict[str, dict] = {
    "videomamba_tiny": dict(depth=24, embed_dim=192),
    "videomamba_small": dict(depth=24, embed_dim=384),
    "videomamba_middle": dict(depth=32, embed_dim=576),
}


def list_video_encoders() -> list[str]:
    """Names accepted by :func:`create_video_encoder`."""
    return sorted(VIDEO_ENCODERS)


class VideoEncoderOutput(NamedTuple):
    """``tokens``: final-norm patch tokens [B, N_vis, C] (cls excluded; what fusion layers attend to).
    ``pooled``: [B, T, C] (keep_temporal) or [B, 1, C]. ``aligned``: [B, 1 + N_vis_patches, clip_dim]
    distillation features when a mask was given, else None."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    aligned: torch.Tensor | None


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (weight only, like mamba_ssm's fused rms_norm_fn)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's branch with probability ``p`` and rescale the rest."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer ("bimamba v2"): shared in/out projections, separate SSM per direction.

    The backward direction is the forward computation on the sequence reversed along L (x and z both),
    reversed back; here it runs as an anti-causal conv and a reverse-order scan, with no flipped copies.
    Outputs of the two directions are summed (no division by 2) before ``out_proj``.
    """

    def __init__(self, cfg: VideoMambaConfig) -> None:
        super().__init__()
        d, e, n, r = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.d_inner, self.d_state, self.dt_rank = e, n, r
        self.scan_backend = cfg.scan_backend
        self.ops: ScanBackend | None = None  # resolved for the weights' device: below, on .to() and set_scan_backend
        self.in_proj = nn.Linear(d, 2 * e, bias=False)
        for suffix in ("", "_b"):
            setattr(self, f"conv1d{suffix}", nn.Conv1d(e, e, cfg.d_conv, groups=e, padding=cfg.d_conv - 1))
            setattr(self, f"x_proj{suffix}", nn.Linear(e, r + 2 * n, bias=False))
            setattr(self, f"dt_proj{suffix}", nn.Linear(r, e, bias=True))
        a_init = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1)  # S4D-real: A = -(1..N)
        self.A_log = nn.Parameter(a_init.clone())
        self.A_b_log = nn.Parameter(a_init.clone())
        self.D = nn.Parameter(torch.ones(e))
        self.D_b = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, d, bias=False)
        self._init_dt(cfg)
        self.ops = resolve_ops(cfg.scan_backend, self.in_proj.weight.device, strict=False)

    def _init_dt(self, cfg: VideoMambaConfig, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's dt init: bias = softplus^-1(dt), dt ~ logUniform(dt_min, dt_max) (only for training)."""
        for proj in (self.dt_proj, self.dt_proj_b):
            nn.init.uniform_(proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
            log_dt = torch.rand(self.d_inner, device=proj.bias.device) * math.log(dt_max / dt_min)
            dt = torch.exp(log_dt + math.log(dt_min))
            dt = dt.clamp(min=1e-4)
            with torch.no_grad():
                proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def set_scan_backend(self, backend: str | None) -> None:
        """Use scan ``backend`` (None: automatic), resolved now for the device of the weights."""
        self.scan_backend = backend
        self.ops = resolve_ops(backend, self.in_proj.weight.device, strict=False)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        """``.to()`` / ``.cuda()`` / ``.half()``...: re-resolve the backend for the (possibly new) device."""
        out = super()._apply(fn, recurse)
        self.ops = resolve_ops(self.scan_backend, self.in_proj.weight.device, strict=False)
        return out

    def _resolve_now(self, device: torch.device) -> ScanBackend:
        """Only when the named backend could not run where the weights were (e.g. ``triton`` built on CPU and
        called on CUDA tensors without ``.to()``): resolve once, raising ConfigError if it cannot run here."""
        self.ops = resolve_ops(self.scan_backend, device)
        return self.ops

    def _ssm_inputs(self, u: torch.Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, a_log: torch.Tensor,
                    d_skip: torch.Tensor) -> ScanDirection:
        """One direction's scan inputs from its conv output u [B, E, L]."""
        x_dbl = x_proj(u.transpose(1, 2))  # [B, L, R + 2N]
        dt, b_mat, c_mat = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # [B, E, L]; the bias goes into the scan
        return ScanDirection(u, delta, -torch.exp(a_log.float()), b_mat.transpose(1, 2), c_mat.transpose(1, 2),
                             d_skip.float(), dt_proj.bias.float())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: [B, L, d] -> [B, L, d]."""
        x, z = split_xz(self.in_proj(h))  # each [B, E, L]; their gradients land in one buffer (grad_pair.py)
        ops = self.ops or self._resolve_now(h.device)
        u_f, u_b = ops.bidirectional_conv(x, self.conv1d.weight, self.conv1d.bias, self.conv1d_b.weight,
                                          self.conv1d_b.bias)
        y = ops.bidirectional_scan(self._ssm_inputs(u_f, self.x_proj, self.dt_proj, self.A_log, self.D),
                                   self._ssm_inputs(u_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b), z)
        return self.out_proj(y.transpose(1, 2))


def resolve_ops(scan_backend: str | None, device: torch.device, strict: bool = True) -> ScanBackend | None:
    """The scan backend for ``device`` (explicit name > ``$VTR_SCAN_BACKEND`` > best available), without its fused
    add+RMSNorm when ``VTR_FUSED_NORM=0``. Called when a model is built, moved or given a backend; never per call.
    ``strict=False``: None instead of ConfigError when the named backend cannot run on ``device``."""
    try:
        ops = get_backend(scan_backend, device)
    except ConfigError:
        if strict:
            raise
        return None
    if ops.add_norm is not None and os.environ.get("VTR_FUSED_NORM", "1") == "0":
        ops = replace(ops, add_norm=None)
    return ops


class Block(nn.Module):
    """Add -> RMSNorm -> Mixer. Carries the residual stream in float32."""

    def __init__(self, cfg: VideoMambaConfig, drop_path: float) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mixer = BiMambaMixer(cfg)
        self.drop_path = DropPath(drop_path)
        self.use_checkpoint = False

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        branch = hidden if residual is None else self.drop_path(hidden)
        ops = self.mixer.ops or self.mixer._resolve_now(hidden.device)
        normed, residual = add_norm(self.norm, branch, residual, _compute_dtype(hidden), ops)
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            hidden = checkpoint(self.mixer, normed, use_reentrant=False)
        else:
            hidden = self.mixer(normed)
        return hidden, residual


def add_norm(norm: RMSNorm, branch: torch.Tensor, residual: torch.Tensor | None, out_dtype: torch.dtype,
             ops: ScanBackend) -> tuple[torch.Tensor, torch.Tensor]:
    """``(norm(residual + branch) -> out_dtype, residual + branch)`` with the residual in float32 (``residual``
    None: the branch alone). The backend's fused kernel where it has one, else eager PyTorch."""
    if ops.add_norm is not None:
        return ops.add_norm(branch, residual, norm.weight, norm.eps, out_dtype)
    residual = branch.float() if residual is None else residual + branch.float()
    return norm(residual).to(out_dtype), residual


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


class LinearDecoder(nn.Module):
    """CLIP-alignment head: LayerNorm(Linear(x)) (keys ``head``, ``norm``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.head = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.head(x))


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """Transformer sinusoid position table [1, n_position, dim] (sin on even, cos on odd dims)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim).double()
    table = pos / rates
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.float()[None]


class VideoMamba(nn.Module):
    """The VideoMamba vision tower of the multimodal model (``vision_encoder.*`` in official checkpoints)."""

    def __init__(self, cfg: VideoMambaConfig) -> None:
        super().__init__()
        if cfg.num_frames % cfg.tubelet_size:
            raise ConfigError(f"num_frames {cfg.num_frames} must be a multiple of tubelet_size {cfg.tubelet_size}")
        self.cfg = cfg
        c, p, k = cfg.embed_dim, cfg.patch_size, cfg.tubelet_size
        self.num_patches = cfg.grid_size**2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, c, kernel_size=(k, p, p), stride=(k, p, p))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, c))
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, cfg.num_frames // k, c))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()
        inter_dpr = [0.0] + dpr  # layer i drops the *previous* layer's mixer output with dpr[i-1]
        self.layers = nn.ModuleList([Block(cfg, inter_dpr[i]) for i in range(cfg.depth)])
        self.drop_path_final = DropPath(cfg.drop_path_rate)
        self.norm = RMSNorm(c, eps=cfg.norm_eps)
        self.pool_norm = nn.LayerNorm(c, eps=1e-5)
        self.clip_decoder = nn.ModuleList([LinearDecoder(cfg.clip_decoder_embed_dim, cfg.clip_output_dim)])
        self._init_weights()
        self.set_grad_checkpointing(cfg.checkpoint_num)

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for layer in self.layers:
            for lin in (layer.mixer.in_proj, layer.mixer.x_proj, layer.mixer.x_proj_b):
                nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(self.cfg.depth)

    def set_grad_checkpointing(self, num_layers: int) -> None:
        """Recompute the mixers of the first ``num_layers`` blocks in backward (saves activation memory)."""
        for i, layer in enumerate(self.layers):
            layer.use_checkpoint = i < num_layers

    def set_scan_backend(self, backend: str | None) -> None:
        """Use selective-scan ``backend`` (None: automatic) in every mixer."""
        self.cfg = replace(self.cfg, scan_backend=backend)
        for layer in self.layers:
            layer.mixer.set_scan_backend(backend)

    @property
    def num_frames(self) -> int:
        return self.cfg.num_frames

    def embed(self, video: torch.Tensor) -> tuple[torch.Tensor, int]:
        """video [B, T, 3, H, W] -> tokens [B, 1 + T'*hw, C] with all position embeddings, and T'."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"expected video [B, T, 3, H, W], got {tuple(video.shape)}")
        b, t = video.shape[:2]
        use_image = t == 1
        if not use_image and t != self.cfg.num_frames:
            raise ConfigError(
                f"encoder built for {self.cfg.num_frames} frames got {t}; create it with num_frames={t} "
                "(checkpoint loading interpolates the temporal position embedding)"
            )
        x = self.patch_embed.proj(video.transpose(1, 2))  # [B, C, T', h, w]
        tp = x.shape[2]
        if x.shape[-1] * x.shape[-2] != self.num_patches:
            raise ConfigError(f"input {tuple(video.shape[-2:])} does not match img_size {self.cfg.img_size}")
        x = x.flatten(3).permute(0, 2, 3, 1)  # [B, T', hw, C], raster order inside each frame
        x = x + self.pos_embed[:, 1:].unsqueeze(1)
        if not use_image:
            x = x + self.temporal_pos_embedding[:, :tp].unsqueeze(2)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        return torch.cat([cls, x.reshape(b, tp * self.num_patches, -1)], dim=1), tp

    def forward(
        self, video: torch.Tensor, mask: torch.Tensor | None = None, keep_temporal: bool | None = None
    ) -> VideoEncoderOutput:
        """Encode ``video`` [B, T, 3, H, W] (T=1: image). ``mask`` [B, 1 + T*hw], True = dropped token."""
        keep_temporal = self.cfg.keep_temporal if keep_temporal is None else keep_temporal
        x, tp = self.embed(video)
        b, _, c = x.shape
        if mask is not None:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask {tuple(mask.shape)} must be [B, 1 + T*hw] = {tuple(x.shape[:2])}")
            if mask[:, 0].any():
                raise ValueError("the cls column of the mask must be False (cls is always visible)")
            x = x[~mask].reshape(b, -1, c)

        hidden, residual = x, None
        aligned = None
        for i, layer in enumerate(self.layers):
            hidden, residual = layer(hidden, residual)
            if mask is not None and i == len(self.layers) - 1:
                # Official quirk: the student feature is the fp32 residual entering the last block's norm.
                aligned = residual
        ops = self.layers[0].mixer.ops if len(self.layers) else None
        ops = ops or resolve_ops(self.cfg.scan_backend, x.device)
        out = add_norm(self.norm, self.drop_path_final(hidden), residual, _compute_dtype(x), ops)[0]
        cls, tokens = out[:, :1], out[:, 1:]

        n_vis = tokens.shape[1]
        if keep_temporal and n_vis % tp == 0:
            pooled = self.pool_norm(cls + tokens.reshape(b, tp, n_vis // tp, c).mean(2))
        else:
            pooled = self.pool_norm(cls + tokens.mean(1, keepdim=True))
        if aligned is not None:
            pos = sinusoid_table(1 + tp * self.num_patches, c).to(aligned.device)
            pos = pos.expand(b, -1, -1)[~mask].reshape(b, -1, c)
            aligned = self.clip_decoder[0](aligned + pos)
        return VideoEncoderOutput(tokens, pooled, aligned)


def create_video_encoder(
    name: str = "videomamba_middle",
    num_frames: int = 8,
    img_size: int = 224,
    pretrained: str | None = None,
    **overrides,
) -> VideoMamba:
    """Build a registered VideoMamba (``videomamba_tiny|small|middle``); load ``pretrained`` weights if given.

    ``overrides`` set any :class:`VideoMambaConfig` field (``drop_path_rate``, ``checkpoint_num``,
    ``scan_backend``, ``keep_temporal``, ...).
    """
    if name not in VIDEO_ENCODERS:
        raise ConfigError(f"unknown video encoder {name!r}; available: {', '.join(list_video_encoders())}")
    arch = dict(VIDEO_ENCODERS[name])
    arch.setdefault("clip_decoder_embed_dim", arch["embed_dim"])
    cfg = replace(VideoMambaConfig(), name=name, num_frames=num_frames, img_size=img_size, **arch)
    cfg = replace(cfg, **overrides)
    model = VideoMamba(cfg)
    if pretrained:
        from vtr.encoders.checkpoint import load_video_encoder

        load_video_encoder(model, pretrained)
    return model
