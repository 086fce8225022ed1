"""Learning a concept: reference features and, for PerSAM-F, the fitted mask weights.

:func:`learn` reads, checks and encodes the reference(s); :func:`learn_on_current_image` learns
from the image already set on the backbone (the video tracker learns each object of the first
frame this way, with one encoder pass for all). Both end in the same steps: the object's cells
(:func:`~persam.personalize.reference.reference_cells`), its feature
(:func:`~persam.personalize.reference.target_embedding`) and, where the method fits mask weights,
:func:`~persam.personalize.finetune.fit_reference_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError, MaskTooSmallError
from persam.io import as_image, as_mask
from persam.methods import method_spec, normalize_method
from persam.personalize.concept import Concept
from persam.personalize.finetune import ENGINES, fit_reference_weights
from persam.personalize.implementations import method_implementation
from persam.personalize.reference import reference_cells, resolve_coverage_threshold, target_embedding
from persam.personalize.segment import ImageLike

MaskLike = str | os.PathLike | np.ndarray


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
            f"{mname}: mask is {m.shape[1]}×{m.shape[0]} but the reference image {iname} is "
            f"{img.shape[1]}×{img.shape[0]} (W×H)"
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
    feature_reduce: str | None = None,
    small_mask: str = "error",
    steps: int = 1000,
    lr: float = 1e-3,
    engine: str = "fast",
    aligned_attention: bool = False,
    progress: bool = False,
    method_options: Mapping[str, Any] | None = None,
) -> Concept:
    """Learns a concept from one (or several) reference image(s) and mask(s).

    Args:
        model: the backbone (:func:`persam.build_model`).
        ref_image: path or ``uint8 [H, W, 3]`` RGB array, or a list of them (few-shot).
        ref_mask: path or array (bool, 0/1, 0/255, label or RGB; non-zero = object), or a list
            matching ``ref_image``.
        method: ``"persam"`` (training-free), ``"persam_f"`` (fits 2 mask weights, ~1000 steps)
            or ``"candidates"`` (segments everything, then keeps the masks that show the object,
            see :mod:`persam.everything.method`); any case, with ``-`` or ``_`` (``"PerSAM-F"``,
            ``"persam-f"``).
        name: optional label stored with the concept.
        mask_value, coverage_threshold: which embedding cells count as the object, see
            :func:`persam.personalize.reference.reference_grid_mask` (defaults reproduce the
            reference implementation on PerSeg masks: a cell must be ~97% covered).
        feature_reduce: how the object's cells pool into its feature, ``"mean"`` or
            ``"mean_max"``; None: the method's own (PerSAM mean, PerSAM-F mean_max).
        small_mask: ``"error"`` (a mask covering no cell well enough raises
            :class:`MaskTooSmallError`) or ``"best_cells"`` (the cells it covers most are used).
        steps, lr: PerSAM-F optimisation (cosine schedule over ``steps``).
        engine: PerSAM-F optimisation engine, ``"fast"``, ``"autograd"`` or ``"naive"`` (see
            :mod:`persam.personalize.finetune`).
        aligned_attention: PerSAM: resample the target-guided attention with the backbone's own
            image geometry, so that it lines up with the image embedding on non-square images
            (:func:`persam.personalize.prior.target_guided_attention`). Off by default, as in the
            reference implementation (which stretches it over the padded frame).
        progress: show a progress bar during the PerSAM-F fit.
        method_options: options of a method with its own implementation (``"candidates"``: see
            :func:`persam.everything.method.candidate_options`); None for the PerSAM cascades.

    Few-shot: the features of all references are pooled before reducing; PerSAM-F fits one set of
    weights to the mean of the per-reference losses. One reference gives exactly the one-shot
    result.

    Raises:
        InputError: unreadable file, image/mask size mismatch, empty mask, or a mask too small to
            cover any embedding cell (:class:`MaskTooSmallError`).
    """
    method = normalize_method(method)
    spec = method_spec(method)
    if method_options and spec.cascade:
        raise ValueError(f"method_options apply to methods with options of their own, not to {method!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    images, masks = _as_list(ref_image), _as_list(ref_mask)
    if len(images) != len(masks):
        raise InputError(f"got {len(images)} reference images but {len(masks)} reference masks")
    if not images:
        raise InputError("no reference image given")
    if engine == "naive" and len(images) != 1:
        raise ValueError("engine='naive' supports a single reference")
    if spec.fits_mask_weights and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    threshold = resolve_coverage_threshold(mask_value, coverage_threshold)
    few = len(images) > 1
    refs = [
        load_reference(im, m, i if few else None) for i, (im, m) in enumerate(zip(images, masks, strict=True))
    ]
    feats, cells = [], []
    for i, (img, m) in enumerate(refs):
        model.set_image(img)
        try:
            cells.append(
                reference_cells(
                    model, m, mask_value=mask_value, coverage_threshold=threshold, small_mask=small_mask
                )
            )
        except MaskTooSmallError as e:
            raise MaskTooSmallError(
                f"{_label(masks[i], 'ref_mask' + (f'[{i}]' if few else ''))}: {e}"
            ) from None
        feats.append(model.features.clone())
    concept = _concept_from_cells(
        model,
        method,
        feats,
        cells,
        [img for img, _ in refs],
        [m for _, m in refs],
        name=name,
        options={"mask_value": int(mask_value), "coverage_threshold": threshold},
        feature_reduce=feature_reduce,
        fit_options={"steps": steps, "lr": lr, "engine": engine, "progress": progress},
        aligned_attention=aligned_attention,
    )
    if spec.cascade:
        return concept
    implementation = method_implementation(method)
    return implementation.learn(
        model, concept, [img for img, _ in refs], [m for _, m in refs], method_options
    )


def learn_on_current_image(
    model: Backbone,
    mask: MaskLike,
    method: str = "persam",
    *,
    name: str | None = None,
    mask_value: int = 128,
    coverage_threshold: float | None = None,
    feature_reduce: str | None = None,
    small_mask: str = "error",
    steps: int = 1000,
    lr: float = 1e-3,
    engine: str = "fast",
    aligned_attention: bool = False,
    progress: bool = False,
) -> Concept:
    """:func:`learn` from the image currently set on ``model`` (no encoder pass) and its ``mask``
    (bool ``[H, W]`` or anything :func:`persam.io.as_mask` reads). Same arguments as :func:`learn`."""
    method = normalize_method(method)
    m = as_mask(mask, "mask")
    if m.shape != tuple(model.original_size):
        h, w = model.original_size
        raise InputError(f"mask is {m.shape[1]}×{m.shape[0]} but the image is {w}×{h} (W×H)")
    if not m.any():
        raise InputError("mask is empty (no foreground pixel)")
    threshold = resolve_coverage_threshold(mask_value, coverage_threshold)
    cell = reference_cells(
        model, m, mask_value=mask_value, coverage_threshold=threshold, small_mask=small_mask
    )
    return _concept_from_cells(
        model,
        method,
        [model.features],
        [cell],
        [None],
        [m],
        name=name,
        options={"mask_value": int(mask_value), "coverage_threshold": threshold},
        feature_reduce=feature_reduce,
        fit_options={"steps": steps, "lr": lr, "engine": engine, "progress": progress},
        aligned_attention=aligned_attention,
    )


def _concept_from_cells(
    model: Backbone,
    method: str,
    feats: Sequence[torch.Tensor],
    cells: Sequence[torch.Tensor],
    images: Sequence[np.ndarray | None],
    masks: Sequence[np.ndarray],
    *,
    name: str | None,
    options: dict[str, Any],
    feature_reduce: str | None,
    fit_options: dict[str, Any],
    aligned_attention: bool,
) -> Concept:
    """The concept of ``N`` references from their embeddings ``[1, C, h, w]`` and object cells
    bool ``[h, w]``; the last reference is the image set on ``model``."""
    spec = method_spec(method)
    reduce = feature_reduce or spec.feature_reduce
    feat, emb = target_embedding(torch.cat(list(feats)), torch.stack(list(cells)), reduce=reduce)
    options = dict(
        options,
        num_references=len(cells),
        num_target_locations=[int(c.sum()) for c in cells],
        aligned_attention=bool(aligned_attention),
    )
    if feature_reduce is not None and feature_reduce != spec.feature_reduce:
        options["feature_reduce"] = feature_reduce
    weights = fit = None
    if spec.fits_mask_weights:
        fit, points = fit_reference_weights(model, images, masks, feat, **fit_options)
        weights = fit.weights.clone()
        options.update(
            steps=int(fit_options["steps"]),
            lr=float(fit_options["lr"]),
            engine=fit_options["engine"],
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
