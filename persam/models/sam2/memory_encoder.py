"""SAM 2 memory encoder: fuses a frame's features with its predicted mask into a memory.

``mask (1024²) -> MaskDownSampler -> + pix_feat_proj(features) -> Fuser (CXBlocks) -> out_proj``,
plus the sine position encoding of the result. Constructors take the field names of the official
``model.memory_encoder`` tree; nested settings may be dicts (``_target_`` ignored), see
:meth:`MemoryEncoder.from_config`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import LayerNorm2d
from persam.models.sam2.position_encoding import PositionEmbeddingSine


def _settings(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != "_target_"}


class MaskDownSampler(nn.Module):
    """``[B, 1, H, W]`` mask -> ``[B, embed_dim, H / total_stride, W / total_stride]``.

    ``log_stride(total_stride)`` times (conv ``kernel_size`` / ``stride``, LayerNorm2d, GELU), the
    channels growing by ``stride²`` each time, then a 1×1 conv to ``embed_dim``. The ``encoder``
    indices (conv, norm, act per step) are those of the official state dict.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
    ) -> None:
        super().__init__()
        num_layers = round(math.log(total_stride) / math.log(stride))
        if stride**num_layers != total_stride:
            raise ValueError(f"MaskDownSampler: total_stride {total_stride} is not a power of {stride}")
        self.encoder = nn.Sequential()
        chans = 1
        for _ in range(num_layers):
            out = chans * stride**2
            self.encoder.append(nn.Conv2d(chans, out, kernel_size, stride=stride, padding=padding))
            self.encoder.append(LayerNorm2d(out))
            self.encoder.append(nn.GELU())
            chans = out
        self.encoder.append(nn.Conv2d(chans, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, MLP ×4 (GELU), layer scale ``gamma``, residual."""

    def __init__(
        self,
        *,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        if drop_path > 0:
            raise ValueError("CXBlock: drop_path is a training option and is not supported")
        # gamma first: a direct parameter precedes the children in the official state-dict order.
        self.gamma = (
            nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            if layer_scale_init_value > 0
            else None
        )
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, H, W]`` -> ``[B, dim, H, W]``."""
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """Optional 1×1 input projection, then ``num_layers`` copies of ``layer`` (CXBlocks)."""

    def __init__(
        self,
        *,
        layer: CXBlock | dict[str, Any],
        num_layers: int,
        dim: int | None = None,
        input_projection: bool = False,
    ) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Identity()
        if input_projection:
            if dim is None:
                raise ValueError("Fuser: input_projection needs dim")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.layers = nn.ModuleList(
            copy.deepcopy(layer) if isinstance(layer, nn.Module) else CXBlock(**_settings(layer))
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encodes (frame features, mask) into a ``out_dim``-channel memory and its position encoding.

    ``position_encoding`` is a sine PE module or the official ``PositionEmbeddingSine`` settings dict
    (``num_pos_feats``, ``temperature``, ``normalize``, ``scale``); it has no weights.
    """

    def __init__(
        self,
        *,
        out_dim: int,
        mask_downsampler: MaskDownSampler | dict[str, Any],
        fuser: Fuser | dict[str, Any],
        position_encoding: nn.Module | dict[str, Any],
        in_dim: int = 256,
    ) -> None:
        super().__init__()
        if not isinstance(mask_downsampler, nn.Module):
            mask_downsampler = MaskDownSampler(**_settings(mask_downsampler))
        if not isinstance(fuser, nn.Module):
            fuser = Fuser(**_settings(fuser))
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.out_proj: nn.Module = (
            nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()
        )
        if not isinstance(position_encoding, nn.Module):
            # Only the settings that change the encoding (cache warm-up options do not).
            pe = _settings(position_encoding)
            position_encoding = PositionEmbeddingSine(
                num_pos_feats=int(pe["num_pos_feats"]),
                temperature=pe.get("temperature", 10000),
                normalize=pe.get("normalize", True),
                scale=pe.get("scale"),
            )
        self.position_encoding = position_encoding
        self.in_dim = in_dim
        self.out_dim = out_dim

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MemoryEncoder:
        """Builds from the official ``model.memory_encoder`` tree (``_target_`` entries ignored)."""
        return cls(**_settings(cfg))

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes one memory.

        Args:
            pix_feat: ``[B, in_dim, h, w]`` stride-16 frame features.
            masks: ``[B, 1, 16h, 16w]`` mask logits (or already-squashed values with
                ``skip_mask_sigmoid``).

        Returns:
            ``(features [B, out_dim, h, w], pos [B, out_dim, h, w])``.
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        b, _, h, w = x.shape
        return x, self.memory_pos_enc(h, w, batch=b, device=x.device).to(x.dtype)

    def memory_pos_enc(
        self, h: int, w: int, *, batch: int = 1, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``[batch, out_dim, h, w]`` float32 sine encoding of an ``h x w`` memory (it depends on
        the size only, so a tracker can compute it once)."""
        return self.position_encoding(torch.empty(batch, 0, h, w, device=device))
