"""Pure ``nn.Module`` implementations of the segmentation models (checkpoint-compatible keys) and
their size builders (``sam_vit_b()``, ...).

Names, checkpoints and building from configs or checkpoint files live in :mod:`persam.registry`.
"""

from __future__ import annotations

from persam.models.efficient_sam import (
    EfficientSam,
    efficient_sam_from_config,
    efficient_sam_vit_s,
    efficient_sam_vit_t,
)
from persam.models.image_encoder import ImageEncoderViT
from persam.models.mask_decoder import MaskDecoder
from persam.models.prompt_encoder import PromptEncoder
from persam.models.sam import Sam, mobile_sam_vit_t, sam_from_config, sam_vit_b, sam_vit_h, sam_vit_l
from persam.models.tiny_vit import TinyViT
from persam.models.transformer import TwoWayTransformer

__all__ = [
    "EfficientSam",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TinyViT",
    "TwoWayTransformer",
    "efficient_sam_from_config",
    "efficient_sam_vit_s",
    "efficient_sam_vit_t",
    "mobile_sam_vit_t",
    "sam_from_config",
    "sam_vit_b",
    "sam_vit_h",
    "sam_vit_l",
]
