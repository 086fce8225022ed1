"""What every integration shares: accepting any result that carries masks, and importing its tool."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from persam.errors import InputError
from persam.results import Masks


def require(module: str, extra: str) -> ModuleType:
    """Imports ``module``; when it is missing, an :class:`ImportError` that names the extra to install
    (the tools are optional, so the error must say how to get them)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is needed for this integration: pip install 'persam[{extra}]' ({e})"
        ) from e


def as_masks(results: Any) -> Masks:
    """``results`` as :class:`Masks`: a :class:`Masks`, or anything with a ``masks`` property that
    gives one (a :class:`~persam.personalize.SegmentationResult`, a tracked
    :class:`~persam.tracking.FrameResult`)."""
    if isinstance(results, Masks):
        return results
    masks = getattr(results, "masks", None)
    if isinstance(masks, Masks):
        return masks
    raise InputError(f"expected persam Masks or a result with .masks, got {type(results).__name__}")
