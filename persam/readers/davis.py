"""DAVIS conventions: the annotation palette and the layout of a sequence."""

from __future__ import annotations

from pathlib import Path

from persam.io import InputError, PathLike


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS / PASCAL VOC annotations (flat ``[r, g, b] * 256``).

    Colour ``i`` spreads the bits of ``i`` over the three channels, most significant bit first.
    """
    out: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        out += [r, g, b]
    return out


DAVIS_PALETTE: list[int] = davis_palette()


def davis_sequence(davis_root: PathLike, sequence: str, resolution: str = "480p") -> tuple[Path, Path]:
    """``(frames folder, first-frame annotation)`` of a DAVIS sequence."""
    root = Path(davis_root)
    frames = root / "JPEGImages" / resolution / sequence
    annotations = root / "Annotations" / resolution / sequence
    if not frames.is_dir():
        raise InputError(f"{frames}: DAVIS frame folder not found")
    pngs = sorted(annotations.glob("*.png")) if annotations.is_dir() else []
    if not pngs:
        raise InputError(f"{annotations}: no first-frame annotation PNG found")
    return frames, pngs[0]
