"""What the page and the API send, as arrays: clicks JSON, brushed editor layers, uploaded files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from apps.demo.models import one_line
from apps.demo.settings import DemoError
from persam.io import InputError, as_image, load_label_map
from persam.readers import DAVIS_PALETTE


def parse_clicks(text: str | None, with_object: bool = False) -> list[tuple]:
    """Clicks from JSON: ``[[x, y, label], ...]`` (``with_object``: ``[[x, y, label, object_id], ...]``).

    Raises:
        DemoError: not JSON, or an entry that is not numbers of the right count / a label not 0 or 1.
    """
    if text is None or not str(text).strip():
        return []
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DemoError(f"Clicks are not valid JSON ({e.msg}).") from None
    n = 4 if with_object else 3
    form = "[x, y, label, object]" if with_object else "[x, y, label]"
    if not isinstance(items, list):
        raise DemoError(f"Clicks must be a list of {form} entries.")
    out = []
    for item in items:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != n
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
        ):
            raise DemoError(f"Each click must be {form} with numbers, got {item!r}.")
        if int(item[2]) not in (0, 1):
            raise DemoError(f"A click label is 1 (positive) or 0 (negative), got {item[2]!r}.")
        click = (float(item[0]), float(item[1]), int(item[2]))
        if with_object:
            if not 1 <= int(item[3]) <= 255:
                raise DemoError(f"Object ids are 1..255, got {item[3]!r}.")
            click = (*click, int(item[3]))
        out.append(click)
    return out


def brush_mask(editor_value: dict | None) -> np.ndarray | None:
    """The painted region ``bool [H, W]`` of a ``gr.ImageEditor`` value (any layer pixel with alpha > 0)."""
    labels = brush_labels(editor_value, [(255, 255, 255)])
    return None if labels is None else labels > 0


def brush_labels(editor_value: dict | None, colours: Sequence[Sequence[int]]) -> np.ndarray | None:
    """Painted pixels of a ``gr.ImageEditor`` value as a label map ``uint8 [H, W]``.

    A painted pixel (alpha > 0 in any layer) gets ``1 + `` the index of the nearest of ``colours``
    (RGB); later layers are on top. Returns None when nothing is painted.
    """
    if not editor_value:
        return None
    palette = np.asarray(colours, np.float32).reshape(-1, 3)
    labels = None
    for layer in editor_value.get("layers") or []:
        if layer is None:
            continue
        a = np.asarray(layer)
        if a.ndim != 3 or a.shape[2] != 4:
            continue
        painted = a[..., 3] > 0
        if labels is None:
            labels = np.zeros(a.shape[:2], np.uint8)
        if painted.any():
            rgb = a[painted][:, :3].astype(np.float32)
            nearest = np.argmin(((rgb[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
            labels[painted] = (nearest + 1).astype(np.uint8)
    if labels is None or not labels.any():
        return None
    return labels


def editor_background(editor_value: dict | None) -> np.ndarray | None:
    """The photo under a ``gr.ImageEditor`` value, ``uint8 [H, W, 3]``, or None."""
    if not editor_value:
        return None
    bg = editor_value.get("background")
    if bg is None:
        return None
    a = np.asarray(bg)
    if a.ndim == 3 and a.shape[2] == 4:  # transparent pixels over white, as the editor shows them
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.round(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return as_image(a, "reference photo")


def load_mask_file(path: str, size: tuple[int, int], what: str) -> np.ndarray:
    """A label map ``uint8 [H, W]`` from a mask image (binary, palette or colour PNG) of size ``(H, W)``."""
    try:
        labels = load_label_map(path)
    except InputError as e:
        raise DemoError(f"Cannot read the {what}: {one_line(e, path)}") from None
    if labels.shape != tuple(size):
        raise DemoError(
            f"The {what} is {labels.shape[1]}x{labels.shape[0]} but the image is {size[1]}x{size[0]}."
        )
    if labels.max(initial=0) > 255:
        raise DemoError(f"The {what} has more than 255 objects.")
    if not labels.any():
        raise DemoError(f"The {what} is empty: it marks no object.")
    return labels.astype(np.uint8)


def file_path(value: Any) -> str | None:
    """The local path of a Gradio file value (str, FileData-like object or dict)."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    return str(getattr(value, "path", None) or getattr(value, "name", None) or value)


def hex_colour(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def davis_colour(object_id: int) -> tuple[int, int, int]:
    r, g, b = DAVIS_PALETTE[3 * object_id : 3 * object_id + 3]
    return int(r), int(g), int(b)
