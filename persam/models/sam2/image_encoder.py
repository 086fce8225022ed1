"""SAM 2's image encoder: a trunk (Hiera) followed by the FPN neck, minus the ``scalp`` coarsest levels.

With the official configs (``scalp=1``) the output has three levels, strides 4, 8 and 16 on a
1024x1024 input: ``[B, d, 256, 256]``, ``[B, d, 128, 128]`` and ``[B, d, 64, 64]``; the stride-32
level is computed (it feeds the top-down path into stride 16) and then dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn


class Sam2EncoderOutput(NamedTuple):
    """Multi-scale features of a batch of images (finest level first).

    Attributes:
        backbone_fpn: ``[B, d, h_i, w_i]`` per level (official name ``backbone_fpn``).
        vision_pos_enc: their sine position encodings ``[B, d, h_i, w_i]`` (or Nones when not
            requested).
    """

    backbone_fpn: list[torch.Tensor]
    vision_pos_enc: list[torch.Tensor | None]

    @property
    def vision_features(self) -> torch.Tensor:
        """The coarsest kept level, ``[B, d, 64, 64]`` for a 1024 input."""
        return self.backbone_fpn[-1]


class Sam2ImageEncoder(nn.Module):
    """``trunk`` + ``neck`` (injected) with the ``scalp`` coarsest levels removed.

    Keys ``trunk.*`` / ``neck.*`` as the official ``ImageEncoder``.
    """

    def __init__(self, *, trunk: nn.Module, neck: nn.Module, scalp: int = 0) -> None:
        super().__init__()
        trunk_channels = list(getattr(trunk, "channel_list", []))
        neck_channels = list(getattr(neck, "backbone_channel_list", []))
        if trunk_channels != neck_channels:
            raise ValueError(f"trunk widths {trunk_channels} do not match the neck's {neck_channels}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(
        self,
        x: torch.Tensor,
        *,
        with_pos_enc: bool = True,
        level_proj: Sequence[nn.Module | None] | None = None,
    ) -> Sam2EncoderOutput:
        """``[B, 3, S, S]`` normalised images -> :class:`Sam2EncoderOutput` (finest level first).

        ``level_proj``: optional per-level output projections, finest first (see ``FpnNeck``).
        """
        trunk_out = self.trunk(x)
        if level_proj is None:
            features, pos = self.neck(trunk_out, with_pos_enc=with_pos_enc)
        else:
            features, pos = self.neck(trunk_out, with_pos_enc=with_pos_enc, level_proj=level_proj)
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return Sam2EncoderOutput(list(features), list(pos))
