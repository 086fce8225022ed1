"""TinyViT's convolutional and MLP building blocks: stochastic depth, Conv+BatchNorm, the patch
embedding, MBConv (inverted residual), patch merging and the transformer MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import act_inplace, may_overwrite


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

    ``[B, in_chans, H, W] -> [B, out_chans, H', W']``. In eval mode the BatchNorm is folded into
    the convolution (``w * s``, bias ``beta - mean * s`` with ``s = gamma / sqrt(var + eps)``): one
    pass over the output instead of two, equal to conv-then-BN up to float32 rounding (~1e-7
    relative). The folded weights are recomputed at every call (a few kilobytes), so they always
    follow the current parameters and running statistics.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv: nn.Conv2d = self.c
        bn: nn.BatchNorm2d = self.bn
        if self.training or not bn.track_running_stats or bn.running_var is None:
            return bn(conv(x))
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        if is_pointwise(conv):
            return pointwise_conv(x, weight, bias)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def is_pointwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a plain 1x1 convolution (stride 1, no padding, one group)."""
    return (
        conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution as one GEMM over the pixels: ``[B, C, H, W]`` (best channels-last) with
    ``weight [C', C, 1, 1]`` -> ``[B, C', H, W]`` channels-last.

    On the CPU torch sends 1x1 convolutions to its slow im2col path (plus a layout copy for a
    channels-last input); as a linear layer on the ``[B, H, W, C]`` view of a channels-last map it
    is one GEMM with no copy in or out (1.6x faster for TinyViT's layers)."""
    y = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)
    return y.permute(0, 3, 1, 2)


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
        conv1, act, conv2 = self.seq
        return conv2(act_inplace(act, conv1(x)))


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
        y = act_inplace(self.act1, self.conv1(x))
        y = act_inplace(self.act2, self.conv2(y))
        y = self.drop_path(self.conv3(y))
        y = y.add_(x) if may_overwrite(y) else x + y
        return act_inplace(self.act3, y)


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
        x = act_inplace(self.act, self.conv1(x))
        x = act_inplace(self.act, self.conv2(x))
        return self.conv3(x)


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
        x = self.drop(act_inplace(self.act, self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))
