"""The :class:`Concept`: what PerSAM / PerSAM-F learned from reference example(s), and its file.

A concept remembers which backbone and weights it was learned with; :meth:`Concept.save` writes a
small pickle-free ``.npz`` file that :meth:`Concept.load` reads back.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persam.backbones.base import Backbone
from persam.errors import ConceptMismatchError, InputError, describe
from persam.io import atomic_path
from persam.methods import METHODS, method_spec
from persam.personalize.finetune import FitResult
from persam.personalize.implementations import method_implementation
from persam.personalize.result import SegmentationResult
from persam.personalize.segment import ImageLike, segment_concepts

CONCEPT_FORMAT = "persam-concept"
CONCEPT_FORMAT_VERSION = 1


def _short_id(checkpoint_id: str) -> str:
    """A checkpoint identity for messages: sha256 digests shortened, other ids kept whole."""
    is_digest = len(checkpoint_id) == 64 and all(c in "0123456789abcdef" for c in checkpoint_id)
    return checkpoint_id[:16] if is_digest else checkpoint_id


@dataclass(eq=False)
class Concept:
    """A personalised concept: what PerSAM / PerSAM-F learned from the reference example(s).

    Attributes:
        method: ``"persam"``, ``"persam_f"`` or ``"candidates"``.
        target_feat: float32 ``[1, C]`` normalised object feature (PerSAM: mean of the reference
            cells; PerSAM-F: ``(max + mean) / 2``).
        target_embedding: float32 ``[1, 1, C]`` raw mean feature (PerSAM's target-semantic prompt).
        mask_weights: float32 ``[3]`` learned weights of the 3 multimask outputs (PerSAM-F), or None.
        backbone_name, checkpoint_id: the model it was learned with.
        options: learning options and statistics (JSON-serialisable).
        name: optional label.
        reference_feats: float32 ``[R, C]`` normalised mask-pooled feature of each reference
            (method ``"candidates"``), else None.
        model: the backbone used by :meth:`segment` (not saved).
        fit: the PerSAM-F optimisation history (not saved).
        runtime: objects a method needs at run time that a file cannot hold (not saved; e.g. the
            box detector of the ``"candidates"`` method, see :mod:`persam.everything.method`).
    """

    method: str
    target_feat: torch.Tensor
    target_embedding: torch.Tensor
    mask_weights: torch.Tensor | None
    backbone_name: str
    checkpoint_id: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    reference_feats: torch.Tensor | None = None
    model: Backbone | None = field(default=None, repr=False)
    fit: FitResult | None = field(default=None, repr=False)
    runtime: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        weights = "" if self.mask_weights is None else f", mask_weights={self.mask_weights.tolist()}"
        return (
            f"Concept(method={self.method!r}, name={self.name!r}, backbone={self.backbone_name!r}, "
            f"feature_dim={int(self.target_feat.shape[-1])}{weights})"
        )

    # ----------------------------------------------------------------- binding
    def check_compatible(self, model: Backbone) -> None:
        """Raises :class:`ConceptMismatchError` unless ``model`` is the backbone and weights this
        concept was learned with."""
        width = int(self.target_feat.shape[-1])
        model_width = getattr(model, "embed_dim", width)
        if width != model_width:
            raise ConceptMismatchError(
                f"concept features are {width} wide but model {model.name!r} gives {model_width}; "
                "learn it again with this model"
            )
        if model.name != self.backbone_name or model.checkpoint_id != self.checkpoint_id:
            raise ConceptMismatchError(
                f"concept {self.name or ''!s}{' ' if self.name else ''}was learned with backbone "
                f"{self.backbone_name!r} (weights {_short_id(self.checkpoint_id)}) but the model is "
                f"{model.name!r} (weights {_short_id(model.checkpoint_id)}); learn it again with this model"
            )

    def bind(self, model: Backbone) -> Concept:
        """A copy of this concept that segments with ``model`` (checked for compatibility)."""
        self.check_compatible(model)
        return dataclasses.replace(self, model=model)

    def _require_model(self) -> Backbone:
        if self.model is None:
            raise RuntimeError(
                "this concept has no model: use Concept.load(path, model=...) or concept.bind(model)"
            )
        return self.model

    # ------------------------------------------------------------- segmenting
    def segment(
        self,
        image: ImageLike,
        *,
        max_instances: int = 1,
        score_threshold: float | None = None,
        return_stages: bool = False,
        return_similarity: bool = False,
    ) -> SegmentationResult:
        """Segments the concept in ``image`` (path or ``uint8 [H, W, 3]`` RGB array).

        Args:
            max_instances: look for up to this many instances: after each one, its region is
                removed from the similarity map and the search repeats; it stops early at an
                empty mask, a score below ``score_threshold``, or a mask that mostly overlaps
                the instances already found.
            score_threshold: minimum predicted IoU for a mask to count as found; None accepts every
                non-empty mask (as the reference implementation does). Method ``"candidates"``:
                the minimum similarity, instead of the one calibrated on the reference.
            return_stages: fill :attr:`SegmentationResult.stages`.
            return_similarity: fill :attr:`SegmentationResult.similarity`.

        Method ``"candidates"`` returns up to ``max_instances`` generated masks, best first
        (``stages`` and ``similarity`` stay None).
        """
        if not method_spec(self.method).cascade:
            return method_implementation(self.method).segment(
                self, image, max_instances=max_instances, score_threshold=score_threshold
            )
        return segment_concepts(
            self._require_model(),
            image,
            [self],
            max_instances=max_instances,
            score_threshold=score_threshold,
            return_stages=return_stages,
            return_similarity=return_similarity,
        )[0]

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        """The JSON metadata written by :meth:`save`."""
        return {
            "format": CONCEPT_FORMAT,
            "format_version": CONCEPT_FORMAT_VERSION,
            "method": self.method,
            "name": self.name,
            "backbone": self.backbone_name,
            "checkpoint_id": self.checkpoint_id,
            "feature_dim": int(self.target_feat.shape[-1]),
            "options": self.options,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Writes the concept to ``path`` (an ``.npz`` archive of float32 arrays and a JSON
        metadata entry; no pickle). The file is replaced atomically."""
        arrays = {
            "target_feat": self.target_feat.detach().cpu().float().numpy().reshape(1, -1),
            "target_embedding": self.target_embedding.detach().cpu().float().numpy().reshape(1, 1, -1),
            "metadata": np.frombuffer(json.dumps(self.metadata()).encode("utf-8"), dtype=np.uint8),
        }
        if self.mask_weights is not None:
            arrays["mask_weights"] = self.mask_weights.detach().cpu().float().numpy().reshape(3)
        if self.reference_feats is not None:
            feats = self.reference_feats.detach().cpu().float().numpy()
            arrays["reference_feats"] = feats.reshape(-1, self.target_feat.shape[-1])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, model: Backbone | None = None) -> Concept:
        """Reads a concept written by :meth:`save`; with ``model``, checks that it is the backbone
        (name and weights) the concept was learned with and binds it."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: concept file not found")
        data = _read_concept_arrays(p)
        try:
            concept = cls._from_arrays(data)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, AttributeError, RuntimeError) as e:
            reason = f"missing {e.args[0]!r}" if isinstance(e, KeyError) and e.args else describe(e)
            raise InputError(f"{p}: not a valid persam concept file ({reason})") from None
        if model is not None:
            try:
                return concept.bind(model)
            except ConceptMismatchError as e:
                raise ConceptMismatchError(f"{p}: {e}") from None
        return concept

    @classmethod
    def _from_arrays(cls, data: dict[str, np.ndarray]) -> Concept:
        """The concept of a file's arrays, every entry checked (a file may be damaged or crafted)."""
        meta = json.loads(bytes(data["metadata"].astype(np.uint8)).decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"its metadata is a JSON {type(meta).__name__}, not an object")
        if meta.get("format") != CONCEPT_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}")
        version = int(meta["format_version"])
        if version > CONCEPT_FORMAT_VERSION:
            raise ValueError(f"format version {version} is newer than supported ({CONCEPT_FORMAT_VERSION})")
        method = meta["method"]
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        for key in ("backbone", "checkpoint_id"):
            if not isinstance(meta[key], str) or not meta[key]:
                raise ValueError(f"{key!r} is not a name")
        options, name = meta.get("options") or {}, meta.get("name")
        if not isinstance(options, dict) or not (name is None or isinstance(name, str)):
            raise ValueError("'options' / 'name' have the wrong type")
        feat = _float_array(data, "target_feat")
        emb = _float_array(data, "target_embedding")
        dim = int(meta.get("feature_dim", feat.size))
        if not (feat.size == emb.size == dim > 0):
            raise ValueError(
                f"feature widths disagree (target_feat {feat.size}, target_embedding {emb.size}, "
                f"feature_dim {dim})"
            )
        weights = None
        if method == "persam_f":
            w = _float_array(data, "mask_weights")
            if w.size != 3:
                raise ValueError(f"mask_weights holds {w.size} values, expected 3")
            weights = torch.from_numpy(w).reshape(3)
        references = None
        if not method_spec(method).cascade:
            r = _float_array(data, "reference_feats")
            if r.ndim != 2 or r.shape[1] != dim or r.shape[0] < 1:
                raise ValueError(f"reference_feats is {list(r.shape)}, expected [R, {dim}]")
            references = torch.from_numpy(r)
        return cls(
            method=method,
            target_feat=torch.from_numpy(feat).reshape(1, -1),
            target_embedding=torch.from_numpy(emb).reshape(1, 1, -1),
            mask_weights=weights,
            backbone_name=meta["backbone"],
            checkpoint_id=meta["checkpoint_id"],
            options=dict(options),
            name=name,
            reference_feats=references,
        )


def _float_array(data: dict[str, np.ndarray], key: str) -> np.ndarray:
    a = data[key]
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{key} holds {a.dtype} values, not numbers")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{key} holds NaN or infinite values")
    return a


def is_concept_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file written by :meth:`Concept.save` (so replacing it loses nothing
    the user did not ask to replace)."""
    try:
        _read_concept_arrays(Path(path))
    except InputError:
        return False
    return True


def _read_concept_arrays(p: Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive ``p``, refusing pickled objects; one-line errors."""
    if not zipfile.is_zipfile(p):
        raise InputError(f"{p}: not a persam concept file (not an .npz archive)")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as e:
        # numpy's message advises allow_pickle=True: a concept never holds objects, so never do that.
        if "pickle" in str(e):
            raise InputError(f"{p}: not a persam concept file (it holds pickled objects)") from None
        raise InputError(f"{p}: not a persam concept file ({describe(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{p}: not a persam concept file ({describe(e)})") from None
    # Any other zip (a torch checkpoint, say) opens as an archive too, without our metadata entry.
    if not isinstance(data.get("metadata"), np.ndarray):
        raise InputError(f"{p}: not a persam concept file (no persam metadata)")
    return data
