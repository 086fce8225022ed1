"""PerSeg evaluation: mIoU / mAcc as in the PerSAM paper, plus Boundary IoU (bIoU).

Definitions (identical to the reference ``eval_miou.py`` of Personalize-SAM on valid input):

* Masks, ground truth and predictions alike, are binarised as ``cv2.cvtColor(BGR -> GRAY) > 0`` of the
  8-bit colour decoding: indexed PNGs (palette colour), persam's BGR ``(0, 0, 128)`` masks, 0/1 and
  0/255 single-channel PNGs are all understood. OpenCV's fixed-point gray conversion makes very dark
  colours (e.g. BGR ``(4, 0, 0)`` or ``(0, 0, 1)``) background. 16-bit PNGs: any non-zero channel.
* Per concept, over its test images (all but the reference image): ``IoU = sum(intersection) /
  (sum(union) + 1e-10)`` and ``Acc = sum(intersection) / (sum(target) + 1e-10)`` (pooled; ``target``
  is the GT area, so Acc is pooled recall). A perfect prediction gives 0.99999999999999xx, and an
  empty GT with an empty prediction gives 0.
* ``mIoU`` / ``mAcc``: plain means over concepts.
* Boundary IoU per image (:mod:`persam.evaluation.boundary`, dilation ratio 0.02); ``bIoU`` = mean over
  the test images of a concept, then mean over concepts. Also ``bIoU_pooled`` (per concept
  ``sum(boundary intersection) / sum(boundary union)``) and ``bIoU_api_min`` (per image
  ``min(mask IoU, Boundary IoU)`` as the boundary-iou-api's "boundary" IoU type).
* Concepts are the sub-folders of the annotation folder, sorted, without names containing ``.DS``
  (the reference filter meant for ``.DS_Store``; a concept such as ``my.DSLR`` is skipped with a
  warning, as the reference skips it silently).

Deliberate differences from the reference script, which only matter for unusual input:

* GT and prediction files are paired **by file name** (``<concept>/NN.png`` in both trees), not by
  position in the two sorted file lists; prediction PNGs without a GT counterpart are ignored and a
  missing reference-image prediction shifts nothing.
* The reference image is excluded when its file stem **equals** ``ref_idx``; the reference script
  excludes every GT path containing ``ref_idx`` as a substring (also ``100.png``, every image of a
  concept named like ``toy00``, or everything when the dataset path contains ``00``).
* A concept folder missing from the predictions is an error (or, with ``missing_concepts="zero"``,
  scores 0 on every measure); the reference script silently scores IoU = Acc = 0 for it.
* A missing prediction file, a prediction whose size differs from its GT, an unreadable PNG, a concept
  without the reference annotation ``<ref_idx>.png`` or without any test image is an error naming the
  file (:class:`PersegEvaluationError`); the reference script asserts, crashes in OpenCV or silently
  mis-pairs.
* Only the PNG files directly inside each concept folder are read (the reference globs recursively),
  and hidden folders and plain files next to the concept folders are not concepts.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from persam.evaluation.boundary import DEFAULT_DILATION_RATIO, boundary_iou_stats
from persam.io import InputError, atomic_path

PathLike = str | os.PathLike

# The reference pools with these terms; they are kept so that the numbers agree bit for bit.
_EPS = 1e-10


class PersegEvaluationError(InputError):
    """Invalid PerSeg ground truth or predictions; the one-line message names the file."""


@dataclass
class PersegImageRecord:
    """Measures of one evaluated (GT, prediction) pair."""

    concept: str
    name: str  # file stem, e.g. "01"
    gt_path: Path
    pred_path: Path
    height: int
    width: int
    intersection: int
    union: int
    target: int  # GT area
    boundary_iou: float
    mask_iou_cocoapi: float
    boundary_iou_api_min: float
    boundary_intersection: int
    boundary_union: int
    gt_boundary_area: int
    pred_boundary_area: int
    dilation_px: int

    @property
    def mask_iou(self) -> float:
        """``intersection / union`` (NaN when both masks are empty)."""
        return self.intersection / self.union if self.union else math.nan


@dataclass
class PersegConceptResult:
    """Pooled measures of one concept over its test images."""

    name: str
    IoU: float
    Acc: float
    intersection_sum: int
    union_sum: int
    target_sum: int
    bIoU: float  # mean per-image Boundary IoU (NaN without images)
    bIoU_pooled: float  # sum of boundary intersections / sum of boundary unions
    bIoU_api_min: float  # mean per-image min(mask IoU, Boundary IoU)
    images: list[PersegImageRecord] = field(default_factory=list)
    missing: bool = False  # prediction folder absent, scored 0 (missing_concepts="zero")

    @property
    def n_evaluated_images(self) -> int:
        return len(self.images)


@dataclass
class PersegResult:
    """Result of :func:`evaluate_perseg`; fractions in ``[0, 1]``."""

    concepts: list[PersegConceptResult]
    ref_idx: str
    mIoU: float
    mAcc: float
    mIoU_percent: float  # 100 * sum / count, evaluated in the reference print order
    mAcc_percent: float
    bIoU: float
    bIoU_pooled: float
    bIoU_api_min: float
    reference_images: list[Path] = field(default_factory=list)  # excluded GT files
    dilation_ratio: float = DEFAULT_DILATION_RATIO

    @property
    def count(self) -> int:
        """Number of concepts (the divisor of the means)."""
        return len(self.concepts)

    @property
    def images(self) -> list[PersegImageRecord]:
        return [r for c in self.concepts for r in c.images]

    def concept(self, name: str) -> PersegConceptResult:
        for c in self.concepts:
            if c.name == name:
                return c
        raise KeyError(name)


def read_binary_mask(path: PathLike) -> np.ndarray:
    """A PerSeg mask file as ``bool [H, W]``: ``gray(BGR decoding) > 0`` as the reference evaluation.

    Raises:
        PersegEvaluationError: the file is missing or not a readable image.
    """
    p = Path(path)
    if not p.is_file():
        raise PersegEvaluationError(f"{p}: file not found")
    data = np.fromfile(p, dtype=np.uint8)
    a = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    if a is None:
        raise PersegEvaluationError(f"{p}: not a readable image file")
    if a.dtype == np.uint8:
        return cv2.cvtColor(a, cv2.COLOR_BGR2GRAY) > 0
    return np.any(a != 0, axis=2)


def annotation_dir(gt_root: PathLike) -> Path:
    """``<gt_root>/Annotations`` when it exists, else ``gt_root`` itself (the annotation folder)."""
    root = Path(gt_root)
    if not root.is_dir():
        raise PersegEvaluationError(f"{root}: PerSeg folder not found")
    ann = root / "Annotations"
    return ann if ann.is_dir() else root


def list_concepts(ann_dir: Path) -> list[str]:
    """Sorted concept folder names (hidden folders and names containing ``.DS`` excluded)."""
    names = []
    for d in sorted(ann_dir.iterdir(), key=lambda q: q.name):
        if not d.is_dir() or d.name.startswith("."):
            continue
        if ".DS" in d.name:
            warnings.warn(
                f"{d}: concept folders whose name contains '.DS' are not evaluated (PerSeg convention)",
                stacklevel=3,
            )
            continue
        names.append(d.name)
    return names


def _mean(values: list[float]) -> float:
    if not values:
        return math.nan
    return float(np.mean(values))


def _evaluate_image(concept: str, gt_path: Path, pred_path: Path, dilation_ratio: float) -> PersegImageRecord:
    gt = read_binary_mask(gt_path)
    pred = read_binary_mask(pred_path)
    if gt.shape != pred.shape:
        raise PersegEvaluationError(
            f"{pred_path}: prediction is {pred.shape[1]}×{pred.shape[0]} (W×H) but the annotation "
            f"{gt_path} is {gt.shape[1]}×{gt.shape[0]}"
        )
    b = boundary_iou_stats(gt, pred, dilation_ratio)
    return PersegImageRecord(
        concept=concept,
        name=gt_path.stem,
        gt_path=gt_path,
        pred_path=pred_path,
        height=b.height,
        width=b.width,
        intersection=int(np.count_nonzero(gt & pred)),
        union=int(np.count_nonzero(gt | pred)),
        target=int(np.count_nonzero(gt)),
        boundary_iou=b.boundary_iou,
        mask_iou_cocoapi=b.mask_iou_cocoapi,
        boundary_iou_api_min=b.boundary_iou_api_min,
        boundary_intersection=b.boundary_intersection,
        boundary_union=b.boundary_union,
        gt_boundary_area=b.gt_boundary_area,
        pred_boundary_area=b.pred_boundary_area,
        dilation_px=b.dilation_px,
    )


def _concept_result(name: str, records: list[PersegImageRecord]) -> PersegConceptResult:
    inter = sum(r.intersection for r in records)
    union = sum(r.union for r in records)
    target = sum(r.target for r in records)
    b_inter = sum(r.boundary_intersection for r in records)
    b_union = sum(r.boundary_union for r in records)
    return PersegConceptResult(
        name=name,
        IoU=inter / (union + _EPS),
        Acc=inter / (target + _EPS),
        intersection_sum=inter,
        union_sum=union,
        target_sum=target,
        bIoU=_mean([r.boundary_iou for r in records]),
        bIoU_pooled=b_inter / b_union if b_union else math.nan,
        bIoU_api_min=_mean([r.boundary_iou_api_min for r in records]),
        images=records,
    )


def _missing_concept_result(name: str) -> PersegConceptResult:
    return PersegConceptResult(name, 0.0, 0.0, 0, 0, 0, 0.0, 0.0, 0.0, images=[], missing=True)


def evaluate_perseg(
    gt_root: PathLike,
    pred_root: PathLike,
    ref_idx: str = "00",
    *,
    missing_concepts: str = "error",
    dilation_ratio: float = DEFAULT_DILATION_RATIO,
) -> PersegResult:
    """Evaluates PerSeg predictions.

    Args:
        gt_root: PerSeg root (holding ``Annotations/<concept>/NN.png``) or its ``Annotations`` folder.
        pred_root: folder with ``<concept>/NN.png`` prediction masks (persam's BGR ``(0, 0, 128)``
            masks, indexed, 0/1 or 0/255 PNGs).
        ref_idx: stem of the reference image of every concept, excluded from the evaluation.
        missing_concepts: ``"error"`` (default) or ``"zero"`` to score a concept whose prediction
            folder is absent as 0 on every measure.
        dilation_ratio: Boundary IoU band width as a fraction of the image diagonal.

    Returns:
        :class:`PersegResult` with per-image records, per-concept and mean measures.

    Raises:
        PersegEvaluationError: missing / unreadable / mis-sized files (see the module docstring).
    """
    if missing_concepts not in ("error", "zero"):
        raise ValueError(f"missing_concepts must be 'error' or 'zero', got {missing_concepts!r}")
    ref_idx = str(ref_idx)
    ann_dir = annotation_dir(gt_root)
    preds = Path(pred_root)
    if not preds.is_dir():
        raise PersegEvaluationError(f"{preds}: prediction folder not found")
    names = list_concepts(ann_dir)
    if not names:
        raise PersegEvaluationError(f"{ann_dir}: no concept folders found")

    concepts: list[PersegConceptResult] = []
    references: list[Path] = []
    for name in names:
        gt_files = sorted((p for p in (ann_dir / name).glob("*.png") if p.is_file()), key=lambda q: q.name)
        ref = [p for p in gt_files if p.stem == ref_idx]
        if not ref:
            raise PersegEvaluationError(
                f"{ann_dir / name}: reference annotation {ref_idx}.png not found (ref_idx={ref_idx!r})"
            )
        references.extend(ref)
        tests = [p for p in gt_files if p.stem != ref_idx]
        if not tests:
            raise PersegEvaluationError(
                f"{ann_dir / name}: no test annotations besides the reference {ref_idx}.png"
            )
        pred_dir = preds / name
        if not pred_dir.is_dir():
            if missing_concepts == "zero":
                concepts.append(_missing_concept_result(name))
                continue
            raise PersegEvaluationError(f"{pred_dir}: prediction folder for concept '{name}' not found")
        records = []
        for gt_path in tests:
            pred_path = pred_dir / gt_path.name
            if not pred_path.is_file():
                raise PersegEvaluationError(f"{pred_path}: prediction for {gt_path} not found")
            records.append(_evaluate_image(name, gt_path, pred_path, dilation_ratio))
        concepts.append(_concept_result(name, records))

    iou_sum = 0.0
    acc_sum = 0.0
    for c in concepts:  # accumulated in concept order, as the reference does
        iou_sum += c.IoU
        acc_sum += c.Acc
    count = len(concepts)
    return PersegResult(
        concepts=concepts,
        ref_idx=ref_idx,
        mIoU=iou_sum / count,
        mAcc=acc_sum / count,
        mIoU_percent=100 * iou_sum / count,
        mAcc_percent=100 * acc_sum / count,
        bIoU=_mean([c.bIoU for c in concepts]),
        bIoU_pooled=_mean([c.bIoU_pooled for c in concepts]),
        bIoU_api_min=_mean([c.bIoU_api_min for c in concepts]),
        reference_images=references,
        dilation_ratio=dilation_ratio,
    )


def format_official(result: PersegResult, pred_path: str | None = None, gt_path: str | None = None) -> str:
    """The printout of the reference ``eval_miou.py`` for ``result``.

    With ``pred_path`` and ``gt_path`` (the reference script's arguments) the leading ``Args:`` line
    is included too.
    """
    out = []
    if pred_path is not None or gt_path is not None:
        args = argparse.Namespace(pred_path=pred_path, gt_path=gt_path, ref_idx=result.ref_idx)
        out.append(f"Args: {args} \n\n")
    for c in result.concepts:
        out.append(f"{c.name}, IoU: {100 * c.IoU:.2f}, Acc: {100 * c.Acc:.2f}\n\n")
    out.append(f"\nmIoU: {result.mIoU_percent:.2f}\n")
    out.append(f"mAcc: {result.mAcc_percent:.2f}\n\n")
    return "".join(out)


def format_table(result: PersegResult) -> str:
    """Per-concept and mean measures as a plain-text table (percentages, 2 decimals)."""
    rows = [("concept", "images", "IoU", "Acc", "bIoU")]
    for c in result.concepts:
        rows.append((c.name, str(c.n_evaluated_images), *(f"{100 * v:.2f}" for v in (c.IoU, c.Acc, c.bIoU))))
    n = sum(c.n_evaluated_images for c in result.concepts)
    rows.append(("mean", str(n), *(f"{100 * v:.2f}" for v in (result.mIoU, result.mAcc, result.bIoU))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        if k == len(rows) - 1:
            lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
        lines.append(
            "  ".join([r[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True))])
        )
    return "\n".join(lines)


CSV_COLUMNS = ("concept", "n_images", "IoU", "Acc", "bIoU", "bIoU_pooled", "bIoU_api_min")


def _csv_float(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


def write_csv(result: PersegResult, path: PathLike) -> Path:
    """Writes per-concept measures and a final ``mean`` row (fractions, full precision) atomically."""
    rows = [
        [
            c.name,
            str(c.n_evaluated_images),
            *(_csv_float(v) for v in (c.IoU, c.Acc, c.bIoU, c.bIoU_pooled, c.bIoU_api_min)),
        ]
        for c in result.concepts
    ]
    n = sum(c.n_evaluated_images for c in result.concepts)
    means = (result.mIoU, result.mAcc, result.bIoU, result.bIoU_pooled, result.bIoU_api_min)
    rows.append(["mean", str(n), *(_csv_float(v) for v in means)])
    dst = Path(path)
    with atomic_path(dst) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
    return dst
