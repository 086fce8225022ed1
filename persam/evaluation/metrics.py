"""DAVIS video-object-segmentation measures: region similarity J, boundary F, and their statistics.

The definitions are those of the DAVIS 2017 benchmark code, reproduced value for value:

* J (Jaccard): ``|G & P| / |G | P|`` per frame, **1.0 when both masks are empty**.
* F (boundary F-measure): boundaries are 1-pixel maps from right / down / down-right neighbour
  differences (the image border itself is not a boundary); a boundary pixel is matched when the other
  boundary has a pixel within ``ceil(bound_th * sqrt(H**2 + W**2))`` pixels (a disk). F = 1 when both
  boundaries are empty, 0 when exactly one is, otherwise the harmonic mean of precision and recall.
* Statistics of a per-frame series: Mean (NaN-aware), Recall (fraction of frames strictly above 0.5,
  NaN counting as a failure) and Decay (mean of the first quarter minus mean of the last quarter).
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

DEFAULT_BOUND_TH = 0.008


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1-pixel boundary of a binary mask.

    A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour; in the
    last row only the right neighbour and in the last column only the lower neighbour count, and the
    bottom-right corner is never a boundary. Hence the image border is not a contour.

    Args:
        mask: ``[H, W]`` binary mask.

    Returns:
        ``bool [H, W]`` boundary map.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"boundary_map: expected a [H, W] mask, got shape {seg.shape}")
    right = np.zeros_like(seg)
    down = np.zeros_like(seg)
    down_right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    down_right[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ right) | (seg ^ down) | (seg ^ down_right)
    b[-1, :] = seg[-1, :] ^ right[-1, :]
    b[:, -1] = seg[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def boundary_tolerance(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Matching radius in pixels: ``bound_th`` itself if >= 1, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm((height, width))))


def disk_kernel(radius: float) -> np.ndarray:
    """``uint8`` disk structuring element: integer offsets ``(x, y)`` with ``x**2 + y**2 <= radius**2``."""
    offsets = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(offsets, offsets)
    return ((x**2 + y**2) <= radius**2).astype(np.uint8)


def _crop_to_content(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Crops two masks to the box around their union plus a 1-pixel margin (``None`` if both empty).

    The boundary map of the crop equals the full boundary map inside the crop and the full map is empty
    outside it (the margin holds the outer contour above / left of the objects and keeps the crop's own
    last row / column background unless it is the image's), so F computed on the crop is exact.
    """
    union = a | b
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    h, w = union.shape
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
    c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
    return a[r0:r1, c0:c1], b[r0:r1, c0:c1]


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Boundary F-measure between binary masks ``gt`` and ``pred`` (both ``[H, W]``)."""
    gt_m = np.asarray(gt).astype(bool)
    pred_m = np.asarray(pred).astype(bool)
    if gt_m.shape != pred_m.shape or gt_m.ndim != 2:
        raise ValueError(
            f"boundary F needs two [H, W] masks of the same size, got {gt_m.shape} and {pred_m.shape}"
        )
    radius = boundary_tolerance(gt_m.shape[0], gt_m.shape[1], bound_th)
    cropped = _crop_to_content(gt_m, pred_m)
    if cropped is None:
        return 1.0  # both boundaries empty
    gt_b = boundary_map(cropped[0])
    pred_b = boundary_map(cropped[1])
    n_gt = int(np.count_nonzero(gt_b))
    n_pred = int(np.count_nonzero(pred_b))
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0  # precision or recall is 0 and the other is 1
    kernel = disk_kernel(radius)
    gt_dil = cv2.dilate(gt_b.view(np.uint8), kernel).view(bool)
    pred_dil = cv2.dilate(pred_b.view(np.uint8), kernel).view(bool)
    precision = np.count_nonzero(pred_b & gt_dil) / float(n_pred)
    recall = np.count_nonzero(gt_b & pred_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def jaccard(gt: np.ndarray, pred: np.ndarray) -> float | np.ndarray:
    """Region similarity J between binary masks ``[H, W]`` (a float) or ``[T, H, W]`` (``[T]`` array).

    1.0 where both masks are empty.
    """
    gt_m = np.asarray(gt).astype(bool)
    pred_m = np.asarray(pred).astype(bool)
    if gt_m.shape != pred_m.shape:
        raise ValueError(f"J needs masks of the same shape, got {gt_m.shape} and {pred_m.shape}")
    inter = np.count_nonzero(gt_m & pred_m, axis=(-2, -1))
    union = np.count_nonzero(gt_m | pred_m, axis=(-2, -1))
    if np.ndim(union) == 0:
        return 1.0 if union == 0 else int(inter) / int(union)
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j[union == 0] = 1.0
    return j


def jaccard_from_counts(intersection: int, union: int) -> float:
    """J from pixel counts: ``intersection / union``, 1.0 for an empty union."""
    return 1.0 if union == 0 else intersection / union


def decay_bin_edges(n: int) -> np.ndarray:
    """Start indices of the four decay bins of an ``n``-frame series, as the benchmark computes them.

    ``round(linspace(1, n, 5) + 1e-10) - 1`` cast to ``uint8``: the cast wraps (or misbehaves for
    negative values) above 256 frames, which the benchmark code does too.
    """
    edges = np.round(np.linspace(1, n, 5) + 1e-10) - 1
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return edges.astype(np.uint8)


def _nanmean(a: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(a))


def sequence_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, Recall and Decay of a per-frame measure series ``[T]`` (J or F of one object).

    * Mean: NaN-aware mean (NaN for an empty series).
    * Recall: fraction of frames with value strictly greater than 0.5 (NaN frames count as misses).
    * Decay: NaN-aware mean of bin 0 minus that of bin 3, where bin ``i`` spans
      ``values[e[i] : e[i + 1] + 1]`` (inclusive, overlapping edges) with ``e = decay_bin_edges(T)``.
      0.0 for a single frame. Because the edges are stored as ``uint8`` (as in the benchmark code),
      series longer than 256 frames get wrapped edges and usually a NaN decay.
    """
    v = np.asarray(values, dtype=np.float64)
    mean = _nanmean(v)
    recall = _nanmean(v > 0.5)
    e = decay_bin_edges(len(v))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # uint8 edge + 1 may wrap, as in the benchmark
        first = v[e[0] : e[1] + 1]
        last = v[e[3] : e[4] + 1]
    decay = _nanmean(first) - _nanmean(last)
    return mean, recall, decay
