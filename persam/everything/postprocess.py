"""Mask filtering and encoding for automatic mask generation: stability scores, boxes, crop-edge
filtering, greedy box NMS, removal of small regions and holes, run-length encodings.

Boxes are integer ``XYXY`` with *inclusive* right / bottom pixel indices (an empty mask has the box
``[0, 0, 0, 0]``), which is what SAM's automatic mask generator reports and suppresses on.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

#: A mask box within this many pixels of a crop's border (but not of the image's) was cut by the
#: crop, so the mask is dropped: the crop that sees the whole object produces it.
CROP_EDGE_TOLERANCE = 20.0


def stability_scores(logits: torch.Tensor, *, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks cut at ``threshold + offset`` and at ``threshold - offset``.

    The stricter mask lies inside the looser one, so the IoU is the ratio of their areas.

    Args:
        logits: ``[K, H, W]`` float mask logits.

    Returns:
        float32 ``[K]`` (NaN where both masks are empty).
    """
    # Per-row counts fit in int16 for any width below 32768; the totals need int32.
    inner = (logits > (threshold + offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    outer = (logits > (threshold - offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return inner / outer


def mask_boxes_xyxy(masks: torch.Tensor) -> torch.Tensor:
    """Inclusive ``XYXY`` boxes of bool ``[K, H, W]`` masks: int64 ``[K, 4]``, ``[0, 0, 0, 0]``
    for an empty mask."""
    k, h, w = masks.shape
    if k == 0:
        return torch.zeros(0, 4, dtype=torch.int64)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    return torch.where(rows.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def near_crop_edge(boxes: torch.Tensor, crop_box: list[int], image_size: tuple[int, int]) -> torch.Tensor:
    """Which boxes (``[K, 4]`` in the crop's frame) come within :data:`CROP_EDGE_TOLERANCE`
    pixels of a border of the crop that is not also a border of the image: bool ``[K]``."""
    h, w = image_size
    x0, y0 = crop_box[:2]
    shifted = boxes.to(torch.float32) + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    crop = torch.tensor(crop_box, dtype=torch.float32)
    image = torch.tensor([0, 0, w, h], dtype=torch.float32)
    at_crop = (shifted - crop).abs() <= CROP_EDGE_TOLERANCE
    at_image = (shifted - image).abs() <= CROP_EDGE_TOLERANCE
    return (at_crop & ~at_image).any(dim=1)


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, *, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression of ``XYXY`` boxes.

    Boxes are visited by decreasing score (equal scores in index order); each one kept suppresses
    every later box whose IoU with it exceeds ``iou_threshold``. Areas are ``(x1 - x0) * (y1 - y0)``;
    an IoU with a zero-area union is NaN and suppresses nothing.

    Args:
        boxes: ``[K, 4]``; scores: ``[K]``.

    Returns:
        int64 ``[M]`` indices of the kept boxes, by decreasing score.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores.cpu(), descending=True, stable=True)[1]
    b = boxes.detach().cpu().to(torch.float32)[order].numpy()
    x0, y0, x1, y1 = (np.ascontiguousarray(b[:, i]) for i in range(4))
    area = (x1 - x0) * (y1 - y0)
    alive = np.ones(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        # Float32 arithmetic in the usual order, so that borderline IoUs are decided alike.
        w = np.maximum(np.minimum(x1[i], x1) - np.maximum(x0[i], x0), np.float32(0))
        h = np.maximum(np.minimum(y1[i], y1) - np.maximum(y0[i], y0), np.float32(0))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (area[i] + area - inter)
        # The threshold is compared in double precision, not rounded to float32.
        alive &= ~(iou.astype(np.float64) > float(iou_threshold))
    return order[torch.as_tensor(keep, dtype=torch.int64)]


def remove_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """Fills holes, then drops islands, smaller than ``min_area`` pixels (8-connectivity).

    A hole is a connected region of background (one touching the image border counts too); when
    every island is small, the largest one is kept.

    Args:
        mask: bool ``[H, W]``.

    Returns:
        ``(mask bool [H, W], changed)``.
    """
    mask, filled = _drop_small_components(mask, min_area, holes=True)
    mask, dropped = _drop_small_components(mask, min_area, holes=False)
    return mask, filled or dropped


def _drop_small_components(mask: np.ndarray, min_area: int, *, holes: bool) -> tuple[np.ndarray, bool]:
    working = (~mask if holes else mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = sizes < min_area
    if not small.any():
        return mask, False
    # A lookup table over the component labels (0: outside the working region).
    if holes:
        lut = np.zeros(n, dtype=bool)
        lut[0] = True
        lut[1:] = small
    else:
        lut = np.concatenate([[False], ~small])
        if not lut.any():
            lut[int(np.argmax(sizes)) + 1] = True
    return lut[labels], True


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of bool ``[H, W]``: ``{"size": [H, W], "counts": [int, ...]}``, runs
    in column-major order starting with a (possibly empty) run of zeros."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [h * w]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def coco_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of bool ``[H, W]``: ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}
