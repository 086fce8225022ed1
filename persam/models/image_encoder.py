"""SAM image encoder: a plain ViT with windowed and global attention, decomposed relative
position bias, an absolute position embedding and a convolutional neck.

Input ``[B, 3, 1024, 1024]`` (normalised, zero padded); output ``[B, out_chans, 64, 64]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import LayerNorm2d, MLPBlock, may_overwrite


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection ``[B, C, H, W]`` -> ``[B, H/p, W/p, embed_dim]`` (channels last)."""

    def __init__(
        self,
        kernel_size: tuple[int, int] = (16, 16),
        stride: tuple[int, int] = (16, 16),
        padding: tuple[int, int] = (0, 0),
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Splits ``[B, H, W, C]`` into ``[B * nW, ws, ws, C]`` windows, zero padding H and W up to a
    multiple of ``ws`` at the bottom/right. Returns the windows and the padded ``(Hp, Wp)``."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws, ws, C]`` -> ``[B, H, W, C]`` (padding removed)."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings ``[q_size, k_size, C]`` for every (query, key) offset along one
    axis, read from the table ``rel_pos`` ``[L, C]`` (linearly resized when ``L != 2 * max - 1``)."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    # Scale the coordinates of the shorter side when query and key lengths differ.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]


# Largest additive attention mask (elements) built at once by a relative-position attention.
_MASK_BUDGET = 1 << 25


class Attention(nn.Module):
    """Multi-head self-attention on a ``[B, H, W, C]`` grid with optional decomposed relative
    position bias (``bias[q, k] = q_unscaled . Rh[q_row, k_row] + q_unscaled . Rw[q_col, k_col]``).

    ``rel_pos_zero_init`` is accepted for configuration compatibility; the tables always start at
    zero (trained checkpoints overwrite them).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("Attention: input_size is required when use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        b, h, w, _ = x.shape
        # [3, B, heads, H*W, head_dim]
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.use_rel_pos:
            out = self._attention_with_rel_pos(q, k, v, (h, w))
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)

    def _attention_with_rel_pos(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """``softmax(q k^T * scale + bias) v`` for ``[B, heads, h*w, head_dim]`` inputs, where
        ``bias[i, j] = q_i . Rh[row(i), row(j)] + q_i . Rw[col(i), col(j)]`` (unscaled ``q``).

        The bias is passed to the fused attention kernel as an additive mask, built for a block of
        queries at a time so that a global-attention layer never holds more than
        ``_MASK_BUDGET`` mask elements.
        """
        h, w = size
        b, heads, n, c = q.shape
        rh = get_rel_pos(h, h, self.rel_pos_h)
        rw = get_rel_pos(w, w, self.rel_pos_w)
        r_q = q.reshape(b, heads, h, w, c)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh.to(q.dtype)).reshape(b, heads, n, h)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw.to(q.dtype)).reshape(b, heads, n, w)
        step = max(1, _MASK_BUDGET // (b * heads * n))
        # Every block of queries reuses one mask buffer: a fresh one of this size (up to 128 MB)
        # is new memory from the kernel each time, page faults and zero-filling included (sharing
        # it made the SAM ViT-B encoder 1.06x faster on a 2-core CPU, same output bit for bit).
        reuse = step < n and may_overwrite(rel_h)
        buffer = rel_h.new_empty((b, heads, step, h, w)) if reuse else None
        outs = []
        for s in range(0, n, step):
            e = min(n, s + step)
            parts = (rel_h[:, :, s:e, :, None], rel_w[:, :, s:e, None, :])
            if buffer is None:
                bias = parts[0] + parts[1]
            else:
                bias = torch.add(*parts, out=buffer[:, :, : e - s])
            outs.append(
                F.scaled_dot_product_attention(
                    q[:, :, s:e],
                    k,
                    v,
                    attn_mask=bias.reshape(b, heads, e - s, n).to(q.dtype),
                    scale=self.scale,
                )
            )
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


class Block(nn.Module):
    """Pre-norm transformer block with windowed (``window_size > 0``) or global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=act_layer)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's ViT image encoder (ViT-B/L/H and smaller test configurations)."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=window_size if i not in global_attn_indexes else 0,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, img_size, img_size]`` -> ``[B, out_chans, img_size/16, img_size/16]``."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
