"""Guards that keep a command from writing over its own inputs or over files that are not its own.

Paths are compared by identity (``os.path.samefile`` when both exist, else their resolved form), so
``./a.png``, ``a.png`` and a symlink to it are the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from persam.errors import OutputPathError

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
