"""The personalisation methods and the spellings accepted for them.

Kept free of heavy imports: the command line parses ``--method`` with it before loading torch.
"""

from __future__ import annotations

#: Canonical method names: training-free PerSAM and PerSAM-F (two fitted mask weights).
METHODS = ("persam", "persam_f")


def normalize_method(method: str) -> str:
    """The canonical name of ``method``: ``"persam"`` or ``"persam_f"``, whatever the case and
    with ``-`` or ``_`` (``"PerSAM-F"``, ``"persam-f"`` and ``"persam_f"`` are all ``"persam_f"``).

    Raises:
        ValueError: any other method.
    """
    canonical = str(method).strip().lower().replace("-", "_")
    if canonical not in METHODS:
        raise ValueError(f"method must be one of {METHODS} (or persam-f), got {method!r}")
    return canonical
