"""Image-set writers: binary mask PNGs, overlays, COCO-style JSON and PerSeg masks, each written
from a :class:`~persam.results.Masks`.

Layout of an output folder written by :class:`ImageSetWriter`
(:func:`persam.pipelines.image_set.segment_image_set`)::

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
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from persam.drawing import render_masks
from persam.io import InputError, PathLike, ensure_output_dir, save_image, save_png, write_json_atomic
from persam.locks import locked
from persam.outputs.coco import CocoResults, coco_entry
from persam.results import Masks

MASK_DIR = "masks"
OVERLAY_DIR = "overlays"
COCO_FILE = "coco.json"
SAVE_KINDS = ("mask", "overlay", "coco", "perseg")
DEFAULT_SAVE = ("mask", "overlay")
STATE_FILE = ".persam-state.json"
# Held while the shared files (COCO, state) are read, merged and rewritten: runs into one folder at
# the same time (other targets) then add to them instead of replacing each other's entries.
LOCK_FILE = ".persam-state.lock"

# The PerSeg reference code writes predictions with OpenCV as BGR (0, 0, 128): the red channel holds
# 128, which is (128, 0, 0) in RGB order.
PERSEG_COLOR_RGB = (128, 0, 0)

# The COCO and state files are rewritten at most this often (and at the end): rewriting them after
# every image would cost time quadratic in the number of images.
_FLUSH_SECONDS = 10.0


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


def save_overlay(path: PathLike, overlay: np.ndarray, quality: int = 90) -> None:
    """Writes a rendered overlay as JPEG or PNG (by suffix), atomically."""
    save_image(path, overlay, quality=quality)


# ------------------------------------------------------------------------------------- image sets
def parse_save(save: str | Sequence[str]) -> tuple[str, ...]:
    """``"mask,overlay"`` or ``["mask", "coco"]`` -> validated tuple of output kinds."""
    items = [s.strip() for s in save.split(",")] if isinstance(save, str) else [s.strip() for s in save]
    items = [s for s in items if s]
    bad = [s for s in items if s not in SAVE_KINDS]
    if bad or not items:
        raise InputError(f"--save: unknown output kind {bad[0]!r}" if bad else "--save: nothing to save")
    return tuple(dict.fromkeys(items))


def check_concept_name(concept_name: str, save: Sequence[str] = DEFAULT_SAVE) -> None:
    """Raises :class:`InputError` unless ``concept_name`` can name the PerSeg output sub-folder."""
    if not concept_name or "/" in concept_name or "\\" in concept_name or concept_name in (".", ".."):
        raise InputError(f"concept name {concept_name!r} cannot be used as a folder name")
    if "perseg" in save and concept_name in (MASK_DIR, OVERLAY_DIR):
        raise InputError(f"concept name {concept_name!r} clashes with the output folder of the same name")


def output_paths(
    out_dir: PathLike, name: str, save: Sequence[str], concept_name: str, overlay_format: str = "jpg"
) -> dict[str, Path]:
    """The file each chosen output kind of image ``name`` goes to (COCO: the shared file)."""
    out = Path(out_dir)
    paths = {
        "mask": out / MASK_DIR / f"{name}.png",
        "overlay": out / OVERLAY_DIR / f"{name}.{overlay_format}",
        "perseg": out / concept_name / f"{name}.png",
        "coco": out / COCO_FILE,
    }
    return {k: v for k, v in paths.items() if k in save}


def check_output_layout(out_dir: PathLike, save: Sequence[str], concept_name: str) -> None:
    """Raises :class:`InputError` when an output sub-folder of ``out_dir`` is blocked by a file (or
    ``coco.json`` by a folder): every image would fail, so nothing could be done."""
    out = Path(out_dir)
    subs = {"mask": MASK_DIR, "overlay": OVERLAY_DIR, "perseg": concept_name}
    for kind, sub in subs.items():
        if kind in save and (out / sub).exists() and not (out / sub).is_dir():
            raise InputError(f"{out / sub}: is a file, but the {kind} outputs go into a folder of that name")
    if "coco" in save and (out / COCO_FILE).is_dir():
        raise InputError(f"{out / COCO_FILE}: is a folder, but the COCO results go into a file of that name")


def check_outputs_not_inputs(
    out_dir: PathLike,
    names: Sequence[str],
    save: Sequence[str],
    concept_name: str,
    overlay_format: str,
    inputs: dict[str, Sequence[PathLike]],
) -> None:
    """Raises :class:`~persam.errors.OutputPathError` when an output file would be one of ``inputs``
    (option -> files), e.g. targets taken from ``OUT/masks``: the run would destroy its own input."""
    import os

    from persam.errors import OutputPathError

    def key(p: PathLike) -> str:
        return os.path.normcase(os.path.realpath(p))

    owners = {key(p): (option, p) for option, paths in inputs.items() for p in paths}
    for name in names:
        for out in output_paths(out_dir, name, save, concept_name, overlay_format).values():
            hit = owners.get(key(out))
            if hit is not None:
                raise OutputPathError(
                    f"{out}: output would overwrite the input {hit[0]} {hit[1]}; choose another output folder"
                )


class ImageSetWriter:
    """Writes the chosen outputs of one image and knows whether they exist already.

    Args:
        out_dir: output folder (created).
        save: output kinds, a subset of :data:`SAVE_KINDS`.
        concept_name: PerSeg sub-folder and COCO category name.
        overlay_format: ``"jpg"`` or ``"png"``.
        fingerprint: see :func:`concept_fingerprint`; when given, outputs only count as done if
            they were written under the same fingerprint (recorded in :data:`STATE_FILE`).
    """

    def __init__(
        self,
        out_dir: PathLike,
        save: Sequence[str] = DEFAULT_SAVE,
        concept_name: str = "object",
        overlay_format: str = "jpg",
        fingerprint: str | None = None,
    ) -> None:
        self.save = parse_save(save)
        if overlay_format not in ("jpg", "png"):
            raise InputError(f"overlay format must be 'jpg' or 'png', got {overlay_format!r}")
        check_concept_name(concept_name, self.save)
        check_output_layout(out_dir, self.save, concept_name)
        self.out_dir = ensure_output_dir(out_dir)  # after the checks: a refused run creates nothing
        self.concept_name = concept_name
        self.overlay_format = overlay_format
        self.coco = CocoResults(self.out_dir / COCO_FILE) if "coco" in self.save else None
        self.fingerprint = fingerprint
        self.state_path = self.out_dir / STATE_FILE
        self.state = self._read_state()
        # (output name, file name) written since the last flush, in writing order (the COCO ids follow it).
        self._changed: dict[tuple[str, str], None] = {}
        self._dirty = False
        self._saved_at = time.monotonic()

    def _read_state(self) -> dict[str, dict[str, str]]:
        """``{output name: {output kind: fingerprint}}`` from :data:`STATE_FILE` (empty if absent)."""
        try:
            images = json.loads(self.state_path.read_text(encoding="utf-8"))["images"]
            return {
                name: {k: v for k, v in kinds.items() if isinstance(v, str)}
                for name, kinds in images.items()
                if isinstance(kinds, dict)
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # missing or damaged: nothing counts as done, images are recomputed

    def file_paths(self, name: str) -> dict[str, Path]:
        """Output file of each chosen file kind (COCO entries live in one shared file)."""
        return output_paths(self.out_dir, name, self.save, self.concept_name, self.overlay_format)

    def outputs_exist(self, name: str, file_name: str) -> bool:
        """True when every chosen output of this image exists (whatever concept wrote it)."""
        if self.coco is not None and file_name not in self.coco:
            return False
        return all(p.is_file() for p in self.file_paths(name).values())

    def foreign_output(self, names: Sequence[str]) -> Path | None:
        """The first existing output file of ``names`` in a folder no run has written into (no
        state file: someone's own file at an output path), or None."""
        if self.state_path.exists():
            return None
        for name in names:
            for kind, path in self.file_paths(name).items():
                if kind != "coco" and path.exists():
                    return path
        return None

    def claim(self) -> None:
        """Marks the folder as written by persam (an empty state file), so that files a run killed
        before its first flush leaves behind count as ours next time."""
        if self.fingerprint is None or self.state_path.exists():
            return
        with locked(self.out_dir / LOCK_FILE):
            if not self.state_path.exists():
                write_json_atomic(self.state_path, {"version": 1, "images": {}})

    def unclaim(self) -> None:
        """Removes the state file again if no run has recorded an image in it (a run that wrote
        nothing leaves nothing)."""
        with locked(self.out_dir / LOCK_FILE):
            try:
                images = json.loads(self.state_path.read_text(encoding="utf-8"))["images"]
            except (OSError, ValueError, KeyError, TypeError):
                return
            if not images:
                self.state_path.unlink(missing_ok=True)

    def is_current(self, name: str) -> bool:
        """True when this image's outputs were written with this writer's fingerprint."""
        if self.fingerprint is None:
            return True
        kinds = self.state.get(name, {})
        return all(kinds.get(kind) == self.fingerprint for kind in self.save)

    def is_done(self, name: str, file_name: str) -> bool:
        """True when every chosen output of this image exists and comes from the same concept."""
        return self.outputs_exist(name, file_name) and self.is_current(name)

    def write(self, name: str, file_name: str, image: np.ndarray, masks: Masks) -> None:
        """Writes the outputs of one segmented image (``image`` uint8 ``[H, W, 3]``): the union of
        ``masks`` as mask / PerSeg PNG and overlay, the found ones as COCO entries."""
        self.write_files(name, image, masks)
        self.record(name, file_name, coco_entry(masks) if self.coco is not None else None)

    def write_files(self, name: str, image: np.ndarray, masks: Masks) -> list[Path]:
        """Writes the per-image files of :meth:`write` (not the COCO and state entries); returns them."""
        mask = masks.union()
        paths = self.file_paths(name)
        if "mask" in paths:
            save_mask(paths["mask"], mask)
        if "perseg" in paths:
            save_perseg_mask(paths["perseg"], mask)
        if "overlay" in paths:
            save_overlay(paths["overlay"], render_masks(image, masks))
        return list(paths.values())

    def record(self, name: str, file_name: str, entry: dict | None) -> None:
        """Records a written image in the COCO results (``entry``: its :func:`coco_entry`) and the
        state file; both are saved now and then and by :meth:`flush`."""
        if self.coco is not None and entry is not None:
            self.coco.add_entry(file_name, entry, self.concept_name)
        if self.fingerprint is not None:
            self.state.setdefault(name, {}).update(dict.fromkeys(self.save, self.fingerprint))
        self._changed[(name, file_name)] = None
        self._dirty = self.coco is not None or self.fingerprint is not None
        if self._dirty and time.monotonic() - self._saved_at > _FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Writes the COCO file and the state file if they changed.

        An image written after the last flush of an interrupted run is simply recomputed next time.
        """
        if not self._dirty:
            return
        with locked(self.out_dir / LOCK_FILE):
            if self.coco is not None:
                self.coco.merge_save([fn for _, fn in self._changed])
            if self.fingerprint is not None:
                state = self._read_state()
                state.update({name: self.state[name] for name, _ in self._changed if name in self.state})
                write_json_atomic(self.state_path, {"version": 1, "images": state})
                self.state = state
        self._changed.clear()
        self._dirty = False
        self._saved_at = time.monotonic()
