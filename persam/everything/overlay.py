"""Drawing every generated mask on its image, each in its own colour."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

#: Hue step between consecutive masks (the golden ratio conjugate): neighbours in the list get
#: well-separated colours however many masks there are.
_HUE_STEP = 0.618033988749895


def mask_colours(n: int) -> np.ndarray:
    """``n`` distinct bright RGB colours, ``uint8 [n, 3]``, the same for the same ``n``."""
    hues = (np.arange(n) * _HUE_STEP) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]
    return np.round(np.asarray(rgb, np.float64).reshape(-1, 3) * 255).astype(np.uint8)


def render_masks(image: np.ndarray, masks: Sequence[np.ndarray], *, alpha: float = 0.55) -> np.ndarray:
    """``image`` (``uint8 [H, W, 3]`` RGB) with every bool ``[H, W]`` mask tinted in its own colour
    and outlined; larger masks are painted first so that smaller ones stay visible.

    Returns:
        ``uint8 [H, W, 3]`` RGB.
    """
    out = np.asarray(image).astype(np.float32)
    colours = mask_colours(len(masks))
    order = sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i])))
    h, w = out.shape[:2]
    thickness = max(1, round(max(h, w) / 500))
    edges = []
    for i in order:
        m = np.asarray(masks[i], bool)
        out[m] = out[m] * (1.0 - alpha) + colours[i].astype(np.float32) * alpha
        edges.append((m, colours[i]))
    result = np.clip(np.round(out), 0, 255).astype(np.uint8)
    for m, colour in edges:
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(result, contours, -1, tuple(int(c) for c in colour), thickness)
    return result
