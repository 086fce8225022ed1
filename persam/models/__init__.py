"""Pure ``nn.Module`` implementations of the segmentation models (checkpoint-compatible keys)."""

from persam.models.image_encoder import ImageEncoderViT
from persam.models.mask_decoder import MaskDecoder
from persam.models.prompt_encoder import PromptEncoder
from persam.models.sam import Sam, mobile_sam_vit_t, sam_from_config, sam_vit_b, sam_vit_h, sam_vit_l
from persam.models.transformer import TwoWayTransformer

__all__ = [
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TwoWayTransformer",
    "mobile_sam_vit_t",
    "sam_from_config",
    "sam_vit_b",
    "sam_vit_h",
    "sam_vit_l",
]
