"""TinyViT, the image encoder of MobileSAM (``vit_t``).

A 4-stage hierarchical network (Wu et al., "TinyViT", ECCV 2022) as modified by MobileSAM:

* a convolutional patch embedding (two 3x3 stride-2 conv + BatchNorm) to 1/4 resolution,
* stage 0: MBConv blocks (inverted residuals) on the 1/4 grid,
* stages 1-3: TinyViT blocks = windowed self-attention with learned relative attention biases,
  a depthwise "local" convolution and an MLP,
* patch merging between stages; MobileSAM keeps the last merging at stride 1 so that the encoder
  output stays at 1/16 of the input (64x64 for a 1024x1024 image),
* the SAM neck (conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d) to a 256-channel embedding.

State-dict keys match the official MobileSAM checkpoint (``weights/mobile_sam.pt``), including the
unused classification head ``norm_head`` / ``head``. The relative-position index table
``attention_bias_idxs`` is a non-persistent buffer computed without reading tensor values, so the
model can be built on ``torch.device("meta")`` (then :meth:`Attention.init_constant_buffers`
recreates it on a real device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import LayerNorm2d


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training.

    A no-op in eval mode and when ``drop_prob == 0``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _drop_path_or_identity(drop_prob: float) -> nn.Module:
    # The official model only instantiates DropPath for a positive rate; neither has state.
    return DropPath(drop_prob) if drop_prob > 0.0 else nn.Identity()


class ConvBN(nn.Sequential):
    """Bias-free ``Conv2d`` (child ``c``) followed by ``BatchNorm2d`` (child ``bn``).

    ``[B, in_chans, H, W] -> [B, out_chans, H', W']``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        )
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two 3x3 stride-2 ConvBN with GELU between: ``[B, in_chans, H, W] -> [B, embed_dim, H/4, W/4]``."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> 3x3 depthwise -> 1x1 project, residual, then GELU.

    ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, dim: int, expand_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        # Zero-initialised last BatchNorm: each block starts as (GELU of) the identity.
        self.conv3 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()
        self.drop_path = _drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """1x1 ConvBN -> GELU -> 3x3 depthwise ConvBN (stride ``stride``) -> GELU -> 1x1 ConvBN.

    ``[B, dim, H, W] -> [B, out_dim, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(self, dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


def attention_bias_index(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Index of the learned bias for every (query, key) pair of a ``height x width`` window.

    Tokens are numbered row-major. The published rule enumerates the offsets
    ``(|dy|, |dx|)`` in order of first appearance over all (query, key) pairs; the first query
    (0, 0) already meets every offset, in row-major order, so offset ``(dy, dx)`` has index
    ``dy * width + dx``. Computed with tensor arithmetic only (works on the meta device).

    Returns:
        ``[height*width, height*width]`` int64, values in ``[0, height*width)``.
    """
    ys = torch.arange(height, device=device).repeat_interleave(width)
    xs = torch.arange(width, device=device).repeat(height)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * width + dx


class Attention(nn.Module):
    """Multi-head self-attention over one window with a learned bias per head and relative offset.

    ``softmax(q k^T / sqrt(key_dim) + B[h, |dy|, |dx|]) v``; LayerNorm is applied to the input
    inside this module. ``[Bw, N, dim] -> [Bw, N, dim]`` with ``N = resolution[0] * resolution[1]``.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.resolution = resolution
        # attn_ratio 1: values have the same width as keys.
        self.value_dim = key_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(num_heads * self.value_dim, dim)
        n_offsets = resolution[0] * resolution[1]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, n_offsets))
        self.register_buffer("attention_bias_idxs", attention_bias_index(*resolution), persistent=False)
        # The index table is not in checkpoints: rebuild it after loading, so that a model built on
        # the meta device (then ``to_empty`` / ``load_state_dict(assign=True)``) is usable.
        self.register_load_state_dict_post_hook(_rebuild_bias_index)

    def init_constant_buffers(self, device: torch.device | str | None = None) -> None:
        """Recomputes ``attention_bias_idxs`` on ``device`` (default: that of ``attention_biases``)."""
        if device is None:
            device = self.attention_biases.device
        self.attention_bias_idxs = attention_bias_index(*self.resolution, device=device)

    def attention_bias(self) -> torch.Tensor:
        """``[num_heads, N, N]`` additive attention bias gathered from ``attention_biases``."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        # The fused projection is laid out per head as [q | k | v].
        qkv = self.qkv(x).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [Bw, heads, N, d]
        bias = self.attention_bias().to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x.transpose(1, 2).reshape(b, n, self.num_heads * self.value_dim)
        return self.proj(x)


def _rebuild_bias_index(module: nn.Module, incompatible_keys: object) -> None:
    attn: Attention = module  # type: ignore[assignment]
    attn.init_constant_buffers()


class Mlp(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout. ``[..., dim] -> [..., dim]``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pads ``[B, H, W, C]`` at the bottom/right to multiples of ``window_size`` and splits it.

    Returns:
        ``[B * nH * nW, window_size**2, C]`` windows (row-major inside each window) and the padded
        size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    pad_b = (window_size - h % window_size) % window_size
    pad_r = (window_size - w % window_size) % window_size
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    x = x.reshape(b, hp // window_size, window_size, wp // window_size, window_size, c)
    x = x.transpose(2, 3).reshape(-1, window_size * window_size, c)
    return x, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nH * nW, ws**2, C] -> [B, H, W, C]`` (padding cut)."""
    hp, wp = padded
    h, w = size
    c = windows.shape[-1]
    nh, nw = hp // window_size, wp // window_size
    x = windows.view(-1, nh, nw, window_size, window_size, c).transpose(2, 3).reshape(-1, hp, wp, c)
    if hp != h or wp != w:
        x = x[:, :h, :w]
    return x


class TinyViTBlock(nn.Module):
    """Windowed attention (residual) -> depthwise local ConvBN -> MLP (residual).

    Padding tokens are zeros before the attention's LayerNorm and take part as keys, as in the
    published model. ``[B, H, W, C] -> [B, H, W, C]`` (channels last).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"TinyViT block: dim {dim} is not divisible by num_heads {num_heads}")
        if window_size <= 0:
            raise ValueError(f"TinyViT block: window_size must be positive, got {window_size}")
        self.window_size = window_size
        self.drop_path = _drop_path_or_identity(drop_path)
        self.attn = Attention(dim, dim // num_heads, num_heads, (window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        windows, padded = window_partition(x, self.window_size)
        attn = window_unpartition(self.attn(windows), self.window_size, padded, (h, w))
        x = x + self.drop_path(attn)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(x))


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks, then an optional patch merging. ``[B, C, H, W] -> [B, C', H', W']``."""

    def __init__(
        self,
        dim: int,
        depth: int,
        drop_path: Sequence[float],
        downsample: nn.Module | None,
        conv_expand_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, conv_expand_ratio, drop_path[i]) for i in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks, then an optional patch merging.

    ``[B, C, H, W] -> [B, C', H', W']`` (the blocks run channels last).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: Sequence[float],
        downsample: nn.Module | None,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, drop, drop_path[i], local_conv_size)
            for i in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class TinyViT(nn.Module):
    """MobileSAM's TinyViT image encoder.

    ``forward``: ``[B, in_chans, H, W]`` normalised image (``H = W = img_size = 1024`` in SAM) ->
    ``[B, 256, H/16, W/16]`` image embedding (``[B, 256, 64, 64]``).

    The defaults are MobileSAM's ``vit_t`` (TinyViT-5M widths). ``num_classes`` only sizes the
    classification head ``head`` (kept for checkpoint compatibility, unused by ``forward``).
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        n = len(depths)
        if n < 2 or not len(embed_dims) == len(num_heads) == len(window_sizes) == n:
            raise ValueError(
                "TinyViT: embed_dims, depths, num_heads and window_sizes must have the same length (>= 2), "
                f"got {len(embed_dims)}, {n}, {len(num_heads)}, {len(window_sizes)}"
            )
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])

        # Stochastic depth rate grows linearly over all blocks (MBConv blocks included).
        total = sum(depths)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]

        self.layers = nn.ModuleList()
        for i in range(n):
            rates = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            downsample = None
            if i < n - 1:
                # MobileSAM: the merging into the last stage keeps stride 1 (output at 1/16).
                stride = 1 if i == n - 2 else 2
                downsample = PatchMerging(embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                layer: nn.Module = ConvLayer(embed_dims[0], depths[0], rates, downsample, mbconv_expand_ratio)
            else:
                layer = BasicLayer(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    drop_rate,
                    rates,
                    downsample,
                    local_conv_size,
                )
            self.layers.append(layer)

        # Classification head of the ImageNet TinyViT: present in checkpoints, unused here.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()

        self.apply(_init_weights)

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], 256, kernel_size=1, bias=False),
            LayerNorm2d(256),
            nn.Conv2d(256, 256, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(256),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W] -> [B, 256, H/16, W/16]``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"TinyViT: expected an image batch [B, {self.in_chans}, H, W], got shape {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


def _init_weights(m: nn.Module) -> None:
    # TinyViT's initialisation (before the neck is added): truncated-normal linear layers.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
