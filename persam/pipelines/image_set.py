"""Segmenting a learned concept over a set of images and writing the results.

The model runs one image-encoder pass per image (inside :meth:`Concept.segment`); each output is
written atomically; an image whose outputs all exist already is skipped unless ``overwrite`` is
set, so an interrupted run can simply be started again. Skipping needs the outputs to come from
the same concept and settings: ``OUT/.persam-state.json`` records, per image, a fingerprint of the
learned concept, the model weights, the concept name and ``max_instances``, so a run with another
reference, model or method recomputes the images instead of keeping stale results. A target that
cannot be read is reported and skipped; the others are still processed.

Output names: every image's outputs are stored under its path relative to the deepest folder
holding all targets, without suffix (``photos/01.jpg`` -> ``01``; targets from ``a/`` and ``b/``
-> ``a/01``, ``b/01``), so images from different folders never overwrite each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from persam import outputs
from persam.io import InputError, PathLike, ensure_output_dir, list_images, load_image, write_json_atomic

if TYPE_CHECKING:
    from persam.personalize import Concept

SAVE_KINDS = ("mask", "overlay", "coco", "perseg")
DEFAULT_SAVE = ("mask", "overlay")
STATE_FILE = ".persam-state.json"
_VOLATILE_OPTION = re.compile(r"seconds|time|duration|loss", re.IGNORECASE)

# The COCO and state files are rewritten at most this often (and at the end): rewriting them after
# every image would cost time quadratic in the number of images.
_FLUSH_SECONDS = 10.0


@dataclass
class ImageFailure:
    """A target that could not be segmented: its path and a one-line reason."""

    path: Path
    message: str


@dataclass
class ImageSetSummary:
    """What :func:`segment_image_set` did, image by image."""

    segmented: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[ImageFailure] = field(default_factory=list)
    not_found: list[Path] = field(default_factory=list)  # segmented, but the concept was not found
    # Outputs existed but came from another concept or settings, so these images were recomputed.
    stale: list[Path] = field(default_factory=list)

    def line(self) -> str:
        """``"N segmented (S replacing older results), K skipped (outputs exist), M failed; object
        not found in F"`` (the parts in brackets, skipped and not-found only when non-zero)."""
        parts = [f"{len(self.segmented)} segmented"]
        stale = sum(p in self.segmented for p in self.stale)
        if stale:
            parts[0] += f" ({stale} replacing results of another concept or settings)"
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (outputs exist)")
        parts.append(f"{len(self.failed)} failed")
        line = ", ".join(parts)
        return line + (f"; object not found in {len(self.not_found)}" if self.not_found else "")


def relative_names(paths: Sequence[PathLike]) -> list[str]:
    """Each path relative to the deepest folder holding all of them, ``/``-separated (with suffix)."""
    if not paths:
        return []
    resolved = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [p.relative_to(root).as_posix() for p in resolved]


def output_names(paths: Sequence[PathLike]) -> list[str]:
    """The name (``/``-separated, no suffix) under which each image's outputs are stored."""
    rel = relative_names(paths)
    stems = [r[: len(r) - len(Path(r).suffix)] for r in rel]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    # Same stem, different suffix in one folder (a.jpg, a.png): keep the suffix in the name.
    return [s if counts[s] == 1 else r.replace(".", "_") for s, r in zip(stems, rel, strict=True)]


def concept_fingerprint(concept: Any, concept_name: str = "object", max_instances: int = 1) -> str | None:
    """A digest of what decides a concept's masks: its learned tensors, method, model weights, plus
    the concept name and ``max_instances`` (``None`` for a plain callable, which has no identity).

    Values are rounded to 5 decimals, so that a concept learned again from the same reference with
    the same model (e.g. with another thread count) keeps its fingerprint.
    """
    tensors = [getattr(concept, k, None) for k in ("target_feat", "target_embedding", "mask_weights")]
    if tensors[0] is None or not hasattr(concept, "metadata"):
        return None
    meta = {k: v for k, v in concept.metadata().items() if k not in ("name", "options")}
    options = (concept.metadata().get("options") or {}).items()
    # Fitting statistics (time taken, final loss) vary from run to run without changing the masks.
    meta["options"] = {k: v for k, v in options if not _VOLATILE_OPTION.search(k)}
    h = hashlib.sha256(json.dumps([meta, concept_name, int(max_instances)], sort_keys=True).encode())
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        a = t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, np.float64)
        h.update(np.ascontiguousarray(np.round(a, 5) + 0.0).tobytes())  # + 0.0 folds -0.0 into 0.0
    return h.hexdigest()


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
    if "perseg" in save and concept_name in (outputs.MASK_DIR, outputs.OVERLAY_DIR):
        raise InputError(f"concept name {concept_name!r} clashes with the output folder of the same name")


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
        self.out_dir = ensure_output_dir(out_dir)  # after the checks: a refused run creates nothing
        self.concept_name = concept_name
        self.overlay_format = overlay_format
        self.coco = outputs.CocoResults(self.out_dir / outputs.COCO_FILE) if "coco" in self.save else None
        self.fingerprint = fingerprint
        self.state_path = self.out_dir / STATE_FILE
        self.state = self._read_state()
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
        paths = {
            "mask": self.out_dir / outputs.MASK_DIR / f"{name}.png",
            "overlay": self.out_dir / outputs.OVERLAY_DIR / f"{name}.{self.overlay_format}",
            "perseg": self.out_dir / self.concept_name / f"{name}.png",
        }
        return {k: v for k, v in paths.items() if k in self.save}

    def outputs_exist(self, name: str, file_name: str) -> bool:
        """True when every chosen output of this image exists (whatever concept wrote it)."""
        if self.coco is not None and file_name not in self.coco:
            return False
        return all(p.is_file() for p in self.file_paths(name).values())

    def is_current(self, name: str) -> bool:
        """True when this image's outputs were written with this writer's fingerprint."""
        if self.fingerprint is None:
            return True
        kinds = self.state.get(name, {})
        return all(kinds.get(kind) == self.fingerprint for kind in self.save)

    def is_done(self, name: str, file_name: str) -> bool:
        """True when every chosen output of this image exists and comes from the same concept."""
        return self.outputs_exist(name, file_name) and self.is_current(name)

    def write(self, name: str, file_name: str, image: np.ndarray, result: Any) -> None:
        """Writes the outputs of one segmented image (``result``: a SegmentationResult)."""
        mask = np.asarray(result.mask, bool)
        paths = self.file_paths(name)
        if "mask" in paths:
            outputs.save_mask(paths["mask"], mask)
        if "perseg" in paths:
            outputs.save_perseg_mask(paths["perseg"], mask)
        if "overlay" in paths:
            overlay = outputs.render_overlay(
                image,
                mask,
                points=_opt_array(getattr(result, "points", None)),
                point_labels=_opt_array(getattr(result, "point_labels", None)),
                box=_opt_array(getattr(result, "box", None)),
            )
            outputs.save_overlay(paths["overlay"], overlay)
        if self.coco is not None:
            h, w = mask.shape
            self.coco.add(file_name, h, w, coco_instances(result), self.concept_name)
        if self.fingerprint is not None:
            self.state.setdefault(name, {}).update(dict.fromkeys(self.save, self.fingerprint))
        self._dirty = self.coco is not None or self.fingerprint is not None
        if self._dirty and time.monotonic() - self._saved_at > _FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Writes the COCO file and the state file if they changed.

        An image written after the last flush of an interrupted run is simply recomputed next time.
        """
        if not self._dirty:
            return
        if self.coco is not None:
            self.coco.save()
        if self.fingerprint is not None:
            write_json_atomic(self.state_path, {"version": 1, "images": self.state})
        self._dirty = False
        self._saved_at = time.monotonic()


def _opt_array(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    return a if a.size else None


def coco_instances(result: Any) -> list[outputs.CocoInstance]:
    """The instances of a SegmentationResult to record (none when the object was not found)."""
    if not getattr(result, "found", True):
        return []
    instances = getattr(result, "instances", None) or []
    out = [
        outputs.CocoInstance(np.asarray(inst.mask, bool), float(inst.score))
        for inst in instances
        if getattr(inst, "mask", None) is not None
    ]
    if not out:
        out = [outputs.CocoInstance(np.asarray(result.mask, bool), float(result.score))]
    return out


def segment_image_set(
    concept: Concept | Callable[[np.ndarray], Any],
    targets: Sequence[PathLike] | PathLike,
    out_dir: PathLike,
    *,
    save: str | Sequence[str] = DEFAULT_SAVE,
    concept_name: str = "object",
    overwrite: bool = False,
    max_instances: int = 1,
    overlay_format: str = "jpg",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ImageSetSummary:
    """Segments ``concept`` in every target image and writes the chosen outputs.

    Args:
        concept: a learned :class:`~persam.personalize.Concept`, or any callable mapping an
            ``uint8 [H, W, 3]`` image to a result with ``mask`` (bool ``[H, W]``), ``score``,
            ``found``, and optionally ``points``, ``point_labels``, ``box``, ``instances``.
        targets: image files, folders (non-recursive) and glob patterns.
        out_dir: output folder, see :mod:`persam.outputs` for its layout.
        save: output kinds, subset of ``("mask", "overlay", "coco", "perseg")``.
        concept_name: PerSeg sub-folder / COCO category.
        overwrite: recompute images whose outputs exist.
        max_instances: passed to :meth:`Concept.segment`.
        progress: show a progress bar on stderr.
        log: receives one line per failed image (default: printed to stderr above the bar).

    Returns:
        An :class:`ImageSetSummary`. Raises :class:`InputError` when there is nothing to segment
        or the output folder is unusable; errors of single images are collected instead.
    """
    paths = list_images(targets)
    if not paths:
        shown = targets if isinstance(targets, (str, os.PathLike)) else ", ".join(map(str, targets))
        raise InputError(f"{shown}: no images found")
    fingerprint = concept_fingerprint(concept, concept_name, max_instances)
    writer = ImageSetWriter(out_dir, save, concept_name, overlay_format, fingerprint)
    names = output_names(paths)
    file_names = relative_names(paths)
    segment = _segment_fn(concept, max_instances)
    summary = ImageSetSummary()
    bar = tqdm(total=len(paths), unit="image", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    emit = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    try:
        for path, name, file_name in zip(paths, names, file_names, strict=True):
            bar.set_postfix_str(path.name, refresh=False)
            exist = not overwrite and writer.outputs_exist(name, file_name)
            if exist and writer.is_current(name):
                summary.skipped.append(path)
            else:
                if exist:
                    summary.stale.append(path)
                try:
                    image = load_image(path)
                    result = segment(image)
                    writer.write(name, file_name, image, result)
                except (InputError, OSError) as e:
                    msg = str(e) if isinstance(e, InputError) else f"{path}: {type(e).__name__}: {e}"
                    summary.failed.append(ImageFailure(path, msg))
                    emit(f"failed: {msg}")
                else:
                    summary.segmented.append(path)
                    if not getattr(result, "found", True):
                        summary.not_found.append(path)
            bar.update(1)
    finally:
        bar.close()
        writer.flush()
    return summary


def _segment_fn(concept: Any, max_instances: int) -> Callable[[np.ndarray], Any]:
    if hasattr(concept, "segment"):
        return lambda image: concept.segment(image, max_instances=max_instances)
    if callable(concept):
        return concept
    raise TypeError(f"expected a Concept or a callable, got {type(concept).__name__}")
