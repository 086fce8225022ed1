"""The public PerSAM API: learn a concept from reference example(s), segment it in new images.

>>> concept = learn(model, "ref.jpg", "ref_mask.png", method="persam_f")   # doctest: +SKIP
>>> result = concept.segment("photo.jpg")                                   # doctest: +SKIP
>>> result.mask, result.score, result.found                                 # doctest: +SKIP

Masks are accepted as bool / 0-1 / 0-255 arrays, binary, palette or RGB-coloured PNGs: every
non-zero pixel is foreground (:func:`persam.io.as_mask`). A concept remembers which backbone and
weights it was learned with; :meth:`Concept.save` writes a small pickle-free ``.npz`` file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import ConceptMismatchError, InputError, describe
from persam.io import as_image, as_mask, atomic_path
from persam.methods import METHODS, normalize_method
from persam.personalize.core import (
    CascadeResult,
    MaskTooSmallError,
    cascaded_refinement,
    location_prior,
    reference_grid_mask,
    resolve_coverage_threshold,
    similarity_maps,
    target_embedding,
    target_guided_attention,
    unit_embedding,
)
from persam.personalize.finetune import (
    ENGINES,
    FitResult,
    TrainingPrompt,
    fit_mask_weights,
    naive_logits_fn,
    persam_f_cascade,
    reference_training_logits,
)

CONCEPT_FORMAT = "persam-concept"
CONCEPT_FORMAT_VERSION = 1
#: An extra instance overlapping the instances already found by this fraction of its area is a
#: duplicate and ends the search.
DUPLICATE_OVERLAP = 0.5

ImageLike = str | os.PathLike | np.ndarray
MaskLike = str | os.PathLike | np.ndarray


def _short_id(checkpoint_id: str) -> str:
    """A checkpoint identity for messages: sha256 digests shortened, other ids kept whole."""
    is_digest = len(checkpoint_id) == 64 and all(c in "0123456789abcdef" for c in checkpoint_id)
    return checkpoint_id[:16] if is_digest else checkpoint_id


# ------------------------------------------------------------------------------------ results
@dataclass
class StageInfo:
    """Diagnostics of one decoder stage for one prompt set.

    Attributes:
        name: ``"step1"`` / ``"weighted"``, ``"refine1"``, ``"refine2"``.
        scores: float32 ``[C]`` predicted IoU of the stage's masks.
        best_idx: index of the chosen mask.
        score: score of the chosen mask.
        mask: bool ``[H, W]`` chosen mask.
        box_prompt: int64 ``[4]`` XYXY box given to the stage, or None.
    """

    name: str
    scores: np.ndarray
    best_idx: int
    score: float
    mask: np.ndarray
    box_prompt: np.ndarray | None


@dataclass
class SegmentationResult:
    """A concept segmented in one image.

    Attributes:
        mask: bool ``[H, W]``; with ``max_instances > 1``, the union of the first mask and the
            accepted further instances.
        score: predicted IoU of the (first) mask.
        found: the first mask is non-empty and reaches ``score_threshold`` (if one is given).
        points: int64 ``[N, 2]`` (x, y) point prompts of the first mask; point_labels int64 ``[N]``
            (1 positive, 0 negative).
        box: int64 ``[4]`` XYXY box prompt of the step that produced the mask, or None.
        final_stage: name of that step (``"refine2"`` normally; an earlier one when a later step
            gave an empty mask).
        instances: with ``max_instances > 1``, one result per accepted instance (the first one
            included when found), else empty.
        stages: per-stage diagnostics (``return_stages=True``), else None.
        similarity: float32 ``[H, W]`` similarity map (``return_similarity=True``), else None.
        concept: name of the concept, if it has one.
    """

    mask: np.ndarray
    score: float
    found: bool
    points: np.ndarray
    point_labels: np.ndarray
    box: np.ndarray | None
    final_stage: str
    instances: list[SegmentationResult] = field(default_factory=list)
    stages: list[StageInfo] | None = None
    similarity: np.ndarray | None = None
    concept: str | None = None


# ------------------------------------------------------------------------------------ concept
@dataclass(eq=False)
class Concept:
    """A personalised concept: what PerSAM / PerSAM-F learned from the reference example(s).

    Attributes:
        method: ``"persam"`` or ``"persam_f"``.
        target_feat: float32 ``[1, C]`` normalised object feature (PerSAM: mean of the reference
            cells; PerSAM-F: ``(max + mean) / 2``).
        target_embedding: float32 ``[1, 1, C]`` raw mean feature (PerSAM's target-semantic prompt).
        mask_weights: float32 ``[3]`` learned weights of the 3 multimask outputs (PerSAM-F), or None.
        backbone_name, checkpoint_id: the model it was learned with.
        options: learning options and statistics (JSON-serialisable).
        name: optional label.
        model: the backbone used by :meth:`segment` (not saved).
        fit: the PerSAM-F optimisation history (not saved).
    """

    method: str
    target_feat: torch.Tensor
    target_embedding: torch.Tensor
    mask_weights: torch.Tensor | None
    backbone_name: str
    checkpoint_id: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    model: Backbone | None = field(default=None, repr=False)
    fit: FitResult | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        weights = "" if self.mask_weights is None else f", mask_weights={self.mask_weights.tolist()}"
        return (
            f"Concept(method={self.method!r}, name={self.name!r}, backbone={self.backbone_name!r}, "
            f"feature_dim={int(self.target_feat.shape[-1])}{weights})"
        )

    # ----------------------------------------------------------------- binding
    def check_compatible(self, model: Backbone) -> None:
        """Raises :class:`ConceptMismatchError` unless ``model`` is the backbone and weights this
        concept was learned with."""
        if model.name != self.backbone_name or model.checkpoint_id != self.checkpoint_id:
            raise ConceptMismatchError(
                f"concept {self.name or ''!s}{' ' if self.name else ''}was learned with backbone "
                f"{self.backbone_name!r} (weights {_short_id(self.checkpoint_id)}) but the model is "
                f"{model.name!r} (weights {_short_id(model.checkpoint_id)}); learn it again with this model"
            )

    def bind(self, model: Backbone) -> Concept:
        """A copy of this concept that segments with ``model`` (checked for compatibility)."""
        self.check_compatible(model)
        return dataclasses.replace(self, model=model)

    def _require_model(self) -> Backbone:
        if self.model is None:
            raise RuntimeError(
                "this concept has no model: use Concept.load(path, model=...) or concept.bind(model)"
            )
        return self.model

    # ------------------------------------------------------------- segmenting
    def segment(
        self,
        image: ImageLike,
        *,
        max_instances: int = 1,
        score_threshold: float | None = None,
        return_stages: bool = False,
        return_similarity: bool = False,
    ) -> SegmentationResult:
        """Segments the concept in ``image`` (path or ``uint8 [H, W, 3]`` RGB array).

        Args:
            max_instances: look for up to this many instances: after each one, its region is
                removed from the similarity map and the search repeats; it stops early at an
                empty mask, a score below ``score_threshold``, or a mask that mostly overlaps
                the instances already found.
            score_threshold: minimum predicted IoU for a mask to count as found; None accepts every
                non-empty mask (as the reference implementation does).
            return_stages: fill :attr:`SegmentationResult.stages`.
            return_similarity: fill :attr:`SegmentationResult.similarity`.
        """
        return segment_concepts(
            self._require_model(),
            image,
            [self],
            max_instances=max_instances,
            score_threshold=score_threshold,
            return_stages=return_stages,
            return_similarity=return_similarity,
        )[0]

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        """The JSON metadata written by :meth:`save`."""
        return {
            "format": CONCEPT_FORMAT,
            "format_version": CONCEPT_FORMAT_VERSION,
            "method": self.method,
            "name": self.name,
            "backbone": self.backbone_name,
            "checkpoint_id": self.checkpoint_id,
            "feature_dim": int(self.target_feat.shape[-1]),
            "options": self.options,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Writes the concept to ``path`` (an ``.npz`` archive of float32 arrays and a JSON
        metadata entry; no pickle). The file is replaced atomically."""
        arrays = {
            "target_feat": self.target_feat.detach().cpu().float().numpy().reshape(1, -1),
            "target_embedding": self.target_embedding.detach().cpu().float().numpy().reshape(1, 1, -1),
            "metadata": np.frombuffer(json.dumps(self.metadata()).encode("utf-8"), dtype=np.uint8),
        }
        if self.mask_weights is not None:
            arrays["mask_weights"] = self.mask_weights.detach().cpu().float().numpy().reshape(3)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, model: Backbone | None = None) -> Concept:
        """Reads a concept written by :meth:`save`; with ``model``, checks that it is the backbone
        (name and weights) the concept was learned with and binds it."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: concept file not found")
        data = _read_concept_arrays(p)
        try:
            meta = json.loads(bytes(data["metadata"].astype(np.uint8)).decode("utf-8"))
            if meta.get("format") != CONCEPT_FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}")
            version = int(meta["format_version"])
            if version > CONCEPT_FORMAT_VERSION:
                raise ValueError(
                    f"format version {version} is newer than supported ({CONCEPT_FORMAT_VERSION})"
                )
            method = meta["method"]
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}")
            feat = torch.from_numpy(data["target_feat"].astype(np.float32)).reshape(1, -1)
            emb = torch.from_numpy(data["target_embedding"].astype(np.float32)).reshape(1, 1, -1)
            weights = None
            if method == "persam_f":
                weights = torch.from_numpy(data["mask_weights"].astype(np.float32)).reshape(3)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
            raise InputError(f"{p}: not a valid persam concept file ({describe(e)})") from None
        concept = cls(
            method=method,
            target_feat=feat,
            target_embedding=emb,
            mask_weights=weights,
            backbone_name=str(meta["backbone"]),
            checkpoint_id=str(meta["checkpoint_id"]),
            options=dict(meta.get("options") or {}),
            name=meta.get("name"),
        )
        return concept.bind(model) if model is not None else concept


def _read_concept_arrays(p: Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive ``p``, refusing pickled objects; one-line errors."""
    if not zipfile.is_zipfile(p):
        raise InputError(f"{p}: not a persam concept file (not an .npz archive)")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as e:
        # numpy's message advises allow_pickle=True: a concept never holds objects, so never do that.
        if "pickle" in str(e):
            raise InputError(f"{p}: not a persam concept file (it holds pickled objects)") from None
        raise InputError(f"{p}: not a persam concept file ({describe(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{p}: not a persam concept file ({describe(e)})") from None
    # Any other zip (a torch checkpoint, say) opens as an archive too, without our metadata entry.
    if not isinstance(data.get("metadata"), np.ndarray):
        raise InputError(f"{p}: not a persam concept file (no persam metadata)")
    return data


# -------------------------------------------------------------------------------------- learn
def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _label(x: Any, default: str) -> str:
    return str(x) if isinstance(x, (str, os.PathLike)) else default


def load_reference(
    image: ImageLike, mask: MaskLike, index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reads and validates one reference pair: ``(uint8 [H, W, 3], bool [H, W])``."""
    suffix = "" if index is None else f"[{index}]"
    iname = _label(image, f"ref_image{suffix}")
    mname = _label(mask, f"ref_mask{suffix}")
    img = as_image(image, iname)
    m = as_mask(mask, mname)
    if m.shape != img.shape[:2]:
        raise InputError(
            f"{mname}: mask is {m.shape[0]}x{m.shape[1]} but the reference image {iname} is "
            f"{img.shape[0]}x{img.shape[1]} (H x W)"
        )
    if not m.any():
        raise InputError(f"{mname}: mask is empty (no foreground pixel)")
    return img, m


def learn(
    model: Backbone,
    ref_image: ImageLike | Sequence[ImageLike],
    ref_mask: MaskLike | Sequence[MaskLike],
    method: str = "persam",
    *,
    name: str | None = None,
    mask_value: int = 128,
    coverage_threshold: float | None = None,
    steps: int = 1000,
    lr: float = 1e-3,
    engine: str = "fast",
    aligned_attention: bool = False,
    progress: bool = False,
) -> Concept:
    """Learns a concept from one (or several) reference image(s) and mask(s).

    Args:
        model: the backbone (:func:`persam.build_model`).
        ref_image: path or ``uint8 [H, W, 3]`` RGB array, or a list of them (few-shot).
        ref_mask: path or array (bool, 0/1, 0/255, label or RGB; non-zero = object), or a list
            matching ``ref_image``.
        method: ``"persam"`` (training-free) or ``"persam_f"`` (fits 2 mask weights, ~1000 steps);
            any case, with ``-`` or ``_`` (``"PerSAM-F"``, ``"persam-f"``).
        name: optional label stored with the concept.
        mask_value, coverage_threshold: which embedding cells count as the object, see
            :func:`persam.personalize.core.reference_grid_mask` (defaults reproduce the reference
            implementation on PerSeg masks: a cell must be ~97% covered).
        steps, lr: PerSAM-F optimisation (cosine schedule over ``steps``).
        engine: PerSAM-F optimisation engine, ``"fast"``, ``"autograd"`` or ``"naive"`` (see
            :mod:`persam.personalize.finetune`).
        aligned_attention: PerSAM: resample the target-guided attention with the backbone's own
            image geometry, so that it lines up with the image embedding on non-square images
            (:func:`persam.personalize.core.target_guided_attention`). Off by default, as in the
            reference implementation (which stretches it over the padded frame).
        progress: show a progress bar during the PerSAM-F fit.

    Few-shot: the features of all references are pooled before reducing; PerSAM-F fits one set of
    weights to the mean of the per-reference losses. One reference gives exactly the one-shot
    result.

    Raises:
        InputError: unreadable file, image/mask size mismatch, empty mask, or a mask too small to
            cover any embedding cell (:class:`MaskTooSmallError`).
    """
    method = normalize_method(method)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    images, masks = _as_list(ref_image), _as_list(ref_mask)
    if len(images) != len(masks):
        raise InputError(f"got {len(images)} reference images but {len(masks)} reference masks")
    if not images:
        raise InputError("no reference image given")
    if engine == "naive" and len(images) != 1:
        raise ValueError("engine='naive' supports a single reference")
    if method == "persam_f" and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    threshold = resolve_coverage_threshold(mask_value, coverage_threshold)
    few = len(images) > 1
    refs = [
        load_reference(im, m, i if few else None) for i, (im, m) in enumerate(zip(images, masks, strict=True))
    ]

    feats, grids = [], []
    for i, (img, m) in enumerate(refs):
        model.set_image(img)
        try:
            grid = reference_grid_mask(model, m, mask_value=mask_value, coverage_threshold=threshold)
        except MaskTooSmallError as e:
            raise MaskTooSmallError(
                f"{_label(masks[i], 'ref_mask' + (f'[{i}]' if few else ''))}: {e}"
            ) from None
        feats.append(model.features.clone())
        grids.append(grid)
    reduce = "mean" if method == "persam" else "mean_max"
    feat, emb = target_embedding(torch.cat(feats), torch.stack(grids), reduce=reduce)
    options: dict[str, Any] = {
        "mask_value": int(mask_value),
        "coverage_threshold": threshold,
        "num_references": len(refs),
        "num_target_locations": [int(g.sum()) for g in grids],
        "aligned_attention": bool(aligned_attention),
    }
    weights = None
    fit = None
    if method == "persam_f":
        # The last reference is still the current image; the others are encoded again.
        order = [len(refs) - 1, *range(len(refs) - 1)]
        prompts: dict[int, TrainingPrompt] = {}
        for i in order:
            if i != len(refs) - 1:
                model.set_image(refs[i][0])
            prompts[i] = reference_training_logits(model, feat)
        logits = [prompts[i].high_res_logits for i in range(len(refs))]
        points = [prompts[i].points.tolist() for i in range(len(refs))]
        if engine == "naive":  # one reference, still the current image
            source = naive_logits_fn(model, prompts[0].points, prompts[0].labels)
        fit = fit_mask_weights(
            source if engine == "naive" else logits,
            [torch.from_numpy(m) for _, m in refs],
            steps=steps,
            lr=lr,
            engine=engine,
            progress=progress,
        )
        weights = fit.weights.clone()
        options.update(
            steps=int(steps),
            lr=float(lr),
            engine=engine,
            training_points=points,
            final_loss=float(fit.loss_total[-1]),
            fit_seconds=round(fit.seconds, 3),
        )
    return Concept(
        method=method,
        target_feat=feat.detach().cpu().float(),
        target_embedding=emb.detach().cpu().float(),
        mask_weights=weights,
        backbone_name=model.name,
        checkpoint_id=model.checkpoint_id,
        options=options,
        name=name,
        model=model,
        fit=fit,
    )


# ----------------------------------------------------------------------------------- segmenting
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


def _run_group(
    model: Backbone, searches: list[_Search], method: str
) -> tuple[CascadeResult, np.ndarray, np.ndarray]:
    """One batched cascade for the concepts of one method."""
    prompts = [location_prior(s.work, topk=1, negative=(method == "persam")) for s in searches]
    points = torch.as_tensor(np.stack([p for p, _ in prompts]))
    labels = torch.as_tensor(np.stack([lab for _, lab in prompts]))
    if method == "persam":
        attn = torch.cat(
            [
                target_guided_attention(
                    s.work, backbone=model if s.concept.options.get("aligned_attention") else None
                )
                for s in searches
            ]
        )
        emb = torch.cat([s.concept.target_embedding.reshape(1, 1, -1) for s in searches]).to(model.device)
        cascade = cascaded_refinement(model, points, labels, attn, emb)
    else:
        weights = torch.stack([s.concept.mask_weights.reshape(3) for s in searches])
        cascade = persam_f_cascade(model, points, labels, weights)
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
    searches = _start_searches(model, concepts, keep_original=max_instances > 1)
    primaries: list[SegmentationResult | None] = [None] * len(searches)
    for round_idx in range(max_instances):
        more_rounds = round_idx + 1 < max_instances
        for method in METHODS:
            group = [i for i, s in enumerate(searches) if not s.done and s.concept.method == method]
            if not group:
                continue
            cascade, points, labels = _run_group(model, [searches[i] for i in group], method)
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
    call per method. Returns one result per concept, in order."""
    for c in concepts:
        c.check_compatible(model)
    model.set_image(as_image(image, "image"))
    return segment_current_image(
        model,
        concepts,
        max_instances=max_instances,
        score_threshold=score_threshold,
        return_stages=return_stages,
        return_similarity=return_similarity,
    )


def mask_from_prompts(
    model: Backbone,
    image: ImageLike,
    points: np.ndarray | Sequence[Sequence[float]] | None = None,
    labels: np.ndarray | Sequence[int] | None = None,
    box: np.ndarray | Sequence[float] | None = None,
) -> np.ndarray:
    """A reference mask from clicks and/or a box: SAM's multimask output, best by predicted IoU.

    Args:
        model: the backbone.
        image: path or ``uint8 [H, W, 3]`` RGB array.
        points: ``[N, 2]`` (x, y) pixels; labels ``[N]`` (1 object, 0 background; default all 1).
        box: ``[4]`` XYXY pixels.

    Returns:
        bool ``[H, W]``.

    Raises:
        InputError: malformed prompts, a point outside the image, or a box that misses it.
    """
    img = as_image(image, "image")
    pts, lab, bx = _check_prompts(points, labels, box, img.shape[:2])
    model.set_image(img)
    dev = model.device
    pc = None if pts is None else torch.as_tensor(pts, dtype=torch.float32, device=dev)[None]
    pl = None if lab is None else torch.as_tensor(lab, dtype=torch.int64, device=dev)[None]
    boxes = None if bx is None else torch.as_tensor(bx, dtype=torch.float32, device=dev).reshape(1, 4)
    out = model.decode(pc, pl, boxes=boxes, multimask_output=True)
    best = int(out.iou_predictions[0].argmax())
    # Only the chosen mask is brought to the original size.
    logits = model.postprocess(out.low_res_logits[:, best : best + 1])[0, 0]
    return model.binarize(logits).cpu().numpy()


def _check_prompts(
    points: np.ndarray | Sequence[Sequence[float]] | None,
    labels: np.ndarray | Sequence[int] | None,
    box: np.ndarray | Sequence[float] | None,
    size: tuple[int, int],
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validated prompts for an image of ``size`` ``(H, W)``: points float64 ``[N, 2]`` and labels
    int64 ``[N]`` (or None), box float64 ``[4]`` (or None)."""
    h, w = size
    pts = lab = bx = None
    if points is not None and len(points) > 0:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise InputError(f"points must be [N, 2] (x, y), got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise InputError("points must be finite numbers")
        outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
        if outside.any():
            x, y = pts[int(np.argmax(outside))]
            raise InputError(f"point ({x:g}, {y:g}) is outside the image ({w}x{h} pixels, W x H)")
        lab = (
            np.ones(len(pts), np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
        )
        if lab.shape != (len(pts),):
            raise InputError(f"labels must have one entry per point ({len(pts)}), got {lab.shape[0]}")
        if not np.isin(lab, (0, 1)).all():
            raise InputError(f"labels must be 0 (background) or 1 (object), got {sorted(set(lab.tolist()))}")
    if box is not None:
        bx = np.asarray(box, dtype=np.float64).reshape(-1)
        if bx.shape != (4,):
            raise InputError(f"box must be [x0, y0, x1, y1], got {bx.shape[0]} values")
        if not np.isfinite(bx).all():
            raise InputError("box must be finite numbers")
        if bx[2] < bx[0] or bx[3] < bx[1]:
            raise InputError(f"box must satisfy x0 <= x1 and y0 <= y1, got {bx.tolist()}")
        if bx[0] >= w or bx[1] >= h or bx[2] <= 0 or bx[3] <= 0:  # no pixel inside
            corners = ", ".join(f"{v:g}" for v in bx)
            raise InputError(f"box [{corners}] is outside the image ({w}x{h} pixels, W x H)")
    if pts is None and bx is None:
        raise InputError("give at least one point or a box")
    return pts, lab, bx
