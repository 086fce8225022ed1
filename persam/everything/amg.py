"""Automatic mask generation ("segment everything") on any :class:`~persam.backbones.base.Backbone`.

For every crop (the whole image, then the tiles of each crop layer, see :mod:`.grid`) the image is
encoded once and prompted with single points in batches of ``points_per_batch``; every point gives
the decoder's multimask outputs. A mask is kept when its predicted IoU exceeds
``pred_iou_thresh``, its stability score reaches ``stability_score_thresh`` and its box does not
touch a border of the crop that is not a border of the image; box NMS then removes duplicates
within the crop, and across crops (preferring masks from smaller crops). Optionally, holes and
islands smaller than ``min_mask_region_area`` are removed and duplicates suppressed once more,
preferring the masks that needed no change.

Results equal, record for record, those of SAM's ``SamAutomaticMaskGenerator`` with the same
options. Work is spent on survivors only: the predicted-IoU filter runs on the decoder output
before any mask is brought to full resolution, survivors are up-sampled a few at a time and kept
bit-packed, and masks are run-length encoded only once all suppression is done.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.everything.grid import GridSource, PromptSource, check_point_grids, crop_boxes, layer_grids
from persam.everything.postprocess import (
    coco_rle,
    greedy_nms,
    mask_boxes_xyxy,
    near_crop_edge,
    remove_small_regions,
    stability_scores,
    uncompressed_rle,
)
from persam.everything.records import MaskRecord, check_output_mode
from persam.io import as_image

#: Logit level separating mask from background for the stability score (SAM's ``mask_threshold``).
MASK_THRESHOLD = 0.0
#: Prompts' worth of surviving masks brought to full resolution at once: bounds the memory of the
#: float logits.
_UPSAMPLE_CHUNK = 6


@dataclass(frozen=True)
class GeneratorOptions:
    """Options of :class:`MaskGenerator`, named and defaulted as in SAM's automatic mask generator
    (defaults tuned for SAM ViT-H). ``points_per_side`` and ``point_grids`` exclude each other."""

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: Sequence[np.ndarray] | None = None
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"

    def __post_init__(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise InputError("give exactly one of points_per_side and point_grids")
        if self.points_per_side is not None and int(self.points_per_side) < 1:
            raise InputError(f"points_per_side must be >= 1, got {self.points_per_side}")
        if int(self.points_per_batch) < 1:
            raise InputError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        if int(self.crop_n_layers) < 0:
            raise InputError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")
        if int(self.crop_n_points_downscale_factor) < 1:
            raise InputError(
                f"crop_n_points_downscale_factor must be >= 1, got {self.crop_n_points_downscale_factor}"
            )
        if not 0.0 <= float(self.crop_overlap_ratio) < 1.0:
            raise InputError(f"crop_overlap_ratio must be in [0, 1), got {self.crop_overlap_ratio}")
        if int(self.min_mask_region_area) < 0:
            raise InputError(f"min_mask_region_area must be >= 0, got {self.min_mask_region_area}")
        for name in ("box_nms_thresh", "crop_nms_thresh"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        check_output_mode(self.output_mode)

    def prompt_source(self) -> GridSource:
        """The point grids of every crop layer."""
        if self.point_grids is not None:
            return GridSource(check_point_grids(self.point_grids, crop_n_layers=self.crop_n_layers))
        grids = layer_grids(
            int(self.points_per_side),
            crop_n_layers=int(self.crop_n_layers),
            downscale_factor=int(self.crop_n_points_downscale_factor),
        )
        return GridSource(tuple(grids))


@dataclass
class _Kept:
    """Masks kept so far, in order. ``packed[i]`` is mask ``i`` bit-packed along rows in the frame
    of crop ``crops[i]``; boxes are inclusive ``XYXY`` in image pixels; points ``(x, y)`` float64
    in image pixels."""

    packed: list[np.ndarray] = field(default_factory=list)
    crops: list[int] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)
    iou: list[torch.Tensor] = field(default_factory=list)
    stability: list[torch.Tensor] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)

    def extend(self, other: _Kept) -> None:
        for name in ("packed", "crops", "boxes", "iou", "stability", "points"):
            getattr(self, name).extend(getattr(other, name))

    def take(self, order: torch.Tensor) -> _Kept:
        idx = order.tolist()
        return _Kept(*([getattr(self, n)[i] for i in idx] for n in _Kept.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.packed)


class MaskGenerator:
    """Segments everything in an image with a promptable backbone.

    Args:
        model: any backbone (SAM, MobileSAM, EfficientSAM, ...).
        source: where to prompt each crop (default: the point grids of the options).
        **options: :class:`GeneratorOptions` fields, keyword-only.
    """

    def __init__(self, model: Backbone, *, source: PromptSource | None = None, **options: object) -> None:
        unknown = sorted(set(options) - set(GeneratorOptions.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown mask generator option {unknown[0]!r}")
        self.model = model
        self.options = GeneratorOptions(**options)
        self.source = source if source is not None else self.options.prompt_source()

    @torch.no_grad()
    def generate(self, image: np.ndarray | str | os.PathLike) -> list[MaskRecord]:
        """Every mask found in ``image`` (path or ``uint8 [H, W, 3]`` RGB), best first within each
        crop (see the module docstring for the order across crops)."""
        img = as_image(image, "image")
        h, w = img.shape[:2]
        opts = self.options
        boxes, layers = crop_boxes(
            (h, w), crop_n_layers=int(opts.crop_n_layers), overlap_ratio=opts.crop_overlap_ratio
        )
        kept = _Kept()
        for index, (box, layer) in enumerate(zip(boxes, layers, strict=True)):
            kept.extend(self._crop_masks(img, box, layer, index))
        if len(boxes) > 1 and len(kept):
            # Prefer masks from smaller crops: they saw the object at a higher resolution.
            areas = torch.tensor([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes], dtype=torch.int64)
            scores = 1 / areas[torch.as_tensor(kept.crops, dtype=torch.int64)]
            kept = kept.take(greedy_nms(torch.stack(kept.boxes), scores, iou_threshold=opts.crop_nms_thresh))
        if opts.min_mask_region_area > 0 and len(kept):
            masks = [self._full_mask(kept, i, boxes, (h, w)) for i in range(len(kept))]
            kept, masks = self._clean_regions(kept, masks)
            return [self._record(kept, i, masks[i], boxes) for i in range(len(kept))]
        # One full-size mask at a time: with RLE output, only the encodings are kept.
        return [
            self._record(kept, i, self._full_mask(kept, i, boxes, (h, w)), boxes) for i in range(len(kept))
        ]

    # ------------------------------------------------------------------ crops
    def _crop_masks(self, image: np.ndarray, box: list[int], layer: int, index: int) -> _Kept:
        """The masks of one crop that pass the filters and the crop's box NMS."""
        x0, y0, x1, y1 = box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        self.model.set_image(crop)
        points = np.asarray(self.source(crop, layer), dtype=np.float64).reshape(-1, 2)
        kept = _Kept()
        step = int(self.options.points_per_batch)
        for start in range(0, len(points), step):
            kept.extend(self._batch_masks(points[start : start + step], box, index, image.shape[:2]))
        if not len(kept):
            return kept
        order = greedy_nms(
            torch.stack(kept.boxes), torch.stack(kept.iou), iou_threshold=self.options.box_nms_thresh
        )
        kept = kept.take(order)
        offset = torch.tensor([x0, y0, x0, y0], dtype=torch.int64)
        kept.boxes = [b + offset for b in kept.boxes]
        kept.points = [p + np.array([x0, y0]) for p in kept.points]
        return kept

    def _batch_masks(
        self, points: np.ndarray, box: list[int], index: int, image_size: tuple[int, int]
    ) -> _Kept:
        """Decodes one batch of single-point prompts and filters its masks (boxes in the crop's
        frame)."""
        opts = self.options
        model = self.model
        dev = model.device
        coords = torch.as_tensor(points, dtype=torch.float64, device=dev)[:, None, :]
        labels = torch.ones(len(points), 1, dtype=torch.int64, device=dev)
        out = model.decode(coords, labels, multimask_output=True)
        per_point = out.low_res_logits.shape[1]
        low = out.low_res_logits.flatten(0, 1)
        iou = out.iou_predictions.flatten(0, 1).float()
        candidates = torch.arange(low.shape[0], device=dev)
        if opts.pred_iou_thresh > 0.0:
            # Cheap and exact on the decoder output: only survivors are brought to full size.
            candidates = candidates[iou > opts.pred_iou_thresh]
        kept = _Kept()
        step = _UPSAMPLE_CHUNK * per_point
        for start in range(0, candidates.numel(), step):
            chunk = candidates[start : start + step]
            logits = self._full_size(low[chunk], per_point)
            stability = stability_scores(logits, threshold=MASK_THRESHOLD, offset=opts.stability_score_offset)
            keep = torch.ones_like(stability, dtype=torch.bool)
            if opts.stability_score_thresh > 0.0:
                keep = stability >= opts.stability_score_thresh
            masks = model.binarize(logits[keep])
            del logits
            chunk, stability = chunk[keep], stability[keep]
            boxes = mask_boxes_xyxy(masks).cpu()
            edge = near_crop_edge(boxes, box, image_size)
            if bool(edge.any()):
                masks, boxes, chunk, stability = masks[~edge], boxes[~edge], chunk[~edge], stability[~edge]
            packed = np.packbits(masks.cpu().numpy(), axis=-1)
            rows = (chunk // per_point).cpu().numpy()
            kept.packed.extend(packed)
            kept.crops.extend([index] * len(packed))
            kept.boxes.extend(boxes)
            kept.iou.extend(iou[chunk].cpu())
            kept.stability.extend(stability.cpu())
            kept.points.extend(points[rows])
        return kept

    def _full_size(self, low: torch.Tensor, group: int) -> torch.Tensor:
        """``[K, 256, 256]`` low-res logits -> ``[K, H, W]`` on the current image.

        The maps go through the backbone's post-processing in groups of ``group`` (the decoder's
        masks per prompt), the layout of a decoder output: interpolation kernels may round
        differently for another channel count, and these are the masks the decoder output gives.
        """
        k = low.shape[0]
        pad = (-k) % group
        if pad:
            low = torch.cat([low, low.new_zeros(pad, *low.shape[1:])])
        full = self.model.postprocess(low.reshape(-1, group, *low.shape[1:]))
        return full.reshape(-1, *full.shape[2:])[:k]

    # ----------------------------------------------------------------- output
    @staticmethod
    def _full_mask(kept: _Kept, i: int, boxes: list[list[int]], size: tuple[int, int]) -> np.ndarray:
        """Mask ``i`` as bool ``[H, W]`` on the whole image."""
        x0, y0, x1, y1 = boxes[kept.crops[i]]
        crop = np.unpackbits(kept.packed[i], axis=-1, count=x1 - x0).astype(bool)
        if (x0, y0, x1, y1) == (0, 0, size[1], size[0]):
            return crop
        full = np.zeros(size, dtype=bool)
        full[y0:y1, x0:x1] = crop
        return full

    def _clean_regions(self, kept: _Kept, masks: list[np.ndarray]) -> tuple[_Kept, list[np.ndarray]]:
        """Removes small holes and islands, then suppresses duplicates again, preferring masks
        that needed no change."""
        area = int(self.options.min_mask_region_area)
        cleaned, unchanged = [], []
        for m in masks:
            new, changed = remove_small_regions(m, area)
            cleaned.append(new)
            unchanged.append(0.0 if changed else 1.0)
        new_boxes = [mask_boxes_xyxy(torch.from_numpy(m)[None])[0] for m in cleaned]
        threshold = max(self.options.box_nms_thresh, self.options.crop_nms_thresh)
        order = greedy_nms(torch.stack(new_boxes), torch.tensor(unchanged), iou_threshold=threshold)
        kept.boxes = new_boxes
        idx = order.tolist()
        return kept.take(order), [cleaned[i] for i in idx]

    def _record(self, kept: _Kept, i: int, mask: np.ndarray, boxes: list[list[int]]) -> MaskRecord:
        mode = self.options.output_mode
        if mode == "binary_mask":
            segmentation = mask
        elif mode == "coco_rle":
            segmentation = coco_rle(mask)
        else:
            segmentation = uncompressed_rle(mask)
        x0, y0, x1, y1 = (int(v) for v in kept.boxes[i])
        cx0, cy0, cx1, cy1 = boxes[kept.crops[i]]
        return MaskRecord(
            segmentation=segmentation,
            area=int(np.count_nonzero(mask)),
            bbox=[x0, y0, x1 - x0, y1 - y0],
            predicted_iou=float(kept.iou[i]),
            point_coords=[[float(v) for v in kept.points[i]]],
            stability_score=float(kept.stability[i]),
            crop_box=[cx0, cy0, cx1 - cx0, cy1 - cy0],
        )


def generate_masks(
    model: Backbone,
    image: np.ndarray | str | os.PathLike,
    *,
    source: PromptSource | None = None,
    **options: object,
) -> list[MaskRecord]:
    """Segments everything in ``image``: :meth:`MaskGenerator.generate` with
    :class:`GeneratorOptions` ``options`` (keyword-only)."""
    return MaskGenerator(model, source=source, **options).generate(image)
