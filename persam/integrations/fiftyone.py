"""persam results as FiftyOne labels, a FiftyOne model, and a remote model-zoo source.

>>> from persam.integrations import fiftyone as pfo                                  # doctest: +SKIP
>>> pfo.add_results(dataset, {s.filepath: concept.segment(s.filepath) for s in dataset},
...                 field="my_dog", segmentation_field="my_dog_seg", label="my dog")
>>> model = pfo.PerSAMModel(concept)                        # or, through the zoo:
>>> model = foz.load_zoo_model("persam/sam_vit_b", concept="my_dog.persam")
>>> dataset.apply_model(model, label_field="my_dog")

Instances become ``fo.Detection`` s as FiftyOne stores them: a relative ``[x, y, w, h]`` box and the
mask cropped to it (``fo.Detection.from_mask``), the predicted IoU as ``confidence`` and the object
id as ``index``; a label map (0 background, else object ids) becomes an ``fo.Segmentation``.

The zoo source is the folder ``persam/integrations/fiftyone_zoo`` (``manifest.json`` and an
``__init__.py`` with ``download_model`` / ``load_model``): register it with
``foz.register_zoo_model_source(URL)`` from where it is hosted, or copy it into the local zoo with
:func:`register_zoo_source`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from persam.errors import InputError
from persam.integrations.common import as_masks, require
from persam.personalize import Concept, learn
from persam.registry import build_model, get_spec, list_models, random_model_names
from persam.results import Masks
from persam.weights import CHECKPOINTS, resolve_checkpoint

fo = require("fiftyone", "fiftyone")
fom = require("fiftyone.core.models", "fiftyone")

__all__ = [
    "SOURCE_NAME",
    "ZOO_NAME",
    "PerSAMModel",
    "add_results",
    "download_model",
    "from_detections",
    "load_model",
    "register_zoo_source",
    "to_detections",
    "to_segmentation",
    "zoo_manifest",
    "zoo_source_dir",
]

#: The zoo source's name; its models are ``persam/<model name>``.
ZOO_NAME = "persam"
#: Random test models: no file to download (a marker file stands in for the checkpoint).
_RANDOM_MARKER = ".random"
#: The zoo source's own name: FiftyOne keeps a source in ``model_zoo_dir/<name>`` and imports its
#: ``__init__.py`` under that name, so it must not be ``persam`` (that module would replace the
#: persam package in ``sys.modules``).
SOURCE_NAME = "persam-zoo"


# ------------------------------------------------------------------------------ conversions
def to_detections(masks: Any, *, label: str = "object", found_only: bool = True) -> Any:
    """``masks`` (or a result with ``.masks``) as ``fo.Detections``, one per non-empty mask (only
    those flagged ``found`` unless ``found_only=False``)."""
    m = as_masks(masks)
    keep = m.masks.any(axis=(1, 2)) & (m.found if found_only else True)
    dets = []
    for k in np.flatnonzero(keep):
        attrs: dict[str, Any] = {"index": int(m.object_ids[k])}
        if math.isfinite(m.scores[k]):
            attrs["confidence"] = float(m.scores[k])
        dets.append(fo.Detection.from_mask(m.masks[k], label=label, **attrs))
    return fo.Detections(detections=dets)


def to_segmentation(masks: Any, *, found_only: bool = True) -> Any:
    """``masks`` as an ``fo.Segmentation``: the uint8 label map of their object ids."""
    m = as_masks(masks)
    return fo.Segmentation(mask=(m[m.found] if found_only else m).label_map())


def from_detections(detections: Any, size: tuple[int, int]) -> Masks:
    """``fo.Detections`` with instance masks as :class:`~persam.results.Masks` on an image of
    ``size`` ``(H, W)``: each cropped mask put back at its box (FiftyOne's own rendering),
    ``confidence`` as score, ``index`` as object id (``1..N`` when any is missing)."""
    h, w = size
    dets = list(detections.detections)
    out = np.zeros((len(dets), h, w), bool)
    for k, d in enumerate(dets):
        if d.mask is None:
            raise InputError(f"detection {k} ({d.label}) has no instance mask")
        # FiftyOne's own renderer: the instance mask resized into its box on the frame.
        out[k] = d.to_segmentation(frame_size=(w, h), target=1).mask > 0
    ids = [d.index for d in dets]
    return Masks(
        masks=out,
        scores=[math.nan if d.confidence is None else d.confidence for d in dets],
        object_ids=ids if all(i is not None for i in ids) else None,
    )


def add_results(
    dataset_or_sample: Any,
    results: Any,
    field: str | None = "persam",
    *,
    segmentation_field: str | None = None,
    label: str = "object",
    found_only: bool = True,
) -> int:
    """Writes results into a FiftyOne sample, dataset or view.

    Args:
        dataset_or_sample: an ``fo.Sample`` (then ``results`` is one result), or a dataset / view
            (then ``results`` maps a sample's ``filepath`` or ``id`` to its result, or lists one
            result per sample in the collection's order).
        results: :class:`~persam.results.Masks` or results with ``.masks``.
        field: the ``fo.Detections`` field (None: none).
        segmentation_field: an ``fo.Segmentation`` field as well (None: none); on a dataset, its
            ``mask_targets`` name the object ids ``label``.
        label, found_only: as in :func:`to_detections`.

    Returns:
        how many samples were written.
    """
    if field is None and segmentation_field is None:
        raise InputError("add_results: give field and/or segmentation_field")

    seen: set[int] = set()

    def write(sample: Any, result: Any) -> None:
        m = as_masks(result)
        if field is not None:
            sample[field] = to_detections(m, label=label, found_only=found_only)
        if segmentation_field is not None:
            seg = to_segmentation(m, found_only=found_only)
            seen.update(int(i) for i in np.unique(seg.mask) if i)
            sample[segmentation_field] = seg

    if isinstance(dataset_or_sample, fo.Sample):
        write(dataset_or_sample, results)
        if dataset_or_sample.in_dataset:
            dataset_or_sample.save()
        return 1
    collection = dataset_or_sample
    written = 0
    if isinstance(results, Mapping):
        for sample in collection.iter_samples(autosave=True):
            result = results.get(sample.filepath, results.get(sample.id))
            if result is not None:
                write(sample, result)
                written += 1
    else:
        items = list(results)
        if len(items) != len(collection):
            raise InputError(f"add_results: {len(items)} results for {len(collection)} samples")
        for sample, result in zip(collection.iter_samples(autosave=True), items, strict=True):
            write(sample, result)
            written += 1
    if segmentation_field is not None and seen:
        # The App names label-map values by the dataset's mask targets.
        ds = collection._root_dataset if hasattr(collection, "_root_dataset") else collection
        ds.mask_targets = {**ds.mask_targets, segmentation_field: {i: f"{label} {i}" for i in sorted(seen)}}
        ds.save()
    return written


# ----------------------------------------------------------------------------------- model
class PerSAMModel(fom.Model):
    """A concept as a FiftyOne image model (``dataset.apply_model(model, label_field=...)``):
    each image's instances as ``fo.Detections`` (``output="detections"``) or the label map as an
    ``fo.Segmentation`` (``output="segmentation"``)."""

    def __init__(
        self,
        concept: Concept,
        *,
        label: str | None = None,
        output: str = "detections",
        max_instances: int = 1,
    ) -> None:
        if output not in ("detections", "segmentation"):
            raise InputError(f"output must be 'detections' or 'segmentation', got {output!r}")
        self.concept = concept
        self.label = label or concept.name or "object"
        self.output = output
        self.max_instances = int(max_instances)
        self._preprocess = False

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def ragged_batches(self) -> bool:
        # Photos of any size go to predict one by one, so batches may be ragged.
        return True

    @property
    def transforms(self) -> None:
        return None

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = bool(value)

    def predict(self, arg: np.ndarray) -> Any:
        image = np.asarray(arg)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        masks = self.concept.segment(image[..., :3], max_instances=self.max_instances).masks
        if self.output == "segmentation":
            return to_segmentation(masks)
        return to_detections(masks, label=self.label)


# ------------------------------------------------------------------------------------- zoo
def zoo_source_dir() -> Path:
    """The folder of the remote zoo source (``manifest.json``, ``__init__.py``)."""
    return Path(__file__).with_name("fiftyone_zoo")


def zoo_manifest() -> dict[str, Any]:
    """The zoo manifest of every persam model with an official checkpoint, and the small random
    test models (``tiny_random_sam``, ...: nothing to download, for trying the wiring; their masks
    are meaningless)."""
    models = []
    for name in list_models():
        info = CHECKPOINTS[get_spec(name).checkpoint]
        models.append(
            {
                "base_name": f"{ZOO_NAME}/{name}",
                "base_filename": info.filename,
                "description": f"{info.description}, personalized from one example with PerSAM / PerSAM-F",
                "source": "https://github.com/ZrrSkywalker/Personalize-SAM",
                "license": "Apache-2.0",
                "size_bytes": info.size,
                "tags": ["segmentation", "instances", "torch", "persam", "zero-shot"],
                "requirements": {"packages": ["persam"], "cpu": {"support": True}, "gpu": {"support": True}},
            }
        )
    for name in random_model_names():
        models.append(
            {
                "base_name": f"{ZOO_NAME}/{name}",
                "base_filename": f"{name}{_RANDOM_MARKER}",
                "description": f"small {name.removeprefix('tiny_random_')} model with random weights, "
                "for trying the wiring (masks are meaningless)",
                "license": "Apache-2.0",
                "size_bytes": 0,
                "tags": ["segmentation", "persam", "test"],
                "requirements": {"packages": ["persam"], "cpu": {"support": True}},
            }
        )
    return {"name": SOURCE_NAME, "models": models}


def _model_name(zoo_name: str) -> str:
    prefix = f"{ZOO_NAME}/"
    name = zoo_name[len(prefix) :] if zoo_name.startswith(prefix) else zoo_name
    if name not in list_models() and name not in random_model_names():
        raise InputError(f"unknown persam zoo model {zoo_name!r}")
    return name


def download_model(model_name: str, model_path: str) -> None:
    """FiftyOne's zoo hook: puts the model's checkpoint at ``model_path``, linked to persam's own
    cache (downloaded there once, verified; so persam and FiftyOne share one copy)."""
    name = _model_name(model_name)
    dst = Path(model_path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if name in random_model_names():
        dst.write_text(json.dumps({"model": name, "checkpoint": "none"}))
        return
    src = resolve_checkpoint(name, "auto")
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.symlink(src, dst)
    except OSError:  # no symlinks here (e.g. Windows without the privilege): a copy
        shutil.copyfile(src, dst)


def load_model(
    model_name: str,
    model_path: str,
    *,
    concept: str | os.PathLike | None = None,
    ref: Any = None,
    ref_mask: Any = None,
    method: str = "persam",
    label: str | None = None,
    output: str = "detections",
    max_instances: int = 1,
    device: str = "auto",
    dtype: str = "float32",
) -> PerSAMModel:
    """FiftyOne's zoo hook: the model at ``model_path`` with a concept (a concept file, or learned
    from ``ref`` / ``ref_mask``) as a :class:`PerSAMModel`; the keyword arguments are those of
    ``foz.load_zoo_model``."""
    name = _model_name(model_name)
    checkpoint = "none" if name in random_model_names() else model_path
    if (concept is None) == (ref is None or ref_mask is None):
        raise InputError("load_model needs concept=FILE, or ref=PHOTO and ref_mask=MASK (not both)")
    model = build_model(name, checkpoint=checkpoint, device=device, dtype=dtype)
    if concept is not None:
        bound = Concept.load(concept, model)
    else:
        bound = learn(model, ref, ref_mask, method=method, name=label)
    return PerSAMModel(bound, label=label, output=output, max_instances=max_instances)


def register_zoo_source(overwrite: bool = False) -> Path:
    """Copies the zoo source into FiftyOne's local zoo (``fo.config.model_zoo_dir``), as
    ``foz.register_zoo_model_source`` does with a downloaded one, so that ``persam/<model>``
    names load without hosting the folder anywhere; returns where it went."""
    dst = Path(fo.config.model_zoo_dir, SOURCE_NAME)
    if dst.exists():
        if not overwrite:
            return dst
        shutil.rmtree(dst)
    shutil.copytree(zoo_source_dir(), dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst
