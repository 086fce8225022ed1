"""Position encodings of SAM 2.

* :class:`PositionEmbeddingSine`: the fixed 2-D sine encoding of the FPN levels and of the memory
  features (DETR style).
* The random-Fourier encoding of prompts and of the image-embedding grid is SAM's
  :class:`persam.models.prompt_encoder.PositionEmbeddingRandom` (same buffer, same arithmetic),
  re-exported here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from persam.models.prompt_encoder import PositionEmbeddingRandom

__all__ = ["PositionEmbeddingRandom", "PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine encoding of the pixel positions of a ``[B, C, H, W]`` map: ``[B, num_pos_feats, H, W]``.

    Positions are ``1..n`` per axis, normalised by ``(n + 1e-6)`` and scaled by ``scale`` (default
    ``2 pi``); each axis gets ``num_pos_feats / 2`` channels of interleaved ``sin`` / ``cos`` with
    wavelengths ``temperature^(2 floor(i / 2) / (num_pos_feats / 2))``, concatenated ``[y, x]``.
    The result depends only on ``(H, W)`` and is cached per size and device (no parameters).
    """

    def __init__(
        self,
        *,
        num_pos_feats: int,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"PositionEmbeddingSine: num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale needs normalize=True")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def encode(self, h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[2 * num_pos_feats, h, w]`` float32 encoding of an ``h x w`` grid."""
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (h, w, device)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device).view(-1, 1).expand(h, w)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device).view(1, -1).expand(h, w)
        if self.normalize:
            eps = 1e-6
            y = y / (y[-1:, :] + eps) * self.scale
            x = x / (x[:, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = _interleave_sin_cos(x[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y[..., None] / dim_t)
        pos = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)
        if device.type != "meta":
            self._cache[key] = pos
        return pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, 2 * num_pos_feats, H, W]`` float32 (a broadcast view over ``B``)."""
        pos = self.encode(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """``[..., n]`` angles -> ``[..., n]`` with ``sin`` of the even and ``cos`` of the odd channels,
    interleaved (``sin a0, cos a1, sin a2, cos a3, ...``)."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
