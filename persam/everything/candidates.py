"""Find mine among everything: pick, among the automatically generated masks of an image, those
that show a learned :class:`~persam.personalize.Concept`.

Every candidate mask is scored by the cosine similarity of its *mask-pooled* image feature (the
image embedding averaged under the mask, resampled with the backbone's own geometry) with the
concept: the best match among the concept's target feature and the pooled feature of each
reference object (few-shot: all of them). The acceptance threshold is calibrated on the reference
image(s) themselves: halfway between the score of the candidate that is the reference object and
the best score among the other candidates there, so that it separates the object from what
surrounds it with this backbone. Kept candidates that duplicate one another are merged, and up to
``max_instances`` are returned as a :class:`~persam.personalize.SegmentationResult` (``score`` is
the similarity), optionally refined with the PerSAM cascade where that helps.

The candidates come from any *mask generator* (an object with ``generate(image) ->
list[MaskRecord]``): SAM's automatic mask generator (:class:`~persam.everything.amg.MaskGenerator`,
the default) or one mask per detector box (:class:`~persam.everything.boxes.BoxMaskGenerator`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.everything.amg import MaskGenerator
from persam.everything.grid import PromptSource
from persam.everything.records import MaskRecord
from persam.io import as_image, as_mask
from persam.personalize import Concept, SegmentationResult
from persam.personalize.cascade import cascaded_refinement
from persam.personalize.prior import similarity_maps, target_guided_attention

ImageLike = np.ndarray | str | os.PathLike

#: A candidate whose IoU with a reference mask reaches this is the reference object itself.
OWN_IOU = 0.5
#: A candidate whose overlap with a reference mask stays below this fraction of its own area is
#: another thing in the reference image.
OTHER_OVERLAP = 0.2
#: The calibrated threshold never lies further than this below the reference object's own score
#: (when the reference image has no other candidate to place it against).
MAX_MARGIN = 0.25
#: Two kept candidates overlapping by more than this fraction of the smaller one show one instance.
DUPLICATE_OVERLAP = 0.5
#: Near-identical duplicates (at least this IoU with the instance) are merged into it by union.
MERGE_IOU = 0.5
#: ``final_stage`` of a result whose masks come straight from the mask generator.
STAGE = "everything"


class CandidateGenerator(Protocol):
    """Where candidate masks come from: every mask of an image, as records."""

    def generate(self, image: np.ndarray) -> list[MaskRecord]: ...


def _model_of(concept: Concept) -> Backbone:
    if concept.model is None:
        raise InputError("the concept has no model: bind one with concept.bind(model)")
    return concept.model


def mask_pooled_features(model: Backbone, masks: Sequence[np.ndarray]) -> torch.Tensor:
    """The image feature under each mask, on the current image.

    Args:
        model: with an image set.
        masks: bool ``[H, W]`` masks of that image.

    Returns:
        float32 ``[K, C]``, L2-normalised; a row of NaN where a mask covers no part of any
        embedding cell (a sliver thinner than the resampling picks up).
    """
    feats = model.features[0]  # [C, h, w]
    if not len(masks):
        return feats.new_zeros(0, feats.shape[0])
    grids = [model.mask_to_embedding_grid(np.asarray(m, bool).astype(np.uint8) * 255) for m in masks]
    weights = torch.stack(grids).to(feats) / 255.0  # [K, h, w]
    pooled = torch.einsum("khw,chw->kc", weights, feats) / weights.sum(dim=(1, 2))[:, None]
    return F.normalize(pooled, dim=1)


def mask_ious(masks: Sequence[np.ndarray], target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(IoU with target, fraction of each mask inside target)``, float64 ``[K]`` each."""
    t = np.asarray(target, bool)
    inter = np.array([np.count_nonzero(m & t) for m in masks], np.float64)
    area = np.array([np.count_nonzero(m) for m in masks], np.float64)
    union = area + np.count_nonzero(t) - inter
    return inter / np.maximum(union, 1), inter / np.maximum(area, 1)


@dataclass
class CandidateMatcher:
    """A concept ready to be found among generated masks.

    Attributes:
        concept: the learned concept (bound to its model).
        references: float32 ``[R, C]`` normalised features a candidate is compared with.
        threshold: minimum score of a kept candidate.
        generator_options: :class:`~persam.everything.amg.GeneratorOptions` fields used to
            generate the candidates.
        source: prompt source of the generator (None: its point grids).
        calibration: how the threshold was found (JSON-ready).
        generator: the mask generator; None: SAM's automatic mask generator with
            ``generator_options`` and ``source``.
    """

    concept: Concept
    references: torch.Tensor
    threshold: float
    generator_options: dict[str, Any] = field(default_factory=dict)
    source: PromptSource | None = None
    calibration: dict[str, float] = field(default_factory=dict)
    generator: CandidateGenerator | None = None

    @property
    def model(self) -> Backbone:
        return _model_of(self.concept)

    def candidates(self, image: np.ndarray) -> list[np.ndarray]:
        """The generated masks of ``image`` (bool ``[H, W]`` each), the full image left set."""
        generator = self.generator
        if generator is None:
            generator = MaskGenerator(self.model, source=self.source, **self.generator_options)
        records = generator.generate(image)
        self.model.set_image(image)
        return [r.mask for r in records]

    def scores(self, masks: Sequence[np.ndarray]) -> torch.Tensor:
        """Similarity of each mask of the current image with the concept: float32 ``[K]`` (best
        match over :attr:`references`; ``-inf`` for a mask too thin to pool)."""
        pooled = mask_pooled_features(self.model, masks)
        if pooled.shape[0] == 0:
            return pooled.new_zeros(0)
        sims = (pooled @ self.references.to(pooled).T).amax(dim=1)
        return torch.nan_to_num(sims, nan=-float("inf"))

    def find(self, image: ImageLike, *, max_instances: int = 5, refine: bool = False) -> SegmentationResult:
        """Up to ``max_instances`` instances of the concept in ``image``, best first (``found`` is
        False when no candidate reaches :attr:`threshold`)."""
        if max_instances < 1:
            raise InputError(f"max_instances must be >= 1, got {max_instances}")
        img = as_image(image, "image")
        masks = self.candidates(img)
        scores = self.scores(masks).cpu()
        order = torch.sort(scores, descending=True, stable=True)[1].tolist()
        chosen = [i for i in order if float(scores[i]) >= self.threshold]
        instances = _merge_duplicates([masks[i] for i in chosen], [float(scores[i]) for i in chosen])
        instances = instances[:max_instances]
        if refine and instances:
            instances = self._refined(instances)
        best = float(scores[order[0]]) if order else float("nan")
        return _result(instances, img.shape[:2], best, self.concept.name)

    def _refined(self, instances: list[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float]]:
        """Each instance re-segmented by the PerSAM cascade, prompted with its most similar pixel
        (positive) and the least similar pixel of the image (negative). The refined mask replaces
        the candidate where that helps: the cascade found a mask, it overlaps the candidate (IoU at
        least :data:`MERGE_IOU`, so it is the same object) and its similarity to the concept is at
        least the candidate's."""
        model = self.model
        concept = self.concept
        _, sims = similarity_maps(model, concept.target_feat.reshape(1, -1).to(model.device))
        sim = sims[0]
        w = sim.shape[1]
        negative = int(sim.argmin())
        points, labels = [], []
        for mask, _ in instances:
            inside = torch.where(torch.from_numpy(mask).to(sim.device), sim, -float("inf"))
            positive = int(inside.argmax())
            points.append([[positive % w, positive // w], [negative % w, negative // w]])
            labels.append([1, 0])
        cascade = cascaded_refinement(
            model,
            torch.tensor(points, dtype=torch.int64),
            torch.tensor(labels, dtype=torch.int64),
            target_guided_attention(sim),
            concept.target_embedding.reshape(1, 1, -1).to(model.device),
        )
        refined = [cascade.masks[b].cpu().numpy() for b in range(len(instances))]
        scores = self.scores(refined).cpu().tolist()
        out = []
        for b, (mask, score) in enumerate(instances):
            same = mask_ious([refined[b]], mask)[0][0] >= MERGE_IOU
            if bool(cascade.found[b]) and same and scores[b] >= score:
                out.append((refined[b], float(scores[b])))
            else:
                out.append((mask, score))
        return out


def _merge_duplicates(masks: list[np.ndarray], scores: list[float]) -> list[tuple[np.ndarray, float]]:
    """Instances from candidates sorted by decreasing score: a candidate overlapping a kept
    instance by more than :data:`DUPLICATE_OVERLAP` of the smaller one is a duplicate, merged
    (union) when near-identical (IoU at least :data:`MERGE_IOU`), else dropped."""
    kept: list[tuple[np.ndarray, float]] = []
    for mask, score in zip(masks, scores, strict=True):
        area = np.count_nonzero(mask)
        duplicate = False
        for j, (inst, s) in enumerate(kept):
            inter = np.count_nonzero(mask & inst)
            smaller = max(1, min(area, np.count_nonzero(inst)))
            if inter > DUPLICATE_OVERLAP * smaller:
                duplicate = True
                if inter / max(1, area + np.count_nonzero(inst) - inter) >= MERGE_IOU:
                    kept[j] = (inst | mask, s)
                break
        if not duplicate:
            kept.append((mask, score))
    return kept


def _result(
    instances: list[tuple[np.ndarray, float]], size: tuple[int, int], best: float, name: str | None
) -> SegmentationResult:
    """A :class:`SegmentationResult` of the instances (their union as ``mask``), or not found."""
    empty_points = np.zeros((0, 2), np.int64)
    parts = []
    for mask, score in instances:
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.int64) if xs.size else None
        parts.append(
            SegmentationResult(
                mask=mask,
                score=score,
                found=True,
                points=empty_points,
                point_labels=np.zeros(0, np.int64),
                box=box,
                final_stage=STAGE,
                concept=name,
            )
        )
    if not parts:
        return SegmentationResult(
            mask=np.zeros(size, bool),
            score=best,
            found=False,
            points=empty_points,
            point_labels=np.zeros(0, np.int64),
            box=None,
            final_stage=STAGE,
            concept=name,
        )
    union = np.logical_or.reduce([p.mask for p in parts])
    first = parts[0]
    return SegmentationResult(
        mask=union,
        score=first.score,
        found=True,
        points=empty_points,
        point_labels=np.zeros(0, np.int64),
        box=first.box,
        final_stage=STAGE,
        instances=parts,
        concept=name,
    )


def calibrate(
    concept: Concept,
    ref_image: ImageLike | Sequence[ImageLike],
    ref_mask: np.ndarray | str | os.PathLike | Sequence[Any],
    *,
    threshold: float | None = None,
    source: PromptSource | None = None,
    generator: CandidateGenerator | None = None,
    **generator_options: Any,
) -> CandidateMatcher:
    """A :class:`CandidateMatcher` for ``concept``, its threshold calibrated on the reference(s).

    Args:
        concept: a learned concept, bound to its model.
        ref_image: the reference image(s) the concept was learned from (paths or arrays).
        ref_mask: the matching mask(s).
        threshold: imposes the threshold instead of calibrating it (the reference features are
            still pooled).
        source: prompt source of the mask generator (default: its point grids).
        generator: the candidates' mask generator instead (e.g. a
            :class:`~persam.everything.boxes.BoxMaskGenerator`).
        **generator_options: :class:`~persam.everything.amg.GeneratorOptions` fields.
    """
    images = list(ref_image) if isinstance(ref_image, (list, tuple)) else [ref_image]
    masks = list(ref_mask) if isinstance(ref_mask, (list, tuple)) else [ref_mask]
    if len(images) != len(masks) or not images:
        raise InputError(f"got {len(images)} reference image(s) but {len(masks)} mask(s)")
    model = _model_of(concept)
    refs = [(as_image(im, "ref_image"), as_mask(m, "ref_mask")) for im, m in zip(images, masks, strict=True)]
    feats = [F.normalize(concept.target_feat.reshape(1, -1).float(), dim=1).to(model.device)]
    for img, m in refs:
        if m.shape != img.shape[:2]:
            raise InputError(f"reference mask is {m.shape} but its image is {img.shape[:2]} (H x W)")
        model.set_image(img)
        feats.append(torch.nan_to_num(mask_pooled_features(model, [m]), nan=0.0))
    matcher = CandidateMatcher(
        concept, torch.cat(feats), 0.0, dict(generator_options), source, generator=generator
    )
    if threshold is not None:
        matcher.threshold = float(threshold)
        return matcher
    own, other = [], []
    for img, m in refs:
        candidates = matcher.candidates(img)
        scores = matcher.scores(candidates).cpu().numpy()
        iou, inside = mask_ious(candidates, m) if candidates else (np.zeros(0), np.zeros(0))
        # The reference object's best candidate, or the reference mask itself when none matches.
        mine = scores[iou >= OWN_IOU]
        own.append(float(mine.max()) if mine.size else float(matcher.scores([m])[0]))
        others = scores[inside < OTHER_OVERLAP]
        other.append(float(others.max()) if others.size else -1.0)
    own_score, other_score = min(own), max(other)
    if own_score > other_score:
        value = max((own_score + other_score) / 2, own_score - MAX_MARGIN)
    else:  # not separable on the reference: accept at least the reference object
        value = own_score
    matcher.threshold = float(value)
    matcher.calibration = {"own_score": own_score, "other_score": other_score, "threshold": float(value)}
    return matcher


def find_candidates(
    concept: Concept,
    image: ImageLike,
    *,
    ref_image: ImageLike | Sequence[ImageLike] | None = None,
    ref_mask: Any = None,
    threshold: float | None = None,
    max_instances: int = 5,
    refine: bool = False,
    source: PromptSource | None = None,
    generator: CandidateGenerator | None = None,
    **generator_options: Any,
) -> SegmentationResult:
    """The instances of ``concept`` among the generated masks of ``image``.

    The threshold is calibrated on ``ref_image`` / ``ref_mask`` (see :func:`calibrate`; to search
    many images, calibrate once and call :meth:`CandidateMatcher.find`), or given as
    ``threshold``. Returns a :class:`~persam.personalize.SegmentationResult` whose ``score`` is the
    best similarity, ``instances`` the kept masks (best first) and ``mask`` their union.
    """
    if ref_image is None and threshold is None:
        raise InputError("give ref_image and ref_mask to calibrate the threshold, or a threshold")
    if ref_image is None:
        model = _model_of(concept)
        feats = F.normalize(concept.target_feat.reshape(1, -1).float(), dim=1).to(model.device)
        matcher = CandidateMatcher(
            concept, feats, float(threshold), dict(generator_options), source, generator=generator
        )
    else:
        matcher = calibrate(
            concept,
            ref_image,
            ref_mask,
            threshold=threshold,
            source=source,
            generator=generator,
            **generator_options,
        )
    return matcher.find(image, max_instances=max_instances, refine=refine)
