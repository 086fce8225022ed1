"""The personalisation methods and the spellings accepted for them.

Kept free of heavy imports: the command line parses ``--method`` with it before loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Canonical method names: training-free PerSAM, PerSAM-F (two fitted mask weights) and
#: "candidates" (segment everything, then keep the masks that show the concept).
METHODS = ("persam", "persam_f", "candidates")
#: The methods that segment with the PerSAM decoder cascade (on an image already encoded).
CASCADE_METHODS = ("persam", "persam_f")


def normalize_method(method: str) -> str:
    """The canonical name of ``method`` (one of :data:`METHODS`), whatever the case and with ``-``
    or ``_`` (``"PerSAM-F"``, ``"persam-f"`` and ``"persam_f"`` are all ``"persam_f"``).

    Raises:
        ValueError: any other method.
    """
    canonical = str(method).strip().lower().replace("-", "_")
    if canonical not in METHODS:
        raise ValueError(f"method must be one of {METHODS} (or persam-f), got {method!r}")
    return canonical


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """What sets one method apart; every step that differs between the methods reads it here.

    Attributes:
        name: canonical name.
        feature_reduce: how the reference cells pool into the object feature (``"mean"`` or
            ``"mean_max"``, see :func:`persam.personalize.reference.target_embedding`).
        negative_point: the location prior adds the least similar pixel as a negative point.
        fits_mask_weights: two weights blending the decoder's three masks are fitted on the
            reference and the cascade starts from the blend (PerSAM-F); otherwise the first
            decoder call gets the target-guided attention and target-semantic prompt (PerSAM).
        cascade: the method segments with the PerSAM cascade; the others (``candidates``) have
            their own code, found by :func:`persam.personalize.methods.method_implementation`.
    """

    name: str
    feature_reduce: str
    negative_point: bool
    fits_mask_weights: bool
    cascade: bool = True


_SPECS = {
    "persam": MethodSpec(name="persam", feature_reduce="mean", negative_point=True, fits_mask_weights=False),
    "persam_f": MethodSpec(
        name="persam_f",
        feature_reduce="mean_max",
        negative_point=False,
        fits_mask_weights=True,
    ),
    # The concept's mean feature and negative point serve the optional PerSAM refinement of the
    # kept candidates.
    "candidates": MethodSpec(
        name="candidates",
        feature_reduce="mean",
        negative_point=True,
        fits_mask_weights=False,
        cascade=False,
    ),
}


def method_spec(method: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``method`` (any spelling :func:`normalize_method` accepts)."""
    return _SPECS[normalize_method(method)]
