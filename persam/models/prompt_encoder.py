"""SAM prompt encoder: points, boxes and a dense low-res mask become sparse tokens and a dense
embedding for the mask decoder."""

from __future__ import annotations

import math

import torch
from torch import nn

from persam.models.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (Fourier features).

    Coordinates normalised to ``[0, 1]`` are mapped to ``[sin(2 pi (2c - 1) G), cos(...)]`` with a
    fixed Gaussian matrix ``G`` ``[2, num_pos_feats]`` (a persistent buffer: it is in checkpoints).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` coordinates in ``[0, 1]`` -> ``[..., 2 * num_pos_feats]``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the pixel centres of an ``(h, w)`` grid: ``[2 * num_pos_feats, h, w]``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))
        return pe.permute(2, 0, 1)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """``[B, N, 2]`` (x, y) pixel coordinates on an ``image_size`` = (H, W) frame ->
        ``[B, N, 2 * num_pos_feats]``."""
        x = coords_input[..., 0] / image_size[1]
        y = coords_input[..., 1] / image_size[0]
        return self._pe_encoding(torch.stack([x, y], dim=-1).to(torch.float))


class PromptEncoder(nn.Module):
    """Encodes prompts on the ``input_image_size`` (1024x1024 padded) frame.

    Sparse tokens: one per point (+1 "not a point" padding token when there is no box) and two
    per box (its corners). Dense: the downscaled ``mask_input`` or the learned ``no_mask_embed``.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # Point types: 0 negative, 1 positive, 2 box top-left, 3 box bottom-right.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, ``[1, embed_dim, h, w]``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """``[B, N, 2]`` points + ``[B, N]`` labels -> ``[B, N (+1 if pad), embed_dim]``."""
        points = points + 0.5  # pixel centre
        if pad:
            b = points.shape[0]
            points = torch.cat([points, points.new_zeros((b, 1, 2))], dim=1)
            labels = torch.cat([labels, -labels.new_ones((b, 1))], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        # A padding point carries no position; other labels add their type embedding.
        out = torch.where(lab == -1, self.not_a_point_embed.weight, pe)
        out = torch.where(lab == 0, pe + self.point_embeddings[0].weight, out)
        out = torch.where(lab == 1, pe + self.point_embeddings[1].weight, out)
        return out

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``[B, 4]`` XYXY boxes -> ``[B, 2, embed_dim]`` corner tokens."""
        boxes = boxes + 0.5  # pixel centre
        coords = boxes.reshape(-1, 2, 2)
        corners = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return corners + corner_types

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 4h, 4w]`` mask logits -> ``[B, embed_dim, h, w]``."""
        return self.mask_downscaling(masks)

    @staticmethod
    def _batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse ``[B, T, embed_dim]`` and dense ``[B, embed_dim, h, w]`` embeddings.

        Args:
            points: ``([B, N, 2] (x, y) on the 1024 frame, [B, N] labels)`` or None.
            boxes: ``[B, 4]`` XYXY on the 1024 frame, or None.
            masks: ``[B, 1, 256, 256]`` low-res mask logits, or None.
        """
        bs = self._batch_size(points, boxes, masks)
        device = self.point_embeddings[0].weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
