"""The masks an automatic mask generator returns, one record per mask, in the record format of
SAM's ``SamAutomaticMaskGenerator`` (:meth:`MaskRecord.as_dict`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from persam.errors import InputError

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass
class MaskRecord:
    """One generated mask.

    Attributes:
        segmentation: bool ``[H, W]`` (``output_mode="binary_mask"``) or a COCO RLE dict
            ``{"size": [H, W], "counts": ...}`` (``"uncompressed_rle"``: a list of run lengths;
            ``"coco_rle"``: the compressed string).
        area: number of mask pixels.
        bbox: ``[x, y, w, h]`` with ``w = x_max - x_min`` and ``h = y_max - y_min`` (inclusive
            pixel indices, so a one-pixel mask has ``w = h = 0``).
        predicted_iou: the decoder's own estimate of the mask's quality.
        point_coords: ``[[x, y]]``, the point prompt that produced the mask (image pixels).
        stability_score: IoU of the mask cut at ``+offset`` and at ``-offset`` around the
            threshold.
        crop_box: ``[x, y, w, h]`` of the image crop the mask was generated in.
        box_prompt: ``[x0, y0, x1, y1]``, the box prompt that produced the mask (box prompts,
            :mod:`persam.everything.boxes`; ``point_coords`` is then empty), else None.
    """

    segmentation: np.ndarray | dict
    area: int
    bbox: list[int]
    predicted_iou: float
    point_coords: list[list[float]]
    stability_score: float
    crop_box: list[int]
    box_prompt: list[float] | None = None

    @property
    def mask(self) -> np.ndarray:
        """The mask as bool ``[H, W]``, whatever the output mode."""
        if isinstance(self.segmentation, np.ndarray):
            return self.segmentation
        return decode_segmentation(self.segmentation)

    def as_dict(self) -> dict[str, Any]:
        """The record as the dict SAM's automatic mask generator returns (with ``box_prompt``
        for a mask from a box prompt)."""
        record = asdict(self)
        if record["box_prompt"] is None:
            del record["box_prompt"]
        return record


def decode_segmentation(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed or uncompressed counts) as bool ``[H, W]``."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    return mask_utils.decode(compressed).astype(bool)


def check_output_mode(output_mode: str) -> str:
    if output_mode not in OUTPUT_MODES:
        raise InputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
    return output_mode
