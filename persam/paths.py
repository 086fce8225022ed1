"""Guards that keep a command from writing over its own inputs or over files that are not its own.

Paths are compared by identity (``os.path.samefile`` when both exist, else their resolved form), so
``./a.png``, ``a.png`` and a symlink to it are the same file.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from persam.errors import InputError, OutputPathError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

PathLike = str | os.PathLike


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (or would, once created)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def is_within(path: PathLike, folder: PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies (at any depth) inside it."""
    p = Path(os.path.normcase(os.path.realpath(path)))
    f = Path(os.path.normcase(os.path.realpath(folder)))
    return p == f or f in p.parents


def check_not_input(
    output: PathLike, inputs: Mapping[str, Iterable[PathLike | None]], what: str = "output"
) -> None:
    """Raises :class:`OutputPathError` when ``output`` is one of ``inputs`` (option -> paths).

    Writing there would destroy the very file the command reads, so there is no override.
    """
    for option, paths in inputs.items():
        for p in paths:
            if p is not None and same_file(output, p):
                raise OutputPathError(
                    f"{output}: {what} would overwrite the input {option} {p}; choose another {what} path"
                )


def list_images(targets: list[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Expands files, folders (non-recursive, sorted) and glob patterns into a list of image paths."""

    if isinstance(targets, (str, os.PathLike)):
        targets = [targets]
    out: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            out.append(p)
        else:
            matches = sorted(glob.glob(str(t)))
            if not matches:
                raise InputError(f"{t}: no such file, folder or glob match")
            out.extend(Path(m) for m in matches if Path(m).is_file())
    # A file named twice (``photos/ photos/a.jpg``, ``a.jpg ./a.jpg``) is listed once, first place kept.
    seen: set[str] = set()
    unique: list[Path] = []
    for q in out:
        key = os.path.normcase(os.path.realpath(q))
        if key not in seen:
            seen.add(key)
            unique.append(q)
    return unique
