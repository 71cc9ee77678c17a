"""Joint space-time attention ViT (TimeSformer-style "joint" baseline of the VideoMamba paper).

12 pre-LN transformer blocks over all T*196 patch tokens at once (PyTorch SDPA: flash on GPU), patch
1x16x16, learned spatial + temporal position embeddings, mean-pooled. Widths: Ti (192, 3 heads), S (384, 6),
B (768, 12: UMT's tower).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

VIT_SIZES = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class JointAttentionViT(nn.Module):
    """Video ViT with joint space-time attention; input [B, T, 3, H, W], output [B, C] (mean pooled)."""

    def __init__(self, dim: int, heads: int, depth: int = 12, num_frames: int = 8, img_size: int = 224,
                 patch: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.Conv3d(3, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch))
        n = (img_size // patch) ** 2
        self.pos_embed = nn.Parameter(torch.randn(1, 1, n, dim) * 0.02)
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, 1, dim))
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(video.transpose(1, 2)).flatten(3).permute(0, 2, 3, 1)  # [B, T, hw, C]
        x = (x + self.pos_embed + self.temporal_embed).flatten(1, 2)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x).mean(1)


def create_attention_vit(name: str, num_frames: int = 8) -> JointAttentionViT:
    dim, heads = VIT_SIZES[name]
    return JointAttentionViT(dim, heads, num_frames=num_frames)
