"""Segmenting concepts in an image: several concepts in one batched cascade, several instances
of each by searching again with the found regions suppressed.

The method (PerSAM or PerSAM-F) decides the point prompts and the cascade
(:class:`persam.methods.MethodSpec`); concepts of one method share every decoder call.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.io import as_image
from persam.methods import CASCADE_METHODS, method_spec
from persam.personalize.cascade import CascadeResult, cascaded_refinement, persam_f_cascade
from persam.personalize.implementations import method_implementation
from persam.personalize.prior import location_prior, similarity_maps, target_guided_attention, unit_embedding
from persam.personalize.result import SegmentationResult, StageInfo

if TYPE_CHECKING:
    from persam.personalize.concept import Concept

#: An extra instance overlapping the instances already found by this fraction of its area is a
#: duplicate and ends the search.
DUPLICATE_OVERLAP = 0.5

ImageLike = str | os.PathLike | np.ndarray


@dataclass
class _Search:
    """Per-concept state of the (multi-instance) search on the current image."""

    concept: Concept
    sim: torch.Tensor
    work: torch.Tensor
    floor: float
    instances: list[SegmentationResult] = field(default_factory=list)
    union: torch.Tensor | None = None
    done: bool = False


def _stage_infos(cascade: CascadeResult, b: int) -> list[StageInfo]:
    infos = []
    for st in cascade.stages:
        if not bool(st.active[b]):
            continue
        idx = int(st.best_idx[b])
        box = None if st.box_prompt is None else st.box_prompt[b].round().to(torch.int64).cpu().numpy()
        infos.append(
            StageInfo(
                name=st.name,
                scores=st.scores[b].float().cpu().numpy(),
                best_idx=idx,
                score=float(st.scores[b, idx]),
                mask=st.mask[b].cpu().numpy(),
                box_prompt=box,
            )
        )
    return infos


def run_cascade(
    model: Backbone, concepts: Sequence[Concept], sims: Sequence[torch.Tensor]
) -> tuple[CascadeResult, np.ndarray, np.ndarray]:
    """One batched cascade on the current image for ``K`` concepts of one method, each located by
    its similarity map ``[H, W]``; returns it with the point prompts ``[K, N, 2]`` and labels
    ``[K, N]`` used."""
    spec = method_spec(concepts[0].method)
    prompts = [location_prior(sim, topk=1, negative=spec.negative_point) for sim in sims]
    points = torch.as_tensor(np.stack([p for p, _ in prompts]))
    labels = torch.as_tensor(np.stack([lab for _, lab in prompts]))
    if spec.fits_mask_weights:
        weights = torch.stack([c.mask_weights.reshape(3) for c in concepts])
        cascade = persam_f_cascade(model, points, labels, weights)
    else:
        attn = torch.cat(
            [
                target_guided_attention(sim, backbone=model if c.options.get("aligned_attention") else None)
                for c, sim in zip(concepts, sims, strict=True)
            ]
        )
        emb = torch.cat([c.target_embedding.reshape(1, 1, -1) for c in concepts]).to(model.device)
        cascade = cascaded_refinement(model, points, labels, attn, emb)
    return cascade, points.numpy(), labels.numpy()


def segment_current_image(
    model: Backbone,
    concepts: Sequence[Concept],
    *,
    max_instances: int = 1,
    score_threshold: float | None = None,
    return_stages: bool = False,
    return_similarity: bool = False,
) -> list[SegmentationResult]:
    """Segments ``concepts`` in the image currently set on ``model`` (no encoder pass).

    Concepts are grouped by method; every decoder stage is one batched call per group. See
    :meth:`Concept.segment` for the arguments.
    """
    if max_instances < 1:
        raise ValueError(f"max_instances must be >= 1, got {max_instances}")
    if not concepts:
        return []
    other = next((c.method for c in concepts if c.method not in CASCADE_METHODS), None)
    if other is not None:
        raise ValueError(f"method {other!r} segments from the image itself: use segment_concepts()")
    searches = _start_searches(model, concepts, keep_original=max_instances > 1)
    primaries: list[SegmentationResult | None] = [None] * len(searches)
    for round_idx in range(max_instances):
        more_rounds = round_idx + 1 < max_instances
        for method in CASCADE_METHODS:
            group = [i for i, s in enumerate(searches) if not s.done and s.concept.method == method]
            if not group:
                continue
            chosen = [searches[i] for i in group]
            cascade, points, labels = run_cascade(
                model, [s.concept for s in chosen], [s.work for s in chosen]
            )
            for b, i in enumerate(group):
                s = searches[i]
                mask_t = cascade.masks[b]
                score = float(cascade.scores[b])
                found = bool(cascade.found[b]) and (score_threshold is None or score >= score_threshold)
                box = cascade.boxes[b].cpu().numpy()
                result = SegmentationResult(
                    mask=mask_t.cpu().numpy(),
                    score=score,
                    found=found,
                    points=points[b],
                    point_labels=labels[b],
                    box=None if (box < 0).any() else box,
                    final_stage=cascade.final_stage[b],
                    stages=_stage_infos(cascade, b) if return_stages else None,
                    concept=s.concept.name,
                )
                if round_idx == 0:
                    primaries[i] = result
                elif found and s.union is not None:
                    area = int(mask_t.sum())
                    overlap = int((mask_t & s.union).sum())
                    found = overlap < DUPLICATE_OVERLAP * area
                if not found:
                    s.done = True
                    continue
                s.instances.append(dataclasses.replace(result))
                s.union = mask_t.clone() if s.union is None else (s.union | mask_t)
                if more_rounds:
                    # Suppress the found region so that the next positive point lies elsewhere.
                    s.work.masked_fill_(mask_t.to(s.work.device), s.floor)
                    s.done = float(s.work.max()) <= s.floor
        if all(s.done for s in searches):
            break
    results = []
    for s, primary in zip(searches, primaries, strict=True):
        assert primary is not None
        if max_instances > 1:
            primary.instances = list(s.instances)
            if s.union is not None:
                primary.mask = primary.mask | s.union.cpu().numpy()
        if return_similarity:
            primary.similarity = s.sim.float().cpu().numpy()
        results.append(primary)
    return results


def _start_searches(model: Backbone, concepts: Sequence[Concept], *, keep_original: bool) -> list[_Search]:
    """The similarity maps of every concept on the current image (one matrix product and one
    batched up-sampling for all) as fresh searches; ``keep_original`` keeps an unmodified copy
    of each map beside the one the multi-instance search suppresses."""
    feats = torch.cat([c.target_feat.reshape(1, -1).to(model.device) for c in concepts])
    _, sims = similarity_maps(model, feats, unit=unit_embedding(model.features))
    return [
        _Search(c, sim, sim.clone() if keep_original else sim, float(sim.min()))
        for c, sim in zip(concepts, sims, strict=True)
    ]


def segment_concepts(
    model: Backbone,
    image: ImageLike,
    concepts: Sequence[Concept],
    *,
    max_instances: int = 1,
    score_threshold: float | None = None,
    return_stages: bool = False,
    return_similarity: bool = False,
) -> list[SegmentationResult]:
    """Segments several concepts in one image: one encoder pass and, per stage, one batched decoder
    call per method. Returns one result per concept, in order (a concept of a method with its own
    implementation, such as ``"candidates"``, is segmented by it)."""
    for c in concepts:
        c.check_compatible(model)
    img = as_image(image, "image")
    cascade = [c for c in concepts if c.method in CASCADE_METHODS]
    if cascade:
        model.set_image(img)
    found = segment_current_image(
        model,
        cascade,
        max_instances=max_instances,
        score_threshold=score_threshold,
        return_stages=return_stages,
        return_similarity=return_similarity,
    )
    if len(cascade) == len(concepts):
        return found
    results = iter(found)
    return [
        next(results)
        if c.method in CASCADE_METHODS
        else method_implementation(c.method).segment(
            c, img, max_instances=max_instances, score_threshold=score_threshold, model=model
        )
        for c in concepts
    ]
