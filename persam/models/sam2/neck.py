"""SAM 2's FPN neck: 1x1 lateral convolutions to ``d_model`` channels plus a top-down path.

Unlike a classic FPN there is no output convolution, and only the ``fpn_top_down_levels`` receive
the up-sampled coarser level (SAM 2: levels 2 and 3, i.e. strides 16 and 32; the stride-4 and
stride-8 levels are the lateral features alone). State-dict keys as the official ``FpnNeck``
(``convs.<i>.conv``, ``convs.0`` acting on the coarsest level).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FpnNeck(nn.Module):
    """``[coarsest, ..., finest]`` trunk maps -> per level features ``[B, d_model, h_i, w_i]`` and
    their position encodings, finest level first.

    Args:
        position_encoding: module mapping ``[B, C, h, w]`` to its encoding ``[B, d_model, h, w]``.
        d_model: output width of every level.
        backbone_channel_list: trunk widths, coarsest level first (as ``Hiera.channel_list``).
        fpn_interp_model: ``"nearest"`` or ``"bilinear"`` up-sampling of the top-down path.
        fuse_type: ``"sum"`` or ``"avg"`` of lateral and top-down features.
        fpn_top_down_levels: levels (0 = finest) that receive the top-down path; default all.
    """

    def __init__(
        self,
        *,
        position_encoding: nn.Module,
        d_model: int,
        backbone_channel_list: Sequence[int],
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        fpn_interp_model: str = "bilinear",
        fuse_type: str = "sum",
        fpn_top_down_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FpnNeck: fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(dim, d_model, kernel_size, stride, padding)))
            for dim in self.backbone_channel_list
        )
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        levels = range(len(self.convs)) if fpn_top_down_levels is None else fpn_top_down_levels
        self.fpn_top_down_levels = list(levels)

    def forward(
        self,
        xs: Sequence[torch.Tensor],
        *,
        with_pos_enc: bool = True,
        level_proj: Sequence[nn.Module | None] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """``xs``: trunk maps, finest first (``len(backbone_channel_list)`` of them).

        ``level_proj`` (finest first, may be shorter than ``xs``): a module applied to the output of
        that level (SAM 2's ``conv_s0`` / ``conv_s1``). On a level without the top-down path a
        1x1 convolution there is folded into the lateral one (one product of the two weight
        matrices instead of a full-resolution ``d_model``-wide intermediate map).

        Returns ``(features, pos)``, finest first; ``pos`` entries are None without ``with_pos_enc``.
        """
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"FpnNeck: expected {n + 1} feature maps, got {len(xs)}")
        projs = list(level_proj or [])
        projs += [None] * (n + 1 - len(projs))
        out: list[torch.Tensor] = [torch.empty(0)] * (n + 1)
        pos: list[torch.Tensor | None] = [None] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            lateral_conv = self.convs[n - i].conv
            top_down = i in self.fpn_top_down_levels and prev is not None
            proj = projs[i]
            feeds_next = i > 0 and (i - 1) in self.fpn_top_down_levels
            foldable = proj is not None and not (top_down or feeds_next)
            if foldable and _is_pointwise(lateral_conv) and _is_pointwise(proj):
                # Both maps are linear in the trunk features: fold them into one 1x1 convolution.
                w_p = proj.weight.flatten(1)
                weight = w_p @ lateral_conv.weight.flatten(1)
                bias = _bias(proj) + w_p @ _bias(lateral_conv)
                out[i] = _pointwise(xs[i], weight, bias)
                if with_pos_enc:
                    pos[i] = self.position_encoding(out[i]).to(out[i].dtype)
                continue
            lateral = _conv(lateral_conv, xs[i])
            if top_down:
                # The official neck up-samples in float32 even under autocast.
                up = F.interpolate(
                    prev.to(torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                prev = lateral + up
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev if proj is None else _conv(proj, prev)
            if with_pos_enc:
                pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


def _is_pointwise(conv: nn.Module) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped ``nn.Conv2d`` (a per-pixel linear map)."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is not None:
        return conv.bias
    return conv.weight.new_zeros(conv.out_channels)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` through the per-pixel linear map ``weight`` ``[C_out, C]``: a matrix product
    over the channels-last pixels (the trunk's maps are channels-last in memory)."""
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)


def _conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if _is_pointwise(conv):
        return _pointwise(x, conv.weight.flatten(1), _bias(conv))
    return conv(x)
