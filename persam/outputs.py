"""Writers for segmentation results: binary mask PNGs, overlays, COCO-style JSON and PerSeg masks.

Layout of an output folder written by :func:`persam.pipelines.image_set.segment_image_set`::

    OUT/masks/<name>.png          binary mask, 8-bit grayscale, 0 = background, 255 = object
    OUT/overlays/<name>.jpg       the image with the mask tinted, prompt points and box drawn
    OUT/coco.json                 COCO-style results (RLE masks, scores, boxes) for every image
    OUT/<concept>/<name>.png      PerSeg prediction format (3-channel, object = BGR (0, 0, 128))
    OUT/.persam-state.json        which concept and settings wrote each image's outputs (for resuming)

Every file is written atomically (temporary file + rename), so an interrupted run never leaves a
half-written output behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from persam.io import InputError, PathLike, save_image, save_png, write_json_atomic

MASK_DIR = "masks"
OVERLAY_DIR = "overlays"
COCO_FILE = "coco.json"

# The PerSeg reference code writes predictions with OpenCV as BGR (0, 0, 128): the red channel holds
# 128, which is (128, 0, 0) in RGB order.
PERSEG_COLOR_RGB = (128, 0, 0)

OVERLAY_TINT = (30, 144, 255)  # RGB
FOREGROUND_POINT = (0, 220, 0)
BACKGROUND_POINT = (230, 0, 0)
BOX_COLOR = (0, 220, 0)


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a mask of shape [H, W], got {m.shape}")
    return m.astype(bool) if m.dtype != bool else m


# ------------------------------------------------------------------------------------------ masks
def mask_to_png_array(mask: np.ndarray) -> np.ndarray:
    """``bool [H, W]`` -> ``uint8 [H, W]`` with 0 (background) and 255 (object)."""
    return _as_bool_mask(mask).astype(np.uint8) * 255


def save_mask(path: PathLike, mask: np.ndarray) -> None:
    """Writes a binary mask ``[H, W]`` as a lossless 8-bit grayscale PNG with values 0 / 255."""
    save_png(path, mask_to_png_array(mask))


def perseg_array(mask: np.ndarray) -> np.ndarray:
    """``bool [H, W]`` -> ``uint8 [H, W, 3]`` RGB, object pixels :data:`PERSEG_COLOR_RGB`, else 0."""
    m = _as_bool_mask(mask)
    out = np.zeros((*m.shape, 3), np.uint8)
    out[m] = PERSEG_COLOR_RGB
    return out


def save_perseg_mask(path: PathLike, mask: np.ndarray) -> None:
    """Writes a mask in the PerSeg prediction format (3-channel PNG, object BGR (0, 0, 128))."""
    save_png(path, perseg_array(mask))


# ---------------------------------------------------------------------------------------- overlay
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
    out = img.astype(np.float32)
    out[m] = out[m] * (1.0 - alpha) + np.asarray(tint, np.float32) * alpha
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
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


def save_overlay(path: PathLike, overlay: np.ndarray, quality: int = 90) -> None:
    """Writes a rendered overlay as JPEG or PNG (by suffix), atomically."""
    save_image(path, overlay, quality=quality)


# ------------------------------------------------------------------------------------------- COCO
def encode_rle(mask: np.ndarray) -> dict:
    """COCO run-length encoding of ``bool [H, W]``: ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    m = np.asfortranarray(_as_bool_mask(mask).astype(np.uint8))
    rle = mask_utils.encode(m)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """Inverse of :func:`encode_rle`: ``bool [H, W]``."""
    counts = rle["counts"]
    r = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(r).astype(bool)


def mask_bbox_xywh(mask: np.ndarray) -> list[float]:
    """Tight bounding box ``[x, y, w, h]`` of the object pixels (zeros for an empty mask)."""
    m = _as_bool_mask(mask)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


@dataclass
class CocoInstance:
    """One segmented instance to record: ``mask`` bool ``[H, W]`` and its confidence ``score``."""

    mask: np.ndarray
    score: float


class CocoResults:
    """A COCO-style results file, updated image by image and written atomically.

    The file is a dict with ``images`` (``id``, ``file_name``, ``height``, ``width``),
    ``categories`` (one per concept) and ``annotations`` (``id``, ``image_id``, ``category_id``,
    ``file_name``, ``segmentation`` as compressed RLE, ``score``, ``bbox`` XYWH, ``area``,
    ``iscrowd`` 0), so ``pycocotools.coco.COCO`` loads it directly. An existing file is read and
    extended: re-recording an image replaces its earlier entries; other images are kept.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.images: dict[str, dict] = {}
        self.annotations: dict[str, list[dict]] = {}
        self.categories: dict[str, int] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            cat_names = {c["id"]: c["name"] for c in data.get("categories", [])}
            by_id = {}
            for im in data["images"]:
                self.images[im["file_name"]] = im
                self.annotations[im["file_name"]] = []
                by_id[im["id"]] = im["file_name"]
            for ann in data.get("annotations", []):
                self.annotations[by_id[ann["image_id"]]].append(ann)
            self.categories = {name: cid for cid, name in cat_names.items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"{self.path}: not a readable COCO results file ({type(e).__name__}: {e})"
            ) from None

    def __contains__(self, file_name: str) -> bool:
        return file_name in self.images

    def _category_id(self, name: str) -> int:
        if name not in self.categories:
            self.categories[name] = max(self.categories.values(), default=0) + 1
        return self.categories[name]

    def add(
        self, file_name: str, height: int, width: int, instances: Sequence[CocoInstance], concept: str
    ) -> None:
        """Records one image and its instances (an empty list records an image with no detection)."""
        old = self.images.get(file_name)
        image_id = old["id"] if old else max((im["id"] for im in self.images.values()), default=0) + 1
        self.images[file_name] = {
            "id": image_id,
            "file_name": file_name,
            "height": int(height),
            "width": int(width),
        }
        cid = self._category_id(concept)
        self.annotations[file_name] = [
            {
                "image_id": image_id,
                "category_id": cid,
                "file_name": file_name,
                "segmentation": encode_rle(inst.mask),
                "score": float(inst.score),
                "bbox": mask_bbox_xywh(inst.mask),
                "area": int(np.count_nonzero(inst.mask)),
                "iscrowd": 0,
            }
            for inst in instances
            if np.any(inst.mask)
        ]

    def to_dict(self) -> dict:
        images = sorted(self.images.values(), key=lambda im: im["id"])
        annotations = []
        for im in images:
            for ann in self.annotations.get(im["file_name"], []):
                annotations.append(
                    {"id": len(annotations) + 1, **{k: v for k, v in ann.items() if k != "id"}}
                )
        categories = [
            {"id": cid, "name": name} for name, cid in sorted(self.categories.items(), key=lambda kv: kv[1])
        ]
        return {"images": images, "categories": categories, "annotations": annotations}

    def save(self) -> None:
        write_json_atomic(self.path, self.to_dict())
