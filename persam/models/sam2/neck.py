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
        self, xs: Sequence[torch.Tensor], *, with_pos_enc: bool = True
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """``xs``: trunk maps, finest first (``len(backbone_channel_list)`` of them).

        Returns ``(features, pos)``, finest first; ``pos`` entries are None without ``with_pos_enc``.
        """
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"FpnNeck: expected {n + 1} feature maps, got {len(xs)}")
        out: list[torch.Tensor] = [torch.empty(0)] * (n + 1)
        pos: list[torch.Tensor | None] = [None] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                # The official neck up-samples in float32 even under autocast.
                top_down = F.interpolate(
                    prev.to(torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                prev = lateral + top_down
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            if with_pos_enc:
                pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos
