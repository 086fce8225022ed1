"""Pure ``nn.Module`` implementations of the segmentation models (checkpoint-compatible keys).

The registry (:func:`list_models`, :func:`build_module`, :func:`build_model`, in
:mod:`persam.models.build`) is imported on first use, as it also brings in the backbones.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from persam.models.build import build_model, build_module, list_models

_LAZY = {name: "persam.models.build" for name in ("build_model", "build_module", "list_models")}

__all__ = [
    "EfficientSam",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TinyViT",
    "TwoWayTransformer",
    "build_model",
    "build_module",
    "efficient_sam_from_config",
    "efficient_sam_vit_s",
    "efficient_sam_vit_t",
    "list_models",
    "mobile_sam_vit_t",
    "sam_from_config",
    "sam_vit_b",
    "sam_vit_h",
    "sam_vit_l",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'persam.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
