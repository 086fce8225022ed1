"""SAM 2's prompt encoder: SAM's, with box corners accepted as points (labels 2 and 3).

SAM 2's predictors never pass ``boxes``: a box becomes two points labelled 2 (top-left) and 3
(bottom-right), and because ``boxes`` is then None, a padding point (label -1, "not a point") is
appended to every non-empty point set, box corners included. Keys and arithmetic are otherwise
those of :class:`persam.models.prompt_encoder.PromptEncoder`.
"""

from __future__ import annotations

import torch

from persam.models.prompt_encoder import PromptEncoder

PADDING_LABEL = -1
BOX_TOP_LEFT_LABEL = 2
BOX_BOTTOM_RIGHT_LABEL = 3


class Sam2PromptEncoder(PromptEncoder):
    """Sparse tokens for labelled points (-1 padding, 0 negative, 1 positive, 2 / 3 box corners)
    and the dense mask embedding; see :class:`~persam.models.prompt_encoder.PromptEncoder`."""

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """``[B, N, 2]`` points on the input frame + ``[B, N]`` labels -> ``[B, N (+1), embed_dim]``."""
        points = points + 0.5  # pixel centre
        if pad:
            b = points.shape[0]
            points = torch.cat([points, points.new_zeros((b, 1, 2))], dim=1)
            labels = torch.cat([labels, labels.new_full((b, 1), PADDING_LABEL)], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        # A padding point carries no position; every other label adds its type embedding.
        out = torch.where(lab == PADDING_LABEL, self.not_a_point_embed.weight, pe)
        for label, embedding in enumerate(self.point_embeddings):
            out = torch.where(lab == label, pe + embedding.weight, out)
        return out
