"""Writing the masks generated for a set of images.

Layout of an output folder::

    OUT/masks/<name>/<k>.png     mask k of the image (0 = background, 255 = mask), best first
    OUT/overlays/<name>.jpg      the image with every mask tinted in its own colour
    OUT/records/<name>.json      the records of the image's masks (COCO RLE segmentations)
    OUT/coco.json                COCO-style results of every image (RLE, score, bbox, area)

Every file is written atomically; a mask folder is replaced as a whole, so no stale mask of an
earlier run survives beside the new ones.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from persam import outputs
from persam.errors import InputError
from persam.everything.overlay import render_masks
from persam.io import ensure_output_dir, load_image, write_json_atomic
from persam.pipelines.image_set import output_names, relative_names
from persam.results import Masks

RECORDS_DIR = "records"
#: COCO category of the generated masks.
CATEGORY = "mask"

#: ``image -> (masks bool [H, W] each, scores, JSON-ready records)``.
Segmenter = Callable[[np.ndarray], tuple[list[np.ndarray], list[float], list[dict[str, Any]]]]


class EverythingWriter:
    """Runs a segmenter over images and writes its masks (see the module docstring).

    Args:
        out_dir: output folder (created on the first write).
        images: the image files; their output names keep the folders that tell them apart.
    """

    def __init__(self, out_dir: Path, images: Sequence[Path]) -> None:
        self.out_dir = Path(out_dir)
        self.images = list(images)
        self.names = output_names(self.images)
        self.file_names = relative_names(self.images)
        self.done: list[Path] = []
        self.failed: list[tuple[Path, str]] = []
        self.masks_written = 0

    def run(self, segment: Segmenter, *, progress: bool = True, log: Callable[[str], None] = print) -> str:
        """Segments and writes every image; returns a one-line summary."""
        ensure_output_dir(self.out_dir)
        coco = outputs.CocoResults(self.out_dir / outputs.COCO_FILE)
        bar = tqdm(self.images, unit="image", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        try:
            for path, name, file_name in zip(bar, self.names, self.file_names, strict=True):
                try:
                    image = load_image(path)
                    masks, scores, records = segment(image)
                    self._write(name, image, masks, records)
                except (InputError, OSError) as e:
                    message = str(e) if isinstance(e, InputError) else f"{path}: {type(e).__name__}: {e}"
                    self.failed.append((path, message))
                    log(f"failed: {message}")
                    continue
                h, w = image.shape[:2]
                stack = np.stack(masks) if len(masks) else np.zeros((0, h, w), bool)
                coco.add(file_name, Masks(masks=stack, scores=np.asarray(scores, np.float64)), CATEGORY)
                self.done.append(path)
                self.masks_written += len(masks)
        finally:
            bar.close()
            coco.save()
        return f"{len(self.done)} image(s), {self.masks_written} mask(s), {len(self.failed)} failed"

    def _write(self, name: str, image: np.ndarray, masks: list[np.ndarray], records: list[dict]) -> None:
        mask_dir = self.out_dir / outputs.MASK_DIR / name
        staging = mask_dir.with_name(mask_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        width = max(3, len(str(len(masks) - 1)))
        for k, m in enumerate(masks):
            outputs.save_mask(staging / f"{k:0{width}d}.png", m)
        shutil.rmtree(mask_dir, ignore_errors=True)
        staging.rename(mask_dir)
        overlay = render_masks(image, masks)
        outputs.save_overlay(self.out_dir / outputs.OVERLAY_DIR / f"{name}.jpg", overlay)
        records_path = self.out_dir / RECORDS_DIR / f"{name}.json"
        records_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(records_path, {"image": name, "masks": records})
