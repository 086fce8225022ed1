"""Segment everything, then find mine.

:func:`generate_masks` runs SAM's automatic mask generation on any backbone (SAM, MobileSAM,
EfficientSAM): point grids over the image and its crops, batched decoding, quality filtering and
duplicate suppression, giving :class:`MaskRecord` s. :func:`find_candidates` then picks, among
those masks, the ones showing a learned :class:`~persam.personalize.Concept`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GeneratorOptions": "persam.everything.amg",
    "MaskGenerator": "persam.everything.amg",
    "generate_masks": "persam.everything.amg",
    "GridSource": "persam.everything.grid",
    "PromptSource": "persam.everything.grid",
    "MaskRecord": "persam.everything.records",
    "CandidateMatcher": "persam.everything.candidates",
    "CandidateResult": "persam.everything.candidates",
    "find_candidates": "persam.everything.candidates",
    "calibrate": "persam.everything.candidates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persam.everything' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
