"""Whole datasets on a Ray cluster: :func:`segment_dataset` (images) and :func:`track_dataset`
(videos, one per task), the ``--engine ray`` of ``persam segment`` and ``persam track``.

Needs the optional extra: ``pip install "persam[ray]"``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "segment_dataset": "persam.distributed.segment",
    "DatasetSummary": "persam.distributed.segment",
    "track_dataset": "persam.distributed.track",
    "VideoJob": "persam.distributed.track",
    "TrackDatasetSummary": "persam.distributed.track",
    "RayOptions": "persam.distributed.cluster",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Loaded on first use: importing the package must not need ray.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persam.distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
