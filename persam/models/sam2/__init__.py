"""SAM 2 / 2.1 (Hiera image encoder, FPN neck, SAM heads with object scores and high-resolution
skips, video memory modules) as pure ``nn.Module``s with the official state-dict keys."""

from __future__ import annotations

from persam.models.sam2.build import (
    sam2_1_hiera_b_plus,
    sam2_1_hiera_l,
    sam2_1_hiera_s,
    sam2_1_hiera_t,
    sam2_from_config,
    sam2_hiera_b_plus,
    sam2_hiera_l,
    sam2_hiera_s,
    sam2_hiera_t,
)
from persam.models.sam2.configs import official_config, tiny_sam2_config
from persam.models.sam2.hiera import Hiera
from persam.models.sam2.image_encoder import Sam2EncoderOutput, Sam2ImageEncoder
from persam.models.sam2.mask_decoder import Sam2DecoderResult, Sam2MaskDecoder
from persam.models.sam2.neck import FpnNeck
from persam.models.sam2.position_encoding import PositionEmbeddingSine
from persam.models.sam2.prompt_encoder import Sam2PromptEncoder
from persam.models.sam2.sam2 import NO_OBJ_SCORE, Sam2
from persam.models.sam2.transformer import Sam2TwoWayTransformer

__all__ = [
    "NO_OBJ_SCORE",
    "FpnNeck",
    "Hiera",
    "PositionEmbeddingSine",
    "Sam2",
    "Sam2DecoderResult",
    "Sam2EncoderOutput",
    "Sam2ImageEncoder",
    "Sam2MaskDecoder",
    "Sam2PromptEncoder",
    "Sam2TwoWayTransformer",
    "official_config",
    "sam2_1_hiera_b_plus",
    "sam2_1_hiera_l",
    "sam2_1_hiera_s",
    "sam2_1_hiera_t",
    "sam2_from_config",
    "sam2_hiera_b_plus",
    "sam2_hiera_l",
    "sam2_hiera_s",
    "sam2_hiera_t",
    "tiny_sam2_config",
]
