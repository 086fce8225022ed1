"""Drawing segmentations on their images: one tinted mask with its prompts (image overlays), or
every object of a label map in its palette colour (video overlays, several objects)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from persam.readers.davis import DAVIS_PALETTE
from persam.results import Masks

OVERLAY_TINT = (30, 144, 255)  # RGB
FOREGROUND_POINT = (0, 220, 0)
BACKGROUND_POINT = (230, 0, 0)
BOX_COLOR = (0, 220, 0)


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a mask of shape [H, W], got {m.shape}")
    return m.astype(bool) if m.dtype != bool else m


def blend(image: np.ndarray, where: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``image`` (uint8 ``[H, W, 3]``) with ``colours`` (``[3]`` or ``[n, 3]`` for the ``n`` pixels of
    bool ``where [H, W]``) mixed in at opacity ``alpha``; uint8 ``[H, W, 3]``."""
    out = image.astype(np.float32)
    out[where] = out[where] * (1.0 - alpha) + np.asarray(colours, np.float32) * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    points: np.ndarray | Sequence[Sequence[float]] | None = None,
    point_labels: np.ndarray | Sequence[int] | None = None,
    box: np.ndarray | Sequence[float] | None = None,
    tint: tuple[int, int, int] = OVERLAY_TINT,
    alpha: float = 0.5,
) -> np.ndarray:
    """Draws a segmentation on its image.

    Args:
        image: ``uint8 [H, W, 3]`` RGB.
        mask: ``bool [H, W]``; tinted with ``tint`` at opacity ``alpha``, outlined in the same colour.
        points: ``[N, 2]`` (x, y) pixels; drawn as filled circles (green foreground, red background).
        point_labels: ``[N]`` 1 foreground / 0 background (all foreground when None).
        box: ``[4]`` XYXY pixels, drawn as a rectangle.

    Returns:
        ``uint8 [H, W, 3]`` RGB.
    """
    img = np.asarray(image)
    m = _as_bool_mask(mask)
    if img.shape[:2] != m.shape:
        raise ValueError(f"mask {m.shape} does not match image {img.shape[:2]}")
    out = blend(img, m, np.asarray(tint), alpha)
    h, w = m.shape
    thickness = max(1, round(max(h, w) / 400))
    if m.any():
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tint, thickness)
    if box is not None:
        x0, y0, x1, y1 = (int(round(float(v))) for v in np.asarray(box, np.float64).reshape(4))
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_COLOR, thickness)
    if points is not None:
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        labels = np.ones(len(pts), int) if point_labels is None else np.asarray(point_labels).reshape(-1)
        radius = max(3, round(max(h, w) / 100))
        for (x, y), lab in zip(pts, labels, strict=True):
            centre = (int(round(x)), int(round(y)))
            colour = FOREGROUND_POINT if lab > 0 else BACKGROUND_POINT
            cv2.circle(out, centre, radius, colour, -1, cv2.LINE_AA)
            cv2.circle(out, centre, radius, (255, 255, 255), max(1, radius // 4), cv2.LINE_AA)
    return out


def render_masks(image: np.ndarray, masks: Masks, *, alpha: float = 0.5) -> np.ndarray:
    """:func:`render_overlay` of a :class:`~persam.results.Masks`: the union of its masks, with the
    prompts of its first mask."""
    prompts = masks.prompts[0] if len(masks) else None
    return render_overlay(
        image,
        masks.union(),
        None if prompts is None else _non_empty(prompts.points),
        None if prompts is None else _non_empty(prompts.labels),
        None if prompts is None else _non_empty(prompts.box),
        alpha=alpha,
    )


def _non_empty(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or np.asarray(a).size == 0 else np.asarray(a)


def overlay_labels(
    frame: np.ndarray, label_map: np.ndarray, palette: Sequence[int] = DAVIS_PALETTE, alpha: float = 0.5
) -> np.ndarray:
    """Blends the palette colour of every labelled pixel into ``frame`` and outlines each object.

    Args:
        frame: ``uint8 [H, W, 3]`` RGB. label_map: ``uint8 [H, W]``. Returns ``uint8 [H, W, 3]`` RGB.
    """
    lut = np.asarray(list(palette)[:768] + [0] * max(0, 768 - len(palette)), np.uint8).reshape(256, 3)
    colours = lut[label_map]
    fg = label_map > 0
    out = blend(frame, fg, colours[fg], alpha)
    edges = cv2.morphologyEx(label_map, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges & fg] = colours[edges & fg]
    return out
