"""Where the automatic mask generator prompts: point grids and the multi-crop layout.

A *prompt source* turns one crop of the image into point prompts; :class:`GridSource` (the uniform
grids of SAM's automatic mask generator) is the default. Any callable with the same signature can
replace it, e.g. one proposing points from an object detector.

Crop layers: layer 0 is the whole image; layer ``i >= 1`` tiles it with ``2**i x 2**i`` crops that
overlap by ``crop_overlap_ratio * short_side * 2 / 2**i`` pixels. Layer ``i`` is prompted with the
grid ``points_per_side // downscale**i`` per side (or the ``i``-th explicit grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from persam.errors import InputError


class PromptSource(Protocol):
    """Point prompts for one crop: ``(crop [h, w, 3] uint8, layer index) -> float64 [N, 2]`` (x, y)
    in pixels of the crop, one single-point prompt per row."""

    def __call__(self, crop: np.ndarray, layer: int) -> np.ndarray: ...


def uniform_grid(n_per_side: int) -> np.ndarray:
    """``n_per_side**2`` points at the centres of an ``n x n`` tiling of the unit square, row by row
    (x fastest): float64 ``[n*n, 2]`` (x, y) in ``[0, 1]``."""
    if int(n_per_side) < 1:
        raise InputError(f"points per side must be >= 1, got {n_per_side}")
    n = int(n_per_side)
    half_cell = 1 / (2 * n)
    axis = np.linspace(half_cell, 1 - half_cell, n)
    xs = np.tile(axis[None, :], (n, 1))
    ys = np.tile(axis[:, None], (1, n))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_grids(points_per_side: int, *, crop_n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """One unit-square grid per crop layer (``crop_n_layers + 1`` of them); layer ``i`` has
    ``int(points_per_side / downscale_factor**i)`` points per side."""
    return [uniform_grid(int(points_per_side / (downscale_factor**i))) for i in range(crop_n_layers + 1)]


@dataclass(frozen=True)
class GridSource:
    """Prompts every crop of layer ``i`` with ``grids[i]`` (unit-square ``[N_i, 2]`` (x, y)) scaled
    to the crop."""

    grids: tuple[np.ndarray, ...]

    def __call__(self, crop: np.ndarray, layer: int) -> np.ndarray:
        if layer >= len(self.grids):
            raise InputError(f"no point grid for crop layer {layer} ({len(self.grids)} grid(s) given)")
        h, w = crop.shape[:2]
        return self.grids[layer] * np.array([[w, h]], dtype=np.float64)


def check_point_grids(point_grids: Sequence[np.ndarray], *, crop_n_layers: int) -> tuple[np.ndarray, ...]:
    """Explicit grids as float64 ``[N, 2]`` arrays in ``[0, 1]``, one per crop layer."""
    grids = tuple(np.asarray(g, dtype=np.float64) for g in point_grids)
    if len(grids) < crop_n_layers + 1:
        raise InputError(f"point_grids: {len(grids)} grid(s) for {crop_n_layers + 1} crop layer(s)")
    for i, g in enumerate(grids):
        if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0:
            raise InputError(f"point_grids[{i}]: expected a non-empty [N, 2] array, got shape {g.shape}")
        if not (np.isfinite(g).all() and (g >= 0).all() and (g <= 1).all()):
            raise InputError(f"point_grids[{i}]: coordinates must lie in [0, 1]")
    return grids


def crop_boxes(
    image_size: tuple[int, int], *, crop_n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """The crops of every layer as integer ``XYXY`` boxes (exclusive right / bottom) and their layer
    indices: the whole image first, then layer by layer, column-major within a layer (x outer)."""
    h, w = image_size
    boxes, layers = [[0, 0, w, h]], [0]
    short_side = min(h, w)
    for layer in range(1, crop_n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        # Crops of equal size that cover the side exactly when overlapping by ``overlap``.
        crop_w = math.ceil((overlap * (per_side - 1) + w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + h) / per_side)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0 in x0s:
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
                layers.append(layer)
    return boxes, layers
