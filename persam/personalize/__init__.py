"""PerSAM and PerSAM-F: personalise a promptable segmentation backbone from one example.

Public API: :func:`learn` -> :class:`Concept`, :meth:`Concept.segment` -> :class:`SegmentationResult`,
:func:`segment_concepts`, :func:`mask_from_prompts`. The algorithms are small functions over
tensors, one module per step, usable with any :class:`~persam.backbones.base.Backbone`:

* :mod:`.reference` — which embedding cells a reference mask covers, and the object's feature;
* :mod:`.prior` — similarity maps, the location prior (point prompts), target-guided attention;
* :mod:`.boxes` — mask bounding boxes and grown box prompts;
* :mod:`.cascade` — batched decoder stages and the PerSAM / PerSAM-F cascades;
* :mod:`.finetune` — PerSAM-F's two mask weights;
* :mod:`.learn` — a :class:`Concept` from reference(s); :mod:`.concept` — the concept and its file;
* :mod:`.segment` — several concepts and several instances in one image;
* :mod:`.prompts` — a reference mask from clicks, and the check of click prompts.
"""

from persam.errors import ConceptMismatchError, MaskTooSmallError
from persam.personalize.concept import Concept
from persam.personalize.learn import learn, learn_on_current_image, load_reference
from persam.personalize.prompts import box_misses_image, check_prompts, mask_from_prompts, points_outside
from persam.personalize.result import SegmentationResult, StageInfo
from persam.personalize.segment import segment_concepts, segment_current_image

__all__ = [
    "Concept",
    "ConceptMismatchError",
    "MaskTooSmallError",
    "SegmentationResult",
    "StageInfo",
    "box_misses_image",
    "check_prompts",
    "learn",
    "learn_on_current_image",
    "load_reference",
    "mask_from_prompts",
    "points_outside",
    "segment_concepts",
    "segment_current_image",
]
