"""The COCO-style results file of an image set (``OUT/coco.json``), merged rather than replaced when
several runs write into one folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from persam.io import InputError, PathLike, write_json_atomic
from persam.results import Masks, mask_bbox_xywh


def coco_entry(masks: Masks) -> dict:
    """The COCO record of one image without ids: its size and its found, non-empty masks (RLE,
    score, XYWH box, area). Small and JSON-serialisable, so it can be sent from where the masks
    were computed to where the results file is written."""
    height, width = masks.image_size
    kept = masks[masks.found & (masks.areas > 0)]
    annotations = [
        {
            "segmentation": rle,
            "score": float(score),
            "bbox": mask_bbox_xywh(mask),
            "area": int(area),
            "iscrowd": 0,
        }
        for mask, rle, score, area in zip(
            kept.masks, kept.to_coco_rle(), kept.scores, kept.areas, strict=True
        )
    ]
    return {"height": int(height), "width": int(width), "annotations": annotations}


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

    def add(self, file_name: str, masks: Masks, concept: str) -> None:
        """Records one image and its found, non-empty masks (none: an image with no detection)."""
        self.add_entry(file_name, coco_entry(masks), concept)

    def add_entry(self, file_name: str, entry: dict, concept: str) -> None:
        """Records one image from its :func:`coco_entry` (computed where the masks are)."""
        old = self.images.get(file_name)
        image_id = old["id"] if old else max((im["id"] for im in self.images.values()), default=0) + 1
        self.images[file_name] = {
            "id": image_id,
            "file_name": file_name,
            "height": int(entry["height"]),
            "width": int(entry["width"]),
        }
        cid = self._category_id(concept)
        self.annotations[file_name] = [
            {"image_id": image_id, "category_id": cid, "file_name": file_name, **ann}
            for ann in entry["annotations"]
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

    def merge_save(self, file_names: Sequence[str]) -> None:
        """Re-reads the file, puts this object's entries of ``file_names`` into it and writes it.

        Another run may have added images since this one read the file; they are kept (and this
        object learns them). The caller holds the folder's lock.
        """
        disk = CocoResults(self.path)
        names = {cid: name for name, cid in self.categories.items()}
        for fn in file_names:
            if fn not in self.images:
                continue
            im = self.images[fn]
            old = disk.images.get(fn)
            image_id = old["id"] if old else max((i["id"] for i in disk.images.values()), default=0) + 1
            disk.images[fn] = {**im, "id": image_id}
            disk.annotations[fn] = [
                {**a, "image_id": image_id, "category_id": disk._category_id(names[a["category_id"]])}
                for a in self.annotations.get(fn, [])
            ]
        disk.save()
        self.images, self.annotations, self.categories = disk.images, disk.annotations, disk.categories
