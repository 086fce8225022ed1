"""The TinyViT network: stages of MBConv or TinyViT blocks with patch merging, and the SAM neck."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from persam.models.common import LayerNorm2d
from persam.models.tiny_vit.attention import TinyViTBlock
from persam.models.tiny_vit.layers import MBConv, PatchEmbed, PatchMerging, is_pointwise, pointwise_conv


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

    ``[B, C, H, W] -> [B, C', H', W']`` (the blocks run on ``[B, H, W, C]`` tokens; for a
    channels-last input that view needs no copy).
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
        # Channels-last throughout: the convolutions (1x1 and depthwise above all) run 1.5-2x
        # faster on the CPU in this layout, and the transformer stages' NCHW <-> NHWC permutes
        # become free views instead of copies.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        conv1x1, *rest = self.neck
        x = pointwise_conv(x, conv1x1.weight, conv1x1.bias) if is_pointwise(conv1x1) else conv1x1(x)
        for module in rest:
            x = module(x)
        return x.contiguous()


def _init_weights(m: nn.Module) -> None:
    # TinyViT's initialisation (before the neck is added): truncated-normal linear layers.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
