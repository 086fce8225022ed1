"""EfficientSAM's prompt encoder: always a fixed number of labelled points (a box is two labelled
corner points), and no dense (mask) prompt."""

from __future__ import annotations

import torch
from torch import nn

from persam.models.prompt_encoder import PositionEmbeddingRandom


class EfficientSamPromptEncoder(nn.Module):
    """Embeds a fixed number of labelled points (a box is two labelled corner points).

    Labels: 1 positive point, 0 negative point (positional encoding only), 2 box top-left corner,
    3 box bottom-right corner, -1 padding (positional encoding of its coordinates plus
    ``invalid_points``; not zeroed). Any other label gets the positional encoding only.
    """

    def __init__(
        self, embed_dim: int, image_embedding_size: tuple[int, int], input_image_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """``[1, C, h, w]`` positional encoding of the image-embedding cell centres."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _label_embeddings(self) -> dict[int, torch.Tensor]:
        return {
            -1: self.invalid_points.weight,
            1: self.point_embeddings.weight,
            2: self.bbox_top_left_embeddings.weight,
            3: self.bbox_bottom_right_embeddings.weight,
        }

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sparse prompt embeddings.

        Args:
            coords: ``[B, N, 2]`` (x, y) in pixels of the encoder input frame (1024 x 1024).
            labels: ``[B, N]`` integer labels (see the class docstring).

        Returns:
            ``[B, N, C]`` float32 embeddings.
        """
        # Pixel centres, normalised by the input frame (x by width, y by height).
        emb = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        for label, weight in self._label_embeddings().items():
            emb = emb + (labels == label).unsqueeze(-1).to(emb.dtype) * weight
        return emb
