"""persam results as Label Studio pre-annotations: brush masks in Label Studio's own RLE.

>>> from persam.integrations import labelstudio                                       # doctest: +SKIP
>>> tasks = [labelstudio.to_task(f"/data/local-files/?d=photos/{name}", concept.segment(path),
...                              label="my dog") for name, path in photos]
>>> labelstudio.write_tasks("tasks.json", tasks)       # import in Label Studio: Import > tasks.json
>>> print(labelstudio.labeling_config(["my dog"]))     # the project's labeling interface

Each mask becomes one ``brushlabels`` region of a prediction (``model_version``, ``score``,
``result``) in Label Studio's brush RLE (:mod:`persam.integrations.labelstudio_rle`, plain NumPy:
no Label Studio package is needed to write or read these files); the labeling
config must have a ``<BrushLabels name=FROM_NAME toName=TO_NAME>`` with the label, over an
``<Image name=TO_NAME value="$image">`` (:func:`labeling_config` writes one).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from persam.errors import InputError
from persam.integrations.common import as_masks
from persam.integrations.labelstudio_rle import decode_brush_rle, encode_brush_rle
from persam.io import atomic_path
from persam.results import Masks, decode_rle

__all__ = [
    "from_prediction",
    "labeling_config",
    "tasks_from_coco",
    "to_prediction",
    "to_task",
    "write_tasks",
]

#: Region ids carry the object id, so that reading a prediction back keeps it.
_REGION_ID = re.compile(r"^persam-(\d+)$")


def _labels(label: str | Sequence[str], n: int) -> list[str]:
    if isinstance(label, str):
        return [label] * n
    names = [str(v) for v in label]
    if len(names) != n:
        raise InputError(f"label: expected one name or {n} (one per mask), got {len(names)}")
    return names


def to_prediction(
    masks: Any,
    *,
    label: str | Sequence[str] = "object",
    from_name: str = "tag",
    to_name: str = "image",
    model_version: str = "persam",
    found_only: bool = True,
) -> dict[str, Any]:
    """One Label Studio prediction (pre-annotation) of ``masks``.

    Args:
        masks: :class:`~persam.results.Masks`, or a result with ``.masks``.
        label: the brush label of every mask, or one per mask.
        from_name, to_name: the ``BrushLabels`` and ``Image`` tag names of the labeling config.
        model_version: shown in Label Studio beside the prediction.
        found_only: only the masks flagged ``found`` (detections) become regions.
    """
    m = as_masks(masks)
    names = _labels(label, len(m))
    if found_only:
        names = [n for n, f in zip(names, m.found, strict=True) if f]
        m = m[m.found]
    h, w = m.image_size
    result = []
    for k in range(len(m)):
        region: dict[str, Any] = {
            "id": f"persam-{int(m.object_ids[k])}",
            "type": "brushlabels",
            "from_name": from_name,
            "to_name": to_name,
            "original_width": w,
            "original_height": h,
            "image_rotation": 0,
            # Label Studio paints the alpha channel: 255 where the object is.
            "value": {
                "format": "rle",
                "rle": encode_brush_rle(m.masks[k]),
                "brushlabels": [names[k]],
            },
        }
        if math.isfinite(m.scores[k]):
            region["score"] = float(m.scores[k])
        result.append(region)
    prediction: dict[str, Any] = {"model_version": model_version, "result": result}
    scores = [r["score"] for r in result if "score" in r]
    if scores:
        # The task's score, which Label Studio sorts and filters by: the mean region score.
        prediction["score"] = float(np.mean(scores))
    return prediction


def to_task(image: str, masks: Any, *, data_key: str = "image", **prediction: Any) -> dict[str, Any]:
    """A Label Studio task: ``{"data": {data_key: image}, "predictions": [...]}``.

    Args:
        image: the image as Label Studio reaches it (a URL, ``/data/local-files/?d=...``, ``s3://...``).
        masks: :class:`~persam.results.Masks`, or a result with ``.masks``.
        data_key: the ``$variable`` of the config's ``<Image value="$image">``.
        prediction: options of :func:`to_prediction`.
    """
    return {"data": {data_key: image}, "predictions": [to_prediction(masks, **prediction)]}


def tasks_from_coco(
    coco: Mapping[str, Any], *, image_root: str = "", **prediction: Any
) -> list[dict[str, Any]]:
    """Label Studio tasks of a COCO results file (``images``, ``categories``, ``annotations`` with
    RLE masks, as :class:`~persam.outputs.coco.CocoResults` writes): one task per image, its
    annotations as brush regions labelled with their category's name.

    Args:
        coco: the parsed COCO dict.
        image_root: put before each ``file_name`` to make the task's image URL (for instance
            ``/data/local-files/?d=photos/``); the bare file names otherwise.
        prediction: options of :func:`to_prediction` (``from_name``, ``model_version``, ...).
    """
    try:
        names = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
        by_image: dict[int, list[Mapping[str, Any]]] = {}
        for ann in coco.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        tasks = []
        for im in coco["images"]:
            size = (int(im["height"]), int(im["width"]))
            anns = by_image.get(im["id"], [])
            if anns:
                masks = Masks(
                    masks=np.stack([decode_rle(a["segmentation"]) for a in anns]).reshape(-1, *size),
                    scores=[float(a.get("score", math.nan)) for a in anns],
                )
            else:
                masks = Masks.empty(size)
            labels = [names.get(a.get("category_id"), "object") for a in anns]
            tasks.append(to_task(image_root + str(im["file_name"]), masks, label=labels, **prediction))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"not a COCO results dict ({type(e).__name__}: {e})") from None
    return tasks


def write_tasks(path: str | os.PathLike, tasks: Iterable[Mapping[str, Any]]) -> None:
    """Writes ``tasks`` as the JSON list Label Studio imports (replaced atomically)."""
    text = json.dumps(list(tasks))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def from_prediction(
    prediction: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, from_name: str | None = None
) -> Masks:
    """The brush masks of a Label Studio prediction or annotation (or of its ``result`` list) as
    :class:`~persam.results.Masks`.

    Scores are the regions' ``score`` (NaN without); object ids come from the region ids written by
    :func:`to_prediction` (else ``1..N``). ``from_name`` keeps only that control's regions.
    """
    results = prediction.get("result", []) if isinstance(prediction, Mapping) else prediction
    regions = [
        r
        for r in results
        if r.get("type", "").lower() == "brushlabels"
        and r.get("value", {}).get("format", "rle") == "rle"
        and (from_name is None or r.get("from_name") == from_name)
    ]
    if not regions:
        if not results:
            raise InputError("this prediction has no regions, so no image size")
        first = results[0]
        return Masks.empty((int(first["original_height"]), int(first["original_width"])))
    sizes = {(int(r["original_height"]), int(r["original_width"])) for r in regions}
    if len(sizes) != 1:
        raise InputError(f"brush regions of different image sizes: {sorted(sizes)}")
    h, w = sizes.pop()
    masks = np.stack([_alpha(r["value"]["rle"], h, w) for r in regions])
    ids = [_REGION_ID.match(str(r.get("id", ""))) for r in regions]
    return Masks(
        masks=masks,
        scores=[float(r.get("score", math.nan)) for r in regions],
        object_ids=[int(i.group(1)) for i in ids] if all(ids) else None,
    )


def _alpha(rle: Sequence[int], h: int, w: int) -> np.ndarray:
    """The alpha channel of a region's brush RLE as ``bool [h, w]``."""
    values = decode_brush_rle(rle)
    if values.size != h * w * 4:
        raise InputError(f"brush RLE of {values.size} values for a {w}x{h} RGBA image ({h * w * 4})")
    return values.reshape(h, w, 4)[:, :, 3] > 0


def labeling_config(
    labels: Sequence[str] = ("object",),
    *,
    from_name: str = "tag",
    to_name: str = "image",
    data_key: str = "image",
) -> str:
    """A Label Studio labeling config for these predictions: an image (``$data_key``) and brush
    labels."""
    items = "\n".join(f"    <Label value={quoteattr(v)}/>" for v in labels)
    return (
        "<View>\n"
        f'  <Image name={quoteattr(to_name)} value="${data_key}" zoom="true"/>\n'
        f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>\n"
        f"{items}\n"
        "  </BrushLabels>\n"
        "</View>\n"
    )
