"""One result type for a set of masks on one image: :class:`Masks`.

Image segmentations (:class:`persam.personalize.SegmentationResult`) and tracked video frames
(:class:`persam.tracking.FrameResult`) both give their masks as a :class:`Masks` (their ``masks``
property), and every writer (mask PNGs, overlays, COCO files, label maps) consumes it.

>>> masks = Masks.from_label_map(label_map)                                   # doctest: +SKIP
>>> masks.masks.shape, masks.object_ids, masks.boxes                         # doctest: +SKIP
>>> Masks.from_coco_rle(masks.to_coco_rle()).label_map()                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from persam.errors import InputError


@dataclass(kw_only=True)
class Prompts:
    """The prompts a mask was decoded from (original-image pixels).

    Attributes:
        points: ``[K, 2]`` (x, y). labels: int64 ``[K]``, 1 object / 0 background.
        box: ``[4]`` XYXY box prompt, or None.
    """

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None


def mask_boxes_xyxy(masks: np.ndarray) -> np.ndarray:
    """Inclusive ``XYXY`` boxes int64 ``[N, 4]`` of bool ``masks [N, H, W]`` (``-1`` where empty)."""
    out = np.full((masks.shape[0], 4), -1, np.int64)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size:
            cols = np.flatnonzero(m.any(axis=0))
            out[i] = (cols[0], rows[0], cols[-1], rows[-1])
    return out


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO run-length encoding of ``bool [H, W]``: ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a mask of shape [H, W], got {m.shape}")
    rle = mask_utils.encode(np.asfortranarray(m.astype(bool).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_rle`: ``bool [H, W]``."""
    counts = rle["counts"]
    r = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(r).astype(bool)


def mask_bbox_xywh(mask: np.ndarray) -> list[float]:
    """Tight bounding box ``[x, y, w, h]`` of the object pixels (zeros for an empty mask)."""
    box = mask_boxes_xyxy(np.asarray(mask, bool)[None])[0]
    if box[0] < 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(box[0]), float(box[1]), float(box[2] - box[0] + 1), float(box[3] - box[1] + 1)]


@dataclass(kw_only=True)
class Masks:
    """``N`` masks on one image of ``H x W`` pixels, with what is known about each.

    Attributes:
        masks: bool ``[N, H, W]``.
        scores: float64 ``[N]`` predicted IoU (NaN where unknown).
        object_ids: int64 ``[N]`` (default ``1..N``).
        found: bool ``[N]``: the mask counts as a detection (default: non-empty).
        prompts: per mask the :class:`Prompts` it was decoded from, or None.
        boxes: int64 ``[N, 4]`` inclusive ``XYXY`` box of each mask's pixels (``-1`` where empty);
            computed from ``masks``.
    """

    masks: np.ndarray
    scores: np.ndarray | None = None
    object_ids: np.ndarray | None = None
    found: np.ndarray | None = None
    prompts: list[Prompts | None] | None = None
    boxes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        m = np.asarray(self.masks)
        if m.ndim != 3:
            raise InputError(f"masks must be [N, H, W], got shape {m.shape}")
        self.masks = m.astype(bool, copy=False)
        n = m.shape[0]
        self.scores = _per_mask(self.scores, n, np.float64, np.nan, "scores")
        self.object_ids = _per_mask(self.object_ids, n, np.int64, None, "object_ids")
        if self.found is None:
            self.found = self.masks.any(axis=(1, 2))
        self.found = _per_mask(self.found, n, bool, None, "found")
        if self.prompts is None:
            self.prompts = [None] * n
        if len(self.prompts) != n:
            raise InputError(f"prompts: expected {n} entries (one per mask), got {len(self.prompts)}")
        self.boxes = mask_boxes_xyxy(self.masks)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Masks:
        """The masks at ``index`` (an int, a slice, indices or a bool ``[N]`` selection) as a new
        :class:`Masks` (an int gives one mask)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Masks(
            masks=self.masks[idx],
            scores=self.scores[idx],
            object_ids=self.object_ids[idx],
            found=self.found[idx],
            prompts=[self.prompts[int(i)] for i in idx],
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def areas(self) -> np.ndarray:
        """int64 ``[N]`` pixel count of each mask."""
        return self.masks.sum(axis=(1, 2)).astype(np.int64)

    @classmethod
    def empty(cls, size: tuple[int, int]) -> Masks:
        """No mask on an image of ``size`` ``(H, W)``."""
        return cls(masks=np.zeros((0, int(size[0]), int(size[1])), bool))

    # ------------------------------------------------------------ label maps
    def union(self) -> np.ndarray:
        """bool ``[H, W]``: pixels in any mask."""
        return self.masks.any(axis=0) if len(self) else np.zeros(self.image_size, bool)

    def label_map(self) -> np.ndarray:
        """uint8 ``[H, W]``: 0 background, else the object id (the earlier mask where masks overlap)."""
        if len(self) and (self.object_ids.min() < 1 or self.object_ids.max() > 255):
            raise InputError(f"a label map needs object ids in 1..255, got {self.object_ids.tolist()}")
        out = np.zeros(self.image_size, np.uint8)
        for k in range(len(self) - 1, -1, -1):  # earlier masks drawn last, so they win overlaps
            out[self.masks[k]] = self.object_ids[k]
        return out

    @classmethod
    def from_label_map(
        cls,
        label_map: np.ndarray,
        object_ids: Sequence[int] | None = None,
        scores: Sequence[float | None] | None = None,
    ) -> Masks:
        """One mask per object id of ``label_map`` (uint8 ``[H, W]``, 0 background).

        Args:
            object_ids: the ids to take, in order (an id absent from the map gives an empty mask);
                default the ids present, ascending.
            scores: per id, a score or None (unknown).
        """
        lm = np.asarray(label_map)
        if lm.ndim != 2:
            raise InputError(f"label map must be [H, W], got shape {lm.shape}")
        ids = (
            [int(v) for v in np.unique(lm) if v != 0] if object_ids is None else [int(i) for i in object_ids]
        )
        masks = np.stack([lm == i for i in ids]) if ids else np.zeros((0, *lm.shape), bool)
        sc = None if scores is None else [np.nan if s is None else float(s) for s in scores]
        return cls(masks=masks, scores=sc, object_ids=np.asarray(ids, np.int64))

    # ------------------------------------------------------------------ COCO
    def to_coco_rle(self) -> list[dict[str, Any]]:
        """Per mask, its COCO compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
        return [encode_rle(m) for m in self.masks]

    @classmethod
    def from_coco_rle(
        cls,
        rles: Sequence[dict[str, Any]],
        *,
        scores: Sequence[float] | None = None,
        object_ids: Sequence[int] | None = None,
        size: tuple[int, int] | None = None,
    ) -> Masks:
        """Masks from COCO RLEs (all of one image; ``size`` ``(H, W)`` is needed when there are none)."""
        decoded = [decode_rle(r) for r in rles]
        if not decoded:
            if size is None:
                raise InputError("from_coco_rle: no RLE given and no image size")
            return cls.empty(size)
        if len({d.shape for d in decoded}) != 1:
            raise InputError(f"RLEs of different image sizes: {sorted({d.shape for d in decoded})}")
        return cls(masks=np.stack(decoded), scores=scores, object_ids=object_ids)


def _per_mask(values: Any, n: int, dtype: type, fill: Any, what: str) -> np.ndarray:
    """``values`` as a ``[n]`` array of ``dtype`` (``fill`` where None; ``1..n`` ids by default)."""
    if values is None:
        return np.arange(1, n + 1, dtype=dtype) if fill is None else np.full(n, fill, dtype)
    a = np.asarray(values, dtype=dtype).reshape(-1)
    if a.shape != (n,):
        raise InputError(f"{what}: expected {n} values (one per mask), got {a.shape[0]}")
    return a
