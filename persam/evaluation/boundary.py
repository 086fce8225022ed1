"""Boundary IoU (Cheng et al., CVPR 2021), computed as the reference boundary-iou-api does.

A mask's boundary region is the set of object pixels within ``d`` pixels of the object's contour,
where the contour includes the image border (an object cut by the border has a boundary there) and
``d = max(1, round(dilation_ratio * sqrt(H**2 + W**2)))`` with Python's round-half-to-even (a
500x375 image has diagonal 625 and ``d = round(12.5) = 12``). Boundary IoU is the IoU of the two
boundary regions, evaluated on their COCO run-length encodings like the reference API, which means
that two empty boundaries score 0.0 (not NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

DEFAULT_DILATION_RATIO = 0.02

_ERODE_KERNEL = np.ones((3, 3), np.uint8)


def boundary_dilation(height: int, width: int, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> int:
    """Width ``d`` in pixels of the boundary band for an ``height x width`` image (at least 1)."""
    diagonal = np.sqrt(height**2 + width**2)
    return max(1, int(round(dilation_ratio * diagonal)))


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> np.ndarray:
    """Boundary region of a binary mask.

    Args:
        mask: ``[H, W]`` binary mask (bool or 0/1 integers).
        dilation_ratio: band width as a fraction of the image diagonal.

    Returns:
        ``uint8 [H, W]`` 0/1 array: the mask minus its erosion by a ``(2d+1) x (2d+1)`` square, the
        image outside counting as background (so object pixels near the border are boundary too).
    """
    m = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError(f"mask_to_boundary: expected a [H, W] mask, got shape {m.shape}")
    h, w = m.shape
    d = boundary_dilation(h, w, dilation_ratio)
    # A one-pixel zero frame makes the image border erode the object like background would.
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _ERODE_KERNEL, iterations=d)[1 : h + 1, 1 : w + 1]
    return m - eroded


def _rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))


def rle_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two binary ``[H, W]`` masks through pycocotools RLEs (0.0 when both are empty)."""
    return float(mask_utils.iou([_rle(a)], [_rle(b)], [0])[0, 0])


@dataclass
class BoundaryIoUStats:
    """Boundary IoU of one (ground truth, prediction) pair with the counts behind it."""

    boundary_iou: float  # pycocotools IoU of the boundary regions (0.0 if both are empty)
    mask_iou_cocoapi: float  # pycocotools IoU of the masks (0.0 if both are empty)
    boundary_iou_api_min: float  # min(mask IoU, Boundary IoU), the API's "boundary" IoU type
    boundary_intersection: int
    boundary_union: int
    gt_boundary_area: int
    pred_boundary_area: int
    dilation_px: int
    height: int
    width: int

    @property
    def boundary_iou_plain_ratio(self) -> float:
        """``intersection / union`` of the boundary regions, NaN when both are empty."""
        if self.boundary_union == 0:
            return math.nan
        return self.boundary_intersection / self.boundary_union


def boundary_iou_stats(
    gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = DEFAULT_DILATION_RATIO
) -> BoundaryIoUStats:
    """Boundary IoU between binary masks ``gt`` and ``pred`` (both ``[H, W]``, same size)."""
    gt_m = np.asarray(gt) != 0
    pred_m = np.asarray(pred) != 0
    if gt_m.shape != pred_m.shape or gt_m.ndim != 2:
        raise ValueError(
            f"boundary IoU needs two [H, W] masks of the same size, got {gt_m.shape} and {pred_m.shape}"
        )
    h, w = gt_m.shape
    gt_b = mask_to_boundary(gt_m, dilation_ratio)
    pred_b = mask_to_boundary(pred_m, dilation_ratio)
    b_iou = rle_iou(pred_b, gt_b)
    m_iou = rle_iou(pred_m, gt_m)
    gt_bb = gt_b.astype(bool)
    pred_bb = pred_b.astype(bool)
    return BoundaryIoUStats(
        boundary_iou=b_iou,
        mask_iou_cocoapi=m_iou,
        boundary_iou_api_min=min(m_iou, b_iou),
        boundary_intersection=int(np.count_nonzero(gt_bb & pred_bb)),
        boundary_union=int(np.count_nonzero(gt_bb | pred_bb)),
        gt_boundary_area=int(np.count_nonzero(gt_bb)),
        pred_boundary_area=int(np.count_nonzero(pred_bb)),
        dilation_px=boundary_dilation(h, w, dilation_ratio),
        height=h,
        width=w,
    )


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> float:
    """Boundary IoU in ``[0, 1]`` between two binary ``[H, W]`` masks (0.0 when both boundaries are empty)."""
    return boundary_iou_stats(gt, pred, dilation_ratio).boundary_iou
