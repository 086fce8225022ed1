"""The first-frame annotation of a video: a label map or one mask per object."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from persam.io import InputError, PathLike, load_label_map, mask_to_bool


@dataclass
class FirstMask:
    """The objects to track, from the first-frame annotation.

    Attributes:
        label_map: ``uint8 [H, W]``, 0 = background, else the object id (lowest id where masks overlap).
        object_ids: ids of the objects, ascending (each present in the annotation).
        masks: one ``bool [H, W]`` mask per object (in ``object_ids`` order; may overlap when given
            as separate masks).
        palette: the annotation's palette (flat ``[r, g, b] * 256``) or None when it has none.
        source: the file name(s) or ``"mask"``, for messages.
    """

    label_map: np.ndarray
    object_ids: list[int]
    masks: list[np.ndarray]
    palette: list[int] | None = None
    source: str = "mask"

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.label_map.shape[0]), int(self.label_map.shape[1]))


def _read_palette_png(path: Path) -> tuple[np.ndarray, list[int] | None]:
    """Label values and the palette (None unless the PNG is indexed) of a mask file."""
    labels = load_label_map(path)
    palette = None
    with Image.open(path) as im:
        if im.mode == "P":
            pal = im.getpalette() or []
            palette = (list(pal) + [0] * 768)[:768]
    if palette is None:
        values = np.unique(labels)
        nonzero = values[values != 0]
        if len(nonzero) == 1:
            # A binary mask (0/1, 0/255, 0/128, ...): one object with id 1.
            labels = (labels != 0).astype(np.uint8)
    return labels, palette


def _labels_to_first_mask(labels: np.ndarray, source: str, palette: list[int] | None) -> FirstMask:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"{source}: expected a label map of shape [H, W], got {labels.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{source}: a label map needs integer object ids, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise InputError(f"{source}: object ids must be in 0..255, got {labels.min()}..{labels.max()}")
    labels = labels.astype(np.uint8)
    ids = [int(v) for v in np.unique(labels) if v != 0]
    if not ids:
        raise InputError(f"{source}: the mask holds no object (every pixel is background)")
    return FirstMask(labels, ids, [labels == i for i in ids], palette, source)


def load_first_mask(
    mask: PathLike | np.ndarray | Sequence[PathLike | np.ndarray],
    size: tuple[int, int] | None = None,
) -> FirstMask:
    """Reads the first-frame annotation.

    Args:
        mask: a label-map PNG (DAVIS palette PNG with object ids, or a binary PNG = one object with
            id 1), a label map ``uint8 [H, W]`` (0 = background), or a list of per-object masks
            (paths or bool arrays; object ``k`` of the list gets id ``k + 1``).
        size: ``(H, W)`` of the video frames; a mask of another size is an error.

    Raises:
        InputError: unreadable file, no object, or a size that differs from ``size``.
    """
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        labels, palette = _read_palette_png(path)
        first = _labels_to_first_mask(labels, str(path), palette)
    elif isinstance(mask, np.ndarray):
        first = _labels_to_first_mask(mask, "mask", None)
    else:
        items = list(mask)
        if not items:
            raise InputError("mask: the list of object masks is empty")
        masks: list[np.ndarray] = []
        names: list[str] = []
        for k, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                m = load_label_map(item) != 0
                names.append(str(item))
            else:
                m = mask_to_bool(np.asarray(item), f"mask {k}")
                names.append(f"mask {k}")
            if m.shape != masks[0].shape if masks else False:
                raise InputError(f"{names[-1]}: mask is {m.shape[1]}×{m.shape[0]} (W×H), the first one is "
                                 f"{masks[0].shape[1]}×{masks[0].shape[0]}")  # fmt: skip
            if not m.any():
                raise InputError(f"{names[-1]}: the mask holds no object (every pixel is background)")
            masks.append(m)
        if len(masks) > 255:
            raise InputError(f"mask: at most 255 objects, got {len(masks)}")
        labels = np.zeros(masks[0].shape, np.uint8)
        for k in range(len(masks) - 1, -1, -1):  # lower ids win where masks overlap
            labels[masks[k]] = k + 1
        first = FirstMask(labels, list(range(1, len(masks) + 1)), masks, None, ", ".join(names))
    if size is not None and first.size != tuple(size):
        raise InputError(
            f"{first.source}: mask is {first.size[1]}×{first.size[0]} (W×H) but the video frames are "
            f"{size[1]}×{size[0]}"
        )
    return first
