"""Backbones: a promptable segmentation model bound to one image at a time (see :mod:`.base`).

:class:`SamBackbone` (SAM, MobileSAM) and :class:`EfficientSamBackbone` are imported on first use,
so that importing the interface does not import the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from persam.backbones.base import Backbone, DecoderOutput, image_fingerprint

if TYPE_CHECKING:
    from persam.backbones.efficient_sam import EfficientSamBackbone
    from persam.backbones.sam import SamBackbone

_LAZY = {
    "SamBackbone": "persam.backbones.sam",
    "EfficientSamBackbone": "persam.backbones.efficient_sam",
}

__all__ = ["Backbone", "DecoderOutput", "EfficientSamBackbone", "SamBackbone", "image_fingerprint"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'persam.backbones' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
