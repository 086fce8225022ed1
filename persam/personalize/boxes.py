"""Box helpers: the bounding boxes of masks and the box prompts grown from them."""

from __future__ import annotations

import numpy as np
import torch


def mask_box(mask: np.ndarray | torch.Tensor) -> np.ndarray | None:
    """Inclusive ``XYXY`` bounding box ``[x_min, y_min, x_max, y_max]`` (int64) of a boolean
    ``[H, W]`` mask, or None if it is empty."""
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.int64)


def mask_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`mask_box`: ``masks [B, H, W]`` -> ``(boxes [B, 4]`` int64 (``-1`` where
    empty), ``nonempty [B]`` bool)."""
    b, h, w = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    nonempty = rows.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = max(h, w)
    y0 = torch.where(rows, ar_h, big).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    x0 = torch.where(cols, ar_w, big).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    boxes[~nonempty] = -1
    return boxes, nonempty


def expand_box(box: np.ndarray, margin: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A box prompt and its centre point grown from a previous box.

    The box grows by ``margin`` pixels on each side; the low sides stop at 0 and the high sides at
    ``W`` / ``H`` (one past the last pixel, as the reference video script does). The centre is the
    integer centre of the grown box.

    Args:
        box: int64 [4] ``XYXY`` inclusive. size: ``(H, W)``.

    Returns:
        ``(box int64 [4], centre int64 [2] (x, y))``.
    """
    h, w = size
    x0, y0, x1, y1 = (int(v) for v in box)
    x0 = 0 if x0 - margin <= 0 else x0 - margin
    y0 = 0 if y0 - margin <= 0 else y0 - margin
    x1 = w if x1 + margin >= w else x1 + margin
    y1 = h if y1 + margin >= h else y1 + margin
    out = np.array([x0, y0, x1, y1], dtype=np.int64)
    return out, np.array([(x0 + x1) // 2, (y0 + y1) // 2], dtype=np.int64)
