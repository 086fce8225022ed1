"""Segment everything, then find mine.

:func:`generate_masks` runs SAM's automatic mask generation on any backbone (SAM, MobileSAM,
EfficientSAM): point grids over the image and its crops, batched decoding, quality filtering and
duplicate suppression, giving :class:`MaskRecord` s. :func:`find_candidates` then picks, among
those masks, the ones showing a learned :class:`~persam.personalize.Concept`; as a method,
``persam.learn(..., method="candidates")`` (:mod:`.method`). :class:`BoxMaskGenerator` makes one
mask per box of an object detector instead (MobileSAMv2's object-aware prompts), and
:func:`load_decoder_checkpoint` loads MobileSAMv2's prompt-guided decoder.
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
    "BoxDetector": "persam.everything.boxes",
    "BoxFile": "persam.everything.boxes",
    "BoxMaskGenerator": "persam.everything.boxes",
    "generate_box_masks": "persam.everything.boxes",
    "load_decoder_checkpoint": "persam.everything.decoder_file",
    "candidate_options": "persam.everything.method",
    "use_detector": "persam.everything.method",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persam.everything' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
