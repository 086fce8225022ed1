"""persam: personalize Segment Anything from one example.

Five lines::

    import persam
    model = persam.build_model("sam_vit_h", checkpoint="auto")
    concept = persam.learn(model, "ref.jpg", "ref_mask.png", method="persam_f")
    result = concept.segment("photo.jpg")
    result.mask  # bool [H, W]
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it (imported lazily so that `import persam` stays cheap).
_EXPORTS = {
    "build_model": "persam.registry",
    "list_models": "persam.registry",
    "learn": "persam.personalize",
    "Concept": "persam.personalize",
    "SegmentationResult": "persam.personalize",
    "track": "persam.pipelines.video",
    "Masks": "persam.results",
    "InputError": "persam.errors",
    "tune_cpu_allocator": "persam.allocator",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
