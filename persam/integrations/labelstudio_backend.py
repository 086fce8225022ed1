"""A Label Studio ML backend: a learned concept pre-annotates every task with brush masks.

Serve it with ``label-studio-ml`` (``pip install "persam[labelstudio-ml]"``) from a folder holding a
``model.py`` that imports the class (``from persam.integrations.labelstudio_backend import
PerSAMBackend``)::

    PERSAM_CONCEPT=my_dog.persam PERSAM_LABEL=dog label-studio-ml start ./my_backend

then add the backend's URL in Label Studio (Settings > Model). The project's labeling config needs a
``<BrushLabels>`` control over an ``<Image>`` (:func:`persam.integrations.labelstudio.labeling_config`
writes one). Settings come from the backend's keyword arguments (``label-studio-ml start ...
--kwargs concept=my_dog.persam``) or else from the environment:

========================  =====================================================================
``concept``               ``PERSAM_CONCEPT``: the concept file (``persam learn ... -o FILE``)
``model``                 ``PERSAM_MODEL``: the model (default: the one the concept was learned with)
``checkpoint``            ``PERSAM_CHECKPOINT``: ``auto`` (official file), a path, or ``none``
``label``                 ``PERSAM_LABEL``: the brush label (default: the config's first label)
``max_instances``         ``PERSAM_MAX_INSTANCES``: instances per image (default 1)
``device``                ``PERSAM_DEVICE``: ``auto``, ``cpu``, ``cuda`` or ``mps``
========================  =====================================================================

Images are read from a local path in the task, from Label Studio's local storage
(``LOCAL_FILES_DOCUMENT_ROOT``) or downloaded from Label Studio, as ``label-studio-ml`` resolves them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from persam.errors import InputError
from persam.integrations.common import require
from persam.integrations.labelstudio import to_prediction
from persam.io import load_image
from persam.personalize import Concept
from persam.registry import build_model

lsml = require("label_studio_ml.model", "labelstudio-ml")

__all__ = ["PerSAMBackend"]

_SETTINGS = ("concept", "model", "checkpoint", "label", "max_instances", "device")
#: Loaded concepts by settings: Label Studio's backend server makes a new instance per project and
#: often per request, and the model must not be loaded again each time.
_LOADED: dict[tuple, Concept] = {}
_LOCK = threading.Lock()


def _setting(kwargs: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = kwargs.get(name)
    if value is None:
        value = os.environ.get(f"PERSAM_{name.upper()}", default)
    return None if value is None else str(value)


def _brush_control(parsed: dict[str, Any]) -> tuple[str, str, str, list[str]]:
    """(from_name, to_name, data key, labels) of the config's first BrushLabels over an Image."""
    for from_name, info in parsed.items():
        inputs = [i for i in info.get("inputs", []) if i.get("type") == "Image"]
        if info.get("type") == "BrushLabels" and inputs:
            return from_name, info["to_name"][0], inputs[0]["value"], list(info.get("labels", []))
    raise InputError("the labeling config has no <BrushLabels> control over an <Image>")


class PerSAMBackend(lsml.LabelStudioMLBase):
    """Label Studio's ML backend interface (``label_studio_ml.model.LabelStudioMLBase``) over a
    concept: :meth:`predict` gives one prediction per task, a brush region per instance found."""

    def __init__(self, label_config: str | None = None, train_output: Any = None, **kwargs: Any) -> None:
        super().__init__(label_config=label_config, train_output=train_output, **kwargs)
        self.settings = {name: _setting(kwargs, name) for name in _SETTINGS}
        if not self.settings["concept"]:
            raise InputError("no concept: set PERSAM_CONCEPT=FILE.persam (or --kwargs concept=FILE)")
        self.from_name, self.to_name, self.data_key, labels = _brush_control(self.parsed_label_config)
        self.label = self.settings["label"] or (labels[0] if labels else "object")
        if labels and self.label not in labels:
            raise InputError(f"label {self.label!r} is not in the labeling config's labels {labels}")
        self.max_instances = int(self.settings["max_instances"] or 1)
        self.concept = self._load()
        self.model_version = f"persam-{self.concept.backbone_name}-{self.concept.method}"

    def _load(self) -> Concept:
        s = self.settings
        key = (s["concept"], s["model"], s["checkpoint"], s["device"])
        with _LOCK:
            if key not in _LOADED:
                concept = Concept.load(Path(s["concept"]))
                backbone = build_model(
                    s["model"] or concept.backbone_name,
                    checkpoint=s["checkpoint"] or "auto",
                    device=s["device"] or "auto",
                )
                _LOADED[key] = concept.bind(backbone)
            return _LOADED[key]

    def image_path(self, task: dict[str, Any]) -> str:
        """The local file of the task's image: a path as it is, else resolved by label-studio-ml."""
        url = str(task.get("data", {}).get(self.data_key, ""))
        if not url:
            raise InputError(f"task {task.get('id')} has no data.{self.data_key}")
        if Path(url).is_file():
            return url
        return self.get_local_path(url)

    def predict(self, tasks: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
        """One prediction per task (``model_version``, ``score``, ``result`` of brush regions)."""
        out = []
        for task in tasks:
            image = load_image(self.image_path(task))
            with _LOCK:  # one model, shared by the server's threads
                result = self.concept.segment(image, max_instances=self.max_instances)
            out.append(
                to_prediction(
                    result,
                    label=self.label,
                    from_name=self.from_name,
                    to_name=self.to_name,
                    model_version=self.model_version,
                )
            )
        return out
