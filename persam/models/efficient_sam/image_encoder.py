"""EfficientSAM's image encoder: a plain global-attention ViT with a bicubically resized absolute
position embedding (no windows, no relative positions), followed by SAM's neck."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import LayerNorm2d, act_inplace

# The ViT was pre-trained at 224 pixels; its position table keeps that grid plus a cls entry.
PRETRAIN_IMG_SIZE = 224


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution: ``[B, 3, S, S]`` -> ``[B, D, S/p, S/p]``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ViTAttention(nn.Module):
    """Global multi-head self-attention over a token sequence ``[B, N, D]``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # Fused attention: the [B, heads, N, N] probabilities (N = 4096 tokens at 1024 px, 200 MB
        # per block in float32) are never materialised; same softmax(q k^T * scale) v.
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class ViTMlp(nn.Module):
    """``fc2(act(fc1(x)))`` on the last dimension."""

    def __init__(self, dim: int, hidden_dim: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(act_inplace(self.act, self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6) on ``[B, N, D]`` tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, act: type[nn.Module]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViTMlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_abs_pos(pos_embed: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The absolute position embedding for an ``h x w`` patch grid.

    Args:
        pos_embed: ``[1, 1 + s*s, D]`` pre-training table (cls entry first).
        hw: ``(h, w)`` patch grid of the current input.

    Returns:
        ``[1, h, w, D]`` (channels last), bicubically resized (align_corners=False, no antialias)
        when the grid differs from the ``s x s`` pre-training grid.
    """
    table = pos_embed[:, 1:]
    size = math.isqrt(table.shape[1])
    if size * size != table.shape[1]:
        raise ValueError(f"pos_embed holds {table.shape[1]} grid entries, not a square number")
    grid = table.reshape(1, size, size, -1)
    if (size, size) == tuple(hw):
        return grid
    resized = F.interpolate(grid.permute(0, 3, 1, 2), size=hw, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class EfficientSamImageEncoder(nn.Module):
    """Plain global-attention ViT + SAM neck: ``[B, 3, S, S]`` -> ``[B, C_neck, S/p, S/p]``."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        patch_embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        neck_dims: Sequence[int] = (256, 256),
        act: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.image_embedding_size = img_size // patch_size
        # The official neck builds both convolutions with neck_dims[0] channels.
        self.out_chans = neck_dims[0]
        self.patch_embed = PatchEmbed(patch_size, in_chans, patch_embed_dim)
        num_positions = (PRETRAIN_IMG_SIZE // patch_size) ** 2 + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, patch_embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(patch_embed_dim, num_heads, mlp_ratio, act) for _ in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(patch_embed_dim, neck_dims[0], kernel_size=1, bias=False),
            LayerNorm2d(neck_dims[0]),
            nn.Conv2d(neck_dims[0], neck_dims[0], kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dims[0]),
        )

    def abs_pos(self, hw: tuple[int, int]) -> torch.Tensor:
        """``[1, h, w, D]`` position embedding added to the patch embeddings."""
        return resize_abs_pos(self.pos_embed, hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` normalised image -> ``[B, C_neck, S/p, S/p]`` image embedding."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"image encoder expects {self.img_size}x{self.img_size} input, got {tuple(x.shape)}"
            )
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        b, h, w, d = x.shape
        x = x + self.abs_pos((h, w))
        x = x.reshape(b, h * w, d)
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.reshape(b, h, w, d).permute(0, 3, 1, 2))
