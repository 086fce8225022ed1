"""EfficientSAM (Xiong et al. 2023): a plain ViT image encoder with SAM's two-way mask decoder.

Only what differs from SAM is written here; everything else is reused from the SAM modules:

* :mod:`.image_encoder`: a global-attention ViT with a bicubically resized absolute position
  embedding (no windows, no relative positions) followed by SAM's neck;
* :mod:`.prompt_encoder`: prompts are always exactly ``max_num_points`` points: a box is two
  corner points with labels 2 (top-left) and 3 (bottom-right), padding points carry label -1,
  negative points get no type embedding at all, and there is no dense (mask) prompt;
* :mod:`.mask_decoder`: in the two-way blocks the query self-attention keeps its residual in the
  first layer and adds the query positional embedding into the residual stream in later layers;
  the MLPs are ``layers.<i>.0`` + ``fc`` with GELU everywhere, and the output upscaling uses
  ``GroupNorm(1, C)`` instead of :class:`LayerNorm2d`;
* :mod:`.model`: :class:`EfficientSam` and its builders.

State-dict keys follow the official checkpoints (``efficient_sam_vitt.pt`` / ``efficient_sam_vits.pt``,
weights under the top-level key ``'model'``).
"""

from __future__ import annotations

from persam.models.efficient_sam.image_encoder import (
    PRETRAIN_IMG_SIZE,
    EfficientSamImageEncoder,
    PatchEmbed,
    ViTAttention,
    ViTBlock,
    ViTMlp,
    resize_abs_pos,
)
from persam.models.efficient_sam.mask_decoder import (
    EfficientSamMaskDecoder,
    EfficientSamMLP,
    EfficientSamTwoWayAttentionBlock,
    EfficientSamTwoWayTransformer,
)
from persam.models.efficient_sam.model import (
    PIXEL_MEAN,
    PIXEL_STD,
    EfficientSam,
    efficient_sam_from_config,
    efficient_sam_vit_s,
    efficient_sam_vit_t,
)
from persam.models.efficient_sam.prompt_encoder import EfficientSamPromptEncoder

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "PRETRAIN_IMG_SIZE",
    "EfficientSam",
    "EfficientSamImageEncoder",
    "EfficientSamMLP",
    "EfficientSamMaskDecoder",
    "EfficientSamPromptEncoder",
    "EfficientSamTwoWayAttentionBlock",
    "EfficientSamTwoWayTransformer",
    "PatchEmbed",
    "ViTAttention",
    "ViTBlock",
    "ViTMlp",
    "efficient_sam_from_config",
    "efficient_sam_vit_s",
    "efficient_sam_vit_t",
    "resize_abs_pos",
]
