"""Integrations with the tools where data sets are annotated, each an optional extra.

* :mod:`persam.integrations.supervision` — :class:`~persam.results.Masks` to and from
  ``supervision.Detections`` (``pip install "persam[supervision]"``);
* :mod:`persam.integrations.labelstudio` — Label Studio tasks with brush-mask pre-annotations
  (``persam[labelstudio]``);
* :mod:`persam.integrations.cvat` — a CVAT auto-annotation function module for ``cvat-cli task
  auto-annotate --function-module persam.integrations.cvat`` (``persam[cvat]``);
* :mod:`persam.integrations.fiftyone` — results as FiftyOne ``Detections`` / ``Segmentation`` labels,
  and a remote model-zoo source (``persam[fiftyone]``).

Each module imports its tool only when used, so that ``import persam`` never needs them; a missing
tool is reported as an :class:`ImportError` naming the extra to install.
"""

from __future__ import annotations

__all__ = ["as_masks", "require"]

from persam.integrations.common import as_masks, require
