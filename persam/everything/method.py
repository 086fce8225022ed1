"""The ``"candidates"`` personalisation method: segment everything, then find mine.

Learning (:func:`persam.learn` with ``method="candidates"``) pools the concept's feature as PerSAM
does, pools each reference object's feature under its mask, and calibrates the acceptance
threshold on the reference image(s) themselves (:func:`~persam.everything.candidates.calibrate`).
Segmenting (:meth:`persam.Concept.segment`) generates every candidate mask of the image, scores
each against the concept (best match over the concept feature and every reference), keeps those
above the threshold, merges duplicates and returns up to ``max_instances`` instances, best first,
or "not found" (an empty result with ``found=False``); the kept masks are refined with the PerSAM
cascade where that helps.

The candidates come from a *mask source*: ``"grid"`` (SAM's automatic mask generator, with
:class:`~persam.everything.amg.GeneratorOptions`) or ``"boxes"`` (one mask per box of an object
detector, MobileSAMv2-style, see :mod:`persam.everything.boxes`). A detector is not saved with a
concept: give it again to a loaded one with :func:`use_detector`.

Example::

    concept = persam.learn(model, "ref.jpg", "ref_mask.png", method="candidates",
                           method_options={"points_per_side": 16})
    result = concept.segment("photo.jpg", max_instances=3)
    result.found, [i.score for i in result.instances]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.everything.amg import GeneratorOptions, MaskGenerator
from persam.everything.boxes import BORDER_MARGIN, BOX_BATCH, BoxDetector, BoxMaskGenerator
from persam.everything.candidates import CandidateGenerator, CandidateMatcher, calibrate
from persam.personalize import Concept, SegmentationResult

#: Mask sources of the method.
SOURCES = ("grid", "boxes")
#: Options that are not :class:`GeneratorOptions` fields, with their defaults (``detector`` is
#: not saved).
METHOD_DEFAULTS: dict[str, Any] = {
    "source": "grid",
    "threshold": None,
    "refine": True,
    "box_batch_size": BOX_BATCH,
    "border_margin": BORDER_MARGIN,
    "max_boxes": None,
}
#: Key of the method's settings in :attr:`Concept.options`.
OPTIONS_KEY = "candidates"


def candidate_options(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], BoxDetector | None]:
    """Checks the ``method_options`` of :func:`persam.learn` for method ``"candidates"``.

    Accepted: ``source`` (``"grid"`` or ``"boxes"``), ``detector`` (a
    :class:`~persam.everything.boxes.BoxDetector`, required for ``"boxes"``), ``threshold``
    (imposes the similarity threshold instead of calibrating it), ``refine`` (PerSAM refinement of
    the kept masks, default True), ``box_batch_size``, ``border_margin`` and ``max_boxes`` (see
    :class:`~persam.everything.boxes.BoxMaskGenerator`), and every
    :class:`~persam.everything.amg.GeneratorOptions` field but ``output_mode`` (grid source).

    Returns:
        The settings stored with the concept (JSON-ready) and the detector.
    """
    given = dict(options or {})
    detector = given.pop("detector", None)
    generator_fields = set(GeneratorOptions.__dataclass_fields__) - {"output_mode"}
    unknown = sorted(set(given) - set(METHOD_DEFAULTS) - generator_fields)
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r} of method 'candidates'")
    settings = {k: given.get(k, v) for k, v in METHOD_DEFAULTS.items()}
    if settings["source"] not in SOURCES:
        raise InputError(f"source must be one of {', '.join(SOURCES)}, got {settings['source']!r}")
    if settings["source"] == "boxes" and detector is None:
        raise InputError("source 'boxes' needs a detector (a callable image -> (boxes, scores))")
    if settings["threshold"] is not None and not math.isfinite(float(settings["threshold"])):
        raise InputError(f"threshold must be a finite number, got {settings['threshold']}")
    generator = {k: v for k, v in given.items() if k in generator_fields}
    if generator.get("point_grids") is not None:
        generator["point_grids"] = [np.asarray(g, np.float64).tolist() for g in generator["point_grids"]]
        generator.setdefault("points_per_side", None)
    GeneratorOptions(**generator)  # raises on a bad value
    settings["generator"] = generator
    settings["refine"] = bool(settings["refine"])
    return settings, detector


def use_detector(concept: Concept, detector: BoxDetector) -> Concept:
    """A copy of a ``"candidates"`` concept that takes its boxes from ``detector`` (a loaded
    concept learned with ``source="boxes"`` needs one before it can segment)."""
    return dataclasses.replace(concept, runtime={**concept.runtime, "detector": detector})


def _settings(concept: Concept) -> dict[str, Any]:
    settings = concept.options.get(OPTIONS_KEY)
    if concept.method != "candidates" or not isinstance(settings, dict):
        raise InputError(f"concept {concept.name or ''!s} was not learned with method 'candidates'")
    return settings


def candidate_generator(model: Backbone, concept: Concept) -> CandidateGenerator:
    """The mask generator of a ``"candidates"`` concept on ``model``."""
    settings = _settings(concept)
    if settings.get("source", "grid") == "boxes":
        detector = concept.runtime.get("detector")
        if detector is None:
            raise InputError(
                "this concept takes its candidates from detector boxes: give it a detector with "
                "persam.everything.use_detector(concept, detector)"
            )
        return BoxMaskGenerator(
            model,
            detector,
            batch_size=int(settings.get("box_batch_size", BOX_BATCH)),
            border_margin=float(settings.get("border_margin", BORDER_MARGIN)),
            max_boxes=settings.get("max_boxes"),
        )
    return MaskGenerator(model, **settings.get("generator", {}))


class CandidatesMethod:
    """The implementation :class:`persam.methods.MethodSpec` names for ``"candidates"``."""

    def learn(
        self,
        model: Backbone,
        concept: Concept,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        options: Mapping[str, Any] | None,
    ) -> Concept:
        """Calibrates ``concept`` (learned from ``images`` / ``masks`` by the shared steps) for
        finding it among candidates; returns the finished concept."""
        settings, detector = candidate_options(options)
        runtime = {"detector": detector} if detector is not None else {}
        concept = dataclasses.replace(
            concept, model=model, runtime=runtime, options={**concept.options, OPTIONS_KEY: settings}
        )
        matcher = calibrate(
            concept,
            list(images),
            list(masks),
            threshold=settings["threshold"],
            generator=candidate_generator(model, concept),
        )
        settings["threshold"] = matcher.threshold
        settings["calibration"] = dict(matcher.calibration)
        # Row 0 is the concept's own feature; the others, one per reference, are stored.
        concept.reference_feats = matcher.references[1:].detach().cpu().float()
        return concept

    def matcher(self, concept: Concept, model: Backbone | None = None) -> CandidateMatcher:
        """The :class:`~persam.everything.candidates.CandidateMatcher` of a learned concept."""
        if model is not None and concept.model is not model:
            concept = concept.bind(model)
        if concept.model is None:
            raise InputError("the concept has no model: bind one with concept.bind(model)")
        if concept.reference_feats is None:
            raise InputError("the concept has no reference features: learn it with method 'candidates'")
        settings = _settings(concept)
        own = F.normalize(concept.target_feat.reshape(1, -1).float(), dim=1)
        refs = torch.cat([own, concept.reference_feats.reshape(-1, own.shape[1]).float()])
        return CandidateMatcher(
            concept,
            refs.to(concept.model.device),
            float(settings["threshold"]),
            calibration=dict(settings.get("calibration") or {}),
            generator=candidate_generator(concept.model, concept),
        )

    def segment(
        self,
        concept: Concept,
        image: Any,
        *,
        max_instances: int = 1,
        score_threshold: float | None = None,
        model: Backbone | None = None,
    ) -> SegmentationResult:
        """Up to ``max_instances`` instances of ``concept`` in ``image``, best first;
        ``score_threshold`` replaces the calibrated similarity threshold."""
        matcher = self.matcher(concept, model)
        if score_threshold is not None:
            matcher.threshold = float(score_threshold)
        return matcher.find(image, max_instances=max_instances, refine=bool(_settings(concept).get("refine")))


#: What :func:`persam.personalize.implementations.method_implementation` returns for "candidates".
CANDIDATES = CandidatesMethod()
