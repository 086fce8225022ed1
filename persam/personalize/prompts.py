"""Click prompts: a reference mask from points and/or a box, and the one check of such prompts.

:func:`points_outside` and :func:`box_misses_image` are the geometric checks every caller (the
API, the command line, the demo) applies to clicks before decoding; :func:`check_prompts` adds
the shape, finiteness and label checks and raises one-line :class:`~persam.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.io import as_image
from persam.personalize.segment import ImageLike


def points_outside(points: np.ndarray | Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """bool ``[N]``: which ``(x, y)`` points of ``[N, 2]`` lie outside an image of ``size`` ``(H, W)``
    (a pixel ``(x, y)`` is inside when ``0 <= x < W`` and ``0 <= y < H``)."""
    h, w = size
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)


def box_misses_image(box: np.ndarray | Sequence[float], size: tuple[int, int]) -> bool:
    """True when the XYXY ``box`` holds no pixel of an image of ``size`` ``(H, W)``."""
    h, w = size
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    return x0 >= w or y0 >= h or x1 <= 0 or y1 <= 0


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
    pts, lab, bx = check_prompts(points, labels, box, img.shape[:2])
    model.set_image(img)
    dev = model.device
    pc = None if pts is None else torch.as_tensor(pts, dtype=torch.float32, device=dev)[None]
    pl = None if lab is None else torch.as_tensor(lab, dtype=torch.int64, device=dev)[None]
    boxes = None if bx is None else torch.as_tensor(bx, dtype=torch.float32, device=dev).reshape(1, 4)
    out = model.decode(pc, pl, boxes=boxes, mask_input=None, multimask_output=True)
    best = int(out.iou_predictions[0].argmax())
    # Only the chosen mask is brought to the original size.
    logits = model.postprocess(out.low_res_logits[:, best : best + 1])[0, 0]
    return model.binarize(logits).cpu().numpy()


def check_prompts(
    points: np.ndarray | Sequence[Sequence[float]] | None,
    labels: np.ndarray | Sequence[int] | None,
    box: np.ndarray | Sequence[float] | None,
    size: tuple[int, int],
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validated prompts for an image of ``size`` ``(H, W)``: points float64 ``[N, 2]`` and labels
    int64 ``[N]`` (or None), box float64 ``[4]`` (or None).

    Raises:
        InputError: malformed prompts, a point outside the image, a box that misses it, or no prompt.
    """
    h, w = size
    pts = lab = bx = None
    if points is not None and len(points) > 0:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise InputError(f"points must be [N, 2] (x, y), got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise InputError("points must be finite numbers")
        outside = points_outside(pts, size)
        if outside.any():
            x, y = pts[int(np.argmax(outside))]
            raise InputError(f"point ({x:g}, {y:g}) is outside the image ({w}×{h} pixels, W×H)")
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
        if box_misses_image(bx, size):
            corners = ", ".join(f"{v:g}" for v in bx)
            raise InputError(f"box [{corners}] is outside the image ({w}×{h} pixels, W×H)")
    if pts is None and bx is None:
        raise InputError("give at least one point or a box")
    return pts, lab, bx
