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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from persam.io import InputError, PathLike, list_images, load_image
from persam.outputs import (
    DEFAULT_SAVE,
    SAVE_KINDS,
    STATE_FILE,
    ImageSetWriter,
    check_concept_name,
    check_output_layout,
    check_outputs_not_inputs,
    parse_save,
)
from persam.personalize import Concept, SegmentationResult
from persam.results import Masks

__all__ = [
    "DEFAULT_SAVE",
    "SAVE_KINDS",
    "STATE_FILE",
    "ImageFailure",
    "ImageSetSummary",
    "check_concept_name",
    "check_output_layout",
    "check_outputs_not_inputs",
    "concept_fingerprint",
    "output_names",
    "parse_save",
    "relative_names",
    "segment_image_set",
]

_VOLATILE_OPTION = re.compile(r"seconds|time|duration|loss", re.IGNORECASE)


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


def concept_fingerprint(
    concept: Concept | Any, concept_name: str = "object", max_instances: int = 1
) -> str | None:
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
    inputs: dict[str, Sequence[PathLike]] | None = None,
) -> ImageSetSummary:
    """Segments ``concept`` in every target image and writes the chosen outputs.

    Args:
        concept: a learned :class:`~persam.personalize.Concept` (or anything with its
            ``segment(image, max_instances=...)``), or a callable mapping an ``uint8 [H, W, 3]``
            image to a :class:`~persam.personalize.SegmentationResult` or a
            :class:`~persam.results.Masks`.
        targets: image files, folders (non-recursive) and glob patterns.
        out_dir: output folder, see :mod:`persam.outputs` for its layout.
        save: output kinds, subset of ``("mask", "overlay", "coco", "perseg")``.
        concept_name: PerSeg sub-folder / COCO category.
        overwrite: recompute images whose outputs exist.
        max_instances: passed to :meth:`Concept.segment`.
        progress: show a progress bar on stderr.
        log: receives one line per failed image (default: printed to stderr above the bar).
        inputs: other files the caller read (option -> paths, e.g. the reference); like the
            targets, none of them may be an output file.

    Returns:
        An :class:`ImageSetSummary`. Raises :class:`InputError` when there is nothing to segment
        or the output folder is unusable; errors of single images are collected instead.
    """
    paths = list_images(targets)
    if not paths:
        shown = targets if isinstance(targets, (str, os.PathLike)) else ", ".join(map(str, targets))
        raise InputError(f"{shown}: no images found")
    names = output_names(paths)
    check_outputs_not_inputs(
        out_dir, names, parse_save(save), concept_name, overlay_format, {"TARGET": paths, **(inputs or {})}
    )
    fingerprint = concept_fingerprint(concept, concept_name, max_instances)
    created = not Path(out_dir).exists()
    writer = ImageSetWriter(out_dir, save, concept_name, overlay_format, fingerprint)
    foreign = writer.foreign_output(names) if fingerprint is not None and not overwrite else None
    if foreign is not None:
        raise InputError(
            f"{foreign}: exists and was not written by a persam segment run; pass --overwrite to "
            "replace it, or choose another output folder"
        )
    writer.claim()
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
                    masks = as_masks(segment(image))
                    writer.write(name, file_name, image, masks)
                except (InputError, OSError) as e:
                    msg = str(e) if isinstance(e, InputError) else f"{path}: {type(e).__name__}: {e}"
                    summary.failed.append(ImageFailure(path, msg))
                    emit(f"failed: {msg}")
                else:
                    summary.segmented.append(path)
                    if not masks.found.any():
                        summary.not_found.append(path)
            bar.update(1)
    finally:
        bar.close()
        writer.flush()
        if created and not summary.segmented:
            writer.unclaim()
            _remove_empty_tree(writer.out_dir)  # nothing was written: leave no empty folder behind
    return summary


def _remove_empty_tree(folder: Path) -> None:
    """Removes ``folder`` if it holds nothing but empty folders."""
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            d.rmdir()
        except OSError:
            return
    try:
        folder.rmdir()
    except OSError:
        pass


def as_masks(result: SegmentationResult | Masks) -> Masks:
    """The masks of a segmentation result (a :class:`~persam.results.Masks` is returned as is)."""
    if isinstance(result, Masks):
        return result
    if isinstance(result, SegmentationResult):
        return result.masks
    raise TypeError(f"expected a SegmentationResult or Masks, got {type(result).__name__}")


def _segment_fn(concept: Any, max_instances: int) -> Callable[[np.ndarray], Any]:
    if hasattr(concept, "segment"):
        return lambda image: concept.segment(image, max_instances=max_instances)
    if callable(concept):
        return concept
    raise TypeError(f"expected a Concept or a callable, got {type(concept).__name__}")
