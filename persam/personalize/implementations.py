"""The code of the methods that are not a PerSAM cascade.

``candidates`` (segment everything, then keep the masks that show the concept) lives in
:mod:`persam.everything`, a sibling of this package in the same layer: it uses the location prior
and the cascade from here, and learning a concept here hands over to it. The import is made when a
method needs it, after both packages are loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from persam.methods import method_spec

if TYPE_CHECKING:
    import numpy as np

    from persam.backbones.base import Backbone
    from persam.personalize.concept import Concept
    from persam.personalize.result import SegmentationResult


class MethodImplementation(Protocol):
    """Finishes learning a concept and segments with it."""

    def learn(
        self,
        model: Backbone,
        concept: Concept,
        images: list[np.ndarray],
        masks: list[np.ndarray],
        options: dict | None,
    ) -> Concept: ...

    def segment(
        self,
        concept: Concept,
        image: np.ndarray,
        *,
        max_instances: int,
        score_threshold: float | None,
        model: Backbone | None = None,
    ) -> SegmentationResult: ...


def method_implementation(method: str) -> MethodImplementation:
    """The implementation of a method whose :class:`~persam.methods.MethodSpec` is not a cascade.

    Raises:
        ValueError: a cascade method (PerSAM, PerSAM-F), which has none.
    """
    spec = method_spec(method)
    if spec.name == "candidates":
        from persam.everything.method import CANDIDATES

        return CANDIDATES
    raise ValueError(f"method {method!r} is a PerSAM cascade and has no separate implementation")
