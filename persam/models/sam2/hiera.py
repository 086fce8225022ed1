"""Hiera: the hierarchical vision transformer trunk of SAM 2.

Four stages of transformer blocks on a ``[B, H, W, C]`` token map (stride 4 after the patch
embedding, then 8, 16, 32). At each stage change the first block max-pools its queries 2x2 (and its
shortcut), doubling the width and the number of heads. Blocks attend within non-overlapping windows
(zero-padded at the bottom / right), except the ``global_att_blocks``, which attend over the whole
map. The first block of a stage still uses the previous stage's window size (measured before
pooling), as the checkpoints were trained that way.

State-dict keys follow the official ``sam2.modeling.backbones.hieradet.Hiera``: ``pos_embed``,
``pos_embed_window``, ``patch_embed.proj``,
``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.layers.<j>,proj}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.mask_decoder import MLP

LAYER_NORM_EPS = 1e-6


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, H, W, C]`` -> windows ``[B * nW, ws, ws, C]`` and the padded size ``(Hp, Wp)``; the map
    is zero-padded at the bottom / right to a multiple of ``window_size``."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws, ws, C]`` -> ``[B, H, W, C]`` (padding removed)."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :]
    return x


def pool_hw(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Applies a 2-D pooling to a channels-last ``[B, H, W, C]`` map."""
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """7x7 convolution, stride 4, padding 3: ``[B, 3, H, W]`` -> channels-last ``[B, H/4, W/4, C]``."""

    def __init__(
        self, *, embed_dim: int, in_chans: int = 3, kernel_size: int = 7, stride: int = 4, padding: int = 3
    ):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries are optionally pooled (``q_pool``), so that the output
    map is smaller than the input one at a stage change."""

    def __init__(self, *, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, H', W', dim_out]`` (``H' = H / stride`` with query pooling)."""
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).unbind(2)
        if self.q_pool is not None:
            q = pool_hw(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block (windowed or global attention, GELU MLP) with optional query pooling.

    When the width changes, the shortcut is the projection of the *normalised* input, pooled like
    the queries.
    """

    def __init__(
        self,
        *,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim=dim, dim_out=dim_out, num_heads=num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=LAYER_NORM_EPS)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, act=act_layer)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, H', W', dim_out]``."""
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = pool_hw(shortcut, self.pool)

        window_size = self.window_size
        if window_size > 0:
            x, padded_hw = window_partition(x, window_size)
        x = self.attn(x)
        if window_size > 0:
            h, w = shortcut.shape[1:3]
            if self.q_stride:
                # The pooled windows are smaller by the stride; the map is re-tiled at that size.
                window_size //= self.q_stride[0]
                padded_hw = (h + (-h) % window_size, w + (-w) % window_size)
            x = window_unpartition(x, window_size, padded_hw, (h, w))

        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The Hiera trunk: ``[B, 3, S, S]`` -> one ``[B, C_i, S/s_i, S/s_i]`` map per stage.

    Args (names as in the official configs):
        embed_dim: width of stage 1 (doubled at every stage change by ``dim_mul``).
        num_heads: heads of stage 1 (multiplied by ``head_mul``).
        q_pool: number of stage changes with query pooling (3: strides 4, 8, 16, 32).
        q_stride: pooling stride at those changes.
        stages: blocks per stage.
        window_pos_embed_bkg_spatial_size: size of the background position table, bicubically
            resized to the token grid.
        window_spec: window size per stage (0 = global).
        global_att_blocks: indices of blocks with global attention.
        return_interm_layers: return every stage's output (else only the last).
    """

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        num_heads: int = 1,
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        stages: Sequence[int] = (2, 3, 16, 3),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        return_interm_layers: bool = True,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f"Hiera: {len(stages)} stages but {len(window_spec)} window sizes")
        self.window_spec = tuple(window_spec)
        self.q_stride = tuple(q_stride)
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        if not 0 <= q_pool <= len(self.stage_ends) - 1:
            raise ValueError(f"Hiera: q_pool={q_pool} must be between 0 and {len(self.stage_ends) - 1}")
        self.q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.return_interm_layers = return_interm_layers
        self.global_att_blocks = tuple(global_att_blocks)

        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, self.window_spec[0], self.window_spec[0])
        )
        self.patch_embed = PatchEmbed(embed_dim=embed_dim)

        blocks = []
        stage = 0
        dim = embed_dim
        for i in range(sum(stages)):
            # Read before the stage counter moves: a stage's first block keeps the previous window.
            window_size = 0 if i in self.global_att_blocks else self.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                stage += 1
            blocks.append(
                MultiScaleBlock(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    q_stride=self.q_stride if i in self.q_pool_blocks else None,
                    window_size=window_size,
                )
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        ends = self.stage_ends[::-1] if return_interm_layers else [self.stage_ends[-1]]
        #: Output widths, lowest resolution first (the order the FPN neck expects).
        self.channel_list = [self.blocks[i].dim_out for i in ends]

    def _pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """``[1, h, w, C]``: the background table resized bicubically plus the tiled window table."""
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile([p // q for p, q in zip(pos.shape, win.shape, strict=True)])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` -> stage outputs ``[B, C_i, h_i, w_i]``, highest resolution first."""
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.stage_ends[-1] or (self.return_interm_layers and i in self.stage_ends):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
