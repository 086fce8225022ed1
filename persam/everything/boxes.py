"""Object-aware box prompts (MobileSAMv2): one box, one mask.

Instead of a grid of points, an object detector proposes boxes and each box prompts the decoder
once, in batches, on an image encoded once. Box handling follows MobileSAMv2: the detector's boxes
are snapped to the image border when they come within 20 pixels of it (in the detector's
1024-pixel frame), scaled into the backbone's input frame in float64 (as ``apply_boxes`` does),
decoded in batches of 320 with ``multimask_output=False`` and cut at logit 0. There is no quality
filtering and no duplicate suppression: the detector's NMS already did that.

Any detector works: a :class:`BoxDetector` is a callable ``image -> (boxes, scores)``.
:class:`BoxFile` reads the boxes of each image from a JSON file (exported from any detector).
MobileSAMv2's own YOLOv8 detector needs the ``ultralytics`` package, which is not a dependency; it
runs it at ``imgsz=1024``, ``conf=0.4``, NMS ``iou=0.9``, ``max_det=300``, settings to reuse when
exporting its boxes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from persam.backbones.base import Backbone, image_fingerprint
from persam.errors import InputError
from persam.everything.postprocess import coco_rle, mask_boxes_xyxy, stability_scores, uncompressed_rle
from persam.everything.records import MaskRecord, check_output_mode
from persam.io import as_image, load_image

#: Boxes decoded at once (MobileSAMv2's batch).
BOX_BATCH = 320
#: A box side within this many pixels of the image border (in a 1024-pixel frame) is moved onto it.
BORDER_MARGIN = 20.0
#: The frame :data:`BORDER_MARGIN` is measured in: the detector's input size in MobileSAMv2.
DETECTOR_SIZE = 1024
#: Boxes brought to full resolution at once: bounds the memory of the float logits.
_UPSAMPLE_CHUNK = 8


class BoxDetector(Protocol):
    """Object proposals for one image: ``uint8 [H, W, 3]`` RGB -> ``(boxes, scores)``, float
    ``[N, 4]`` ``XYXY`` in image pixels and ``[N]`` confidences."""

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_boxes(boxes: Any, scores: Any, what: str = "detector") -> tuple[np.ndarray, np.ndarray]:
    """``boxes`` as float64 ``[N, 4]`` and ``scores`` as float64 ``[N]``, checked."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    s = np.ones(len(b)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"{what}: boxes must be [N, 4] (x0, y0, x1, y1), got shape {list(b.shape)}")
    if len(s) != len(b):
        raise InputError(f"{what}: {len(b)} boxes but {len(s)} scores")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise InputError(f"{what}: boxes and scores must be finite numbers")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise InputError(f"{what}: a box has x1 < x0 or y1 < y0")
    return b, s


def snap_to_border(boxes: np.ndarray, size: tuple[int, int], margin: float) -> np.ndarray:
    """Box sides within ``margin`` pixels of the image border moved onto it (MobileSAMv2's
    ``adjust_bboxes_to_image_border``): float64 ``[N, 4]``, a new array."""
    h, w = size
    out = np.array(boxes, dtype=np.float64)
    out[:, 0] = np.where(out[:, 0] < margin, 0.0, out[:, 0])
    out[:, 1] = np.where(out[:, 1] < margin, 0.0, out[:, 1])
    out[:, 2] = np.where(out[:, 2] > w - margin, float(w), out[:, 2])
    out[:, 3] = np.where(out[:, 3] > h - margin, float(h), out[:, 3])
    return out


class BoxMaskGenerator:
    """Segments the objects a detector proposes: one mask per box, best box first.

    Args:
        model: any backbone.
        detector: a :class:`BoxDetector`.
        batch_size: boxes decoded at once.
        border_margin: :func:`snap_to_border` margin in a :data:`DETECTOR_SIZE` frame (scaled to
            the image's long side); 0 turns it off.
        max_boxes: keep the best this many boxes (None: all).
        output_mode: as :class:`~persam.everything.amg.GeneratorOptions`.
    """

    def __init__(
        self,
        model: Backbone,
        detector: BoxDetector,
        *,
        batch_size: int = BOX_BATCH,
        border_margin: float = BORDER_MARGIN,
        max_boxes: int | None = None,
        output_mode: str = "binary_mask",
    ) -> None:
        if int(batch_size) < 1:
            raise InputError(f"box batch size must be >= 1, got {batch_size}")
        if not (math.isfinite(border_margin) and border_margin >= 0):
            raise InputError(f"border margin must be >= 0, got {border_margin}")
        if max_boxes is not None and int(max_boxes) < 1:
            raise InputError(f"max_boxes must be >= 1, got {max_boxes}")
        self.model = model
        self.detector = detector
        self.batch_size = int(batch_size)
        self.border_margin = float(border_margin)
        self.max_boxes = max_boxes
        self.output_mode = check_output_mode(output_mode)

    def boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detector's boxes of ``image``, snapped to the border and sorted by decreasing score
        (``[N, 4]`` float64 image pixels, ``[N]`` scores)."""
        boxes, scores = check_boxes(*self.detector(image))
        h, w = image.shape[:2]
        if self.border_margin > 0 and len(boxes):
            boxes = snap_to_border(boxes, (h, w), self.border_margin * max(h, w) / DETECTOR_SIZE)
        order = np.argsort(-scores, kind="stable")[: self.max_boxes]
        return boxes[order], scores[order]

    @torch.no_grad()
    def generate(self, image: np.ndarray | str | os.PathLike) -> list[MaskRecord]:
        """One record per detected box (path or ``uint8 [H, W, 3]`` RGB image); the image is
        encoded once, whatever the number of boxes."""
        img = as_image(image, "image")
        boxes, scores = self.boxes(img)
        model = self.model
        model.set_image(img)
        records: list[MaskRecord] = []
        for start in range(0, len(boxes), self.batch_size):
            batch = boxes[start : start + self.batch_size]
            # float64 into the prompt encoder, as MobileSAMv2 hands it its transformed boxes.
            prompts = torch.as_tensor(batch, dtype=torch.float64, device=model.device)
            out = model.decode(None, None, boxes=prompts, multimask_output=False)
            iou = out.iou_predictions[:, 0].float().cpu()
            for c in range(0, len(batch), _UPSAMPLE_CHUNK):
                logits = model.postprocess(out.low_res_logits[c : c + _UPSAMPLE_CHUNK])[:, 0]
                stability = stability_scores(logits, threshold=0.0, offset=1.0).cpu()
                masks = model.binarize(logits)
                del logits
                mask_boxes = mask_boxes_xyxy(masks).cpu()
                for k, mask in enumerate(masks.cpu().numpy()):
                    i = start + c + k
                    records.append(
                        self._record(mask, mask_boxes[k], float(iou[c + k]), float(stability[k]), boxes[i])
                    )
        return records

    def _record(
        self, mask: np.ndarray, box: torch.Tensor, iou: float, stability: float, prompt: np.ndarray
    ) -> MaskRecord:
        if self.output_mode == "binary_mask":
            segmentation: np.ndarray | dict = mask
        elif self.output_mode == "coco_rle":
            segmentation = coco_rle(mask)
        else:
            segmentation = uncompressed_rle(mask)
        x0, y0, x1, y1 = (int(v) for v in box)
        h, w = mask.shape
        return MaskRecord(
            segmentation=segmentation,
            area=int(np.count_nonzero(mask)),
            bbox=[x0, y0, x1 - x0, y1 - y0],
            predicted_iou=iou,
            point_coords=[],
            stability_score=0.0 if math.isnan(stability) else stability,
            crop_box=[0, 0, w, h],
            box_prompt=[float(v) for v in prompt],
        )


class BoxFile:
    """A :class:`BoxDetector` reading each image's boxes from a JSON file.

    The file maps image names to boxes: ``{"photo.jpg": [[x0, y0, x1, y1], [x0, y0, x1, y1,
    score], ...], ...}`` (pixels; without a score, the file's order ranks the boxes). A name
    matches an image given by the path as written, by the path relative to the JSON file's folder,
    or, when unique among the images, by its file name. The detector is called with pixels, not
    names: it recognises an image by its content, reading each listed image once (lazily).

    Args:
        path: the JSON file.
        images: the image files the boxes are for.
    """

    def __init__(self, path: str | os.PathLike, images: Sequence[str | os.PathLike]) -> None:
        self.path = Path(path)
        self.entries = read_box_file(self.path)
        self._pending = [Path(p) for p in images]
        self._known: dict[str, tuple[Path, tuple[np.ndarray, np.ndarray] | None]] = {}
        names = [p.name for p in self._pending]
        self._match = {p: self._entry_for(p, names.count(p.name) == 1) for p in self._pending}

    def _entry_for(self, image: Path, unique_name: bool) -> tuple[np.ndarray, np.ndarray] | None:
        keys = [str(image), image.as_posix()]
        try:
            keys.append(Path(os.path.relpath(image, self.path.parent)).as_posix())
        except ValueError:  # another drive
            pass
        if unique_name:
            keys.append(image.name)
        return next((self.entries[k] for k in keys if k in self.entries), None)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = image_fingerprint(np.asarray(image))
        while key not in self._known and self._pending:
            path = self._pending.pop(0)
            self._known[image_fingerprint(load_image(path))] = (path, self._match[path])
        if key not in self._known:
            raise InputError(f"{self.path}: holds no boxes for this image (not one of the images listed)")
        path, entry = self._known[key]
        if entry is None:
            raise InputError(f"{self.path}: holds no boxes for {path} (keys are image names)")
        return entry


def read_box_file(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The boxes of a :class:`BoxFile`: image name -> (float64 ``[N, 4]``, scores ``[N]``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: box file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON box file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object mapping image names to lists of boxes")
    out = {}
    for name, rows in data.items():
        what = f"{path}: {name!r}"
        if not isinstance(rows, list) or any(
            not isinstance(r, list) or len(r) not in (4, 5) or not all(_is_number(v) for v in r) for r in rows
        ):
            raise InputError(f"{what}: expected a list of [x0, y0, x1, y1] or [x0, y0, x1, y1, score]")
        scores = [float(r[4]) if len(r) == 5 else float(len(rows) - i) for i, r in enumerate(rows)]
        out[str(name)] = check_boxes([r[:4] for r in rows], scores, what)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def generate_box_masks(
    model: Backbone, image: np.ndarray | str | os.PathLike, detector: BoxDetector, **options: Any
) -> list[MaskRecord]:
    """One mask per box ``detector`` proposes in ``image``: :meth:`BoxMaskGenerator.generate` with
    its keyword ``options``."""
    return BoxMaskGenerator(model, detector, **options).generate(image)
