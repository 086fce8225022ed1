"""Optional post-processing of SAM 2 video masks (both off by default, as in the fixtures)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def fill_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fills small holes of ``[N, 1, H, W]`` logits: 8-connected components of ``logits <= 0``
    whose area is at most ``max_area`` (border components included) become 0.1."""
    if max_area <= 0:
        return mask_logits
    background = (mask_logits <= 0).cpu().numpy().astype(np.uint8)
    holes = np.zeros_like(background, dtype=bool)
    for i in range(background.shape[0]):
        _, labels, stats, _ = cv2.connectedComponentsWithStats(background[i, 0], connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] <= max_area
        small[0] = False  # label 0 is the foreground (not a background component)
        holes[i, 0] = small[labels]
    return torch.where(torch.from_numpy(holes).to(mask_logits.device), 0.1, mask_logits)


def non_overlapping(mask_logits: torch.Tensor) -> torch.Tensor:
    """Keeps, per pixel, only the highest-scoring of the ``N`` objects of ``[N, 1, H, W]`` logits;
    the others are clamped to at most -10."""
    if mask_logits.shape[0] == 1:
        return mask_logits
    best = torch.argmax(mask_logits, dim=0, keepdim=True)
    keep = best == torch.arange(mask_logits.shape[0], device=mask_logits.device)[:, None, None, None]
    return torch.where(keep, mask_logits, torch.clamp(mask_logits, max=-10.0))
