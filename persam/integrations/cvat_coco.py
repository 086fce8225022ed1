"""persam's COCO results as a file CVAT imports: its "COCO 1.0" format, zipped.

>>> from persam.integrations.cvat_coco import write_coco_zip                          # doctest: +SKIP
>>> write_coco_zip("out/coco.json", "for_cvat.zip")   # CVAT: task > Upload annotations > COCO 1.0

The zip holds ``annotations/instances_default.json``, the layout CVAT exports and imports; each mask
keeps its COCO RLE with ``iscrowd`` 1, which is how CVAT's COCO format marks an instance whose
``segmentation`` is an RLE mask (so it becomes a mask in CVAT, not a polygon). The task's images must
carry the same file names. No CVAT package is needed to write it.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from persam.errors import InputError
from persam.io import atomic_path

__all__ = ["ANNOTATIONS_NAME", "write_coco_zip"]

#: Where CVAT looks for the annotations in a COCO 1.0 zip (the "default" subset).
ANNOTATIONS_NAME = "annotations/instances_default.json"


def _load(coco: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    if isinstance(coco, Mapping):
        return dict(coco)
    path = Path(coco)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable COCO file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or "images" not in data:
        raise InputError(f"{path}: not a COCO file (no 'images')")
    return data


def write_coco_zip(coco: Mapping[str, Any] | str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Writes ``coco`` (a COCO results dict or file) as a CVAT "COCO 1.0" zip at ``dest``
    (replaced atomically); returns ``dest``."""
    data = _load(coco)
    annotations = []
    for ann in data.get("annotations", []):
        ann = dict(ann)
        if isinstance(ann.get("segmentation"), Mapping):
            ann["iscrowd"] = 1
        annotations.append(ann)
    categories = data.get("categories") or [{"id": 1, "name": "object"}]
    out = {
        "licenses": [],
        "info": {"description": "persam results"},
        "categories": [{"supercategory": "", **c} for c in categories],
        "images": data["images"],
        "annotations": annotations,
    }
    dst = Path(dest)
    with atomic_path(dst) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(ANNOTATIONS_NAME, json.dumps(out))
    return dst
