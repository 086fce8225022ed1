"""Merging per-object logits into one label map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def merge_object_logits(
    logits: Sequence[torch.Tensor], object_ids: Sequence[int], size: tuple[int, int]
) -> np.ndarray:
    """Label map ``uint8 [H, W]``: per-pixel argmax over a zero background and the objects' logits
    ``[H, W]`` (object ``k`` labelled ``object_ids[k]``; ties go to the earlier object).

    A running maximum equals that argmax (only a strictly larger logit takes a pixel over) and is
    much cheaper than an argmax across a stacked ``[K + 1, H, W]`` tensor.
    """
    if not logits:
        return np.zeros(size, np.uint8)
    first = logits[0].float()
    label = torch.zeros(first.shape, dtype=torch.uint8, device=first.device)
    label.masked_fill_(first > 0, int(object_ids[0]))
    best = first.clamp_min(0)
    for x, oid in zip(logits[1:], object_ids[1:], strict=True):
        x = x.float()
        label.masked_fill_(x > best, int(oid))
        torch.maximum(best, x, out=best)
    return label.cpu().numpy()
