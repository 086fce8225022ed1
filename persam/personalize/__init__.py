"""PerSAM and PerSAM-F: personalise a promptable segmentation backbone from one example.

Public API (:mod:`.concept`): :func:`learn` -> :class:`Concept`, :meth:`Concept.segment` ->
:class:`SegmentationResult`, :func:`segment_concepts`, :func:`mask_from_prompts`. The algorithms
themselves are plain functions over tensors in :mod:`.core` (PerSAM) and :mod:`.finetune`
(PerSAM-F), usable with any :class:`~persam.backbones.base.Backbone`.
"""

from persam.personalize.concept import (
    Concept,
    ConceptMismatchError,
    SegmentationResult,
    StageInfo,
    learn,
    mask_from_prompts,
    segment_concepts,
    segment_current_image,
)
from persam.personalize.core import MaskTooSmallError

__all__ = [
    "Concept",
    "ConceptMismatchError",
    "MaskTooSmallError",
    "SegmentationResult",
    "StageInfo",
    "learn",
    "mask_from_prompts",
    "segment_concepts",
    "segment_current_image",
]
