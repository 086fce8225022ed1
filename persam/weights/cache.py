"""The local checkpoint cache: its location, the sha256 digests of its files, and verification.

Downloaded files live in ``cache_dir() / "checkpoints"`` under their official file names, so a file
fetched by hand can simply be placed there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from persam.errors import WeightsError
from persam.weights.catalog import CHECKPOINTS, CheckpointInfo, as_info

PathLike = str | os.PathLike

_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Root of persam's cache: ``$PERSAM_HOME``, else the platform's user cache folder + ``persam``.

    Linux and others: ``$XDG_CACHE_HOME/persam`` or ``~/.cache/persam``; macOS:
    ``~/Library/Caches/persam``; Windows: ``%LOCALAPPDATA%\\persam``. Nothing is created here.
    """
    home = os.environ.get("PERSAM_HOME")
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else Path.home() / "AppData" / "Local") / "persam"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "persam"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "persam"


def checkpoints_dir() -> Path:
    """Folder holding downloaded checkpoints: ``cache_dir() / "checkpoints"``."""
    return cache_dir() / "checkpoints"


def cache_location(name_or_info: str | CheckpointInfo) -> Path:
    """Where the checkpoint is (or would be) stored in the cache, whether or not it exists."""
    return checkpoints_dir() / as_info(name_or_info).filename


def cached_path(name: str | CheckpointInfo) -> Path | None:
    """Path of the cached checkpoint ``name``, or ``None`` when it has not been downloaded."""
    path = cache_location(name)
    return path if path.is_file() else None


def cache_state(name: str | CheckpointInfo) -> str:
    """The state of a cached checkpoint without reading it: ``"no"``, ``"yes"`` (its size is the
    published one; ``persam weights verify`` checks the sha256), ``"yes, size not verified"`` (no
    published size), or ``"size mismatch (N of M bytes)"`` (truncated or another file)."""
    info = as_info(name)
    path = cached_path(info)
    if path is None:
        return "no"
    if info.size is None or info.zipped:
        return "yes, size not verified"
    size = path.stat().st_size
    if size != info.size:
        return f"size mismatch ({size} of {info.size} bytes)"
    return "yes"


# ------------------------------------------------------------------------------------------- hashing


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_identity(path: PathLike) -> str:
    """sha256 of a checkpoint file, remembered across runs.

    Hashing ViT-H (2.4 GiB) takes seconds, and concept files only need the identity of the weights,
    so the digest is kept in ``<cache>/hashes.json`` keyed by the file's absolute path, size and
    modification time; a file that changes in any of these is hashed again.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    store = cache_dir() / "hashes.json"
    try:
        known = json.loads(store.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    digest = known.get(key)
    if isinstance(digest, str) and len(digest) == 64:
        return digest
    digest = file_sha256(p)
    known[key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".hashes.{os.getpid()}.json")
        tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
        os.replace(tmp, store)
    except OSError:
        pass  # a read-only cache only costs the hashing time next run
    return digest


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    Attributes:
        path: the file checked.
        name: registry name it was matched to (``None`` if it is not an official file).
        status: ``"ok"`` (digest matches), ``"mismatch"`` or ``"unknown"`` (no published digest).
        actual: sha256 of the file.
        expected: published sha256 (``None`` when unknown).
        size: size of the file in bytes.
    """

    path: Path
    name: str | None
    status: Literal["ok", "mismatch", "unknown"]
    actual: str
    expected: str | None
    size: int

    @property
    def ok(self) -> bool:
        """False only for a known digest that does not match."""
        return self.status != "mismatch"


def _info_for_file(path: Path) -> CheckpointInfo | None:
    for info in CHECKPOINTS.values():
        if path.name in (info.filename, info.download_name):
            return info
    return None


def verify(path_or_name: PathLike | CheckpointInfo) -> VerifyResult:
    """Checks a cached checkpoint (by registry name) or a file against its published sha256.

    A file is matched to a registry entry by its official file name. Files with no published
    digest (or that are not official files) get status ``"unknown"``.
    """
    info: CheckpointInfo | None
    if isinstance(path_or_name, CheckpointInfo) or str(path_or_name) in CHECKPOINTS:
        info = as_info(path_or_name if isinstance(path_or_name, CheckpointInfo) else str(path_or_name))
        path = cached_path(info)
        if path is None:
            raise WeightsError(
                f"{info.name} is not downloaded (expected at {cache_location(info)}); "
                f"run: persam weights download {info.name}"
            )
    else:
        path = Path(path_or_name).expanduser()
        text = str(path_or_name)
        if not path.exists() and "/" not in text and os.sep not in text and not path.suffix:
            # A bare word is a mistyped name more likely than a file.
            raise WeightsError(
                f"{text}: no official checkpoint of that name and no such file "
                f"(known names: {', '.join(CHECKPOINTS)})"
            )
        check_file(path)
        info = _info_for_file(path)
    actual = file_sha256(path)
    expected = None
    # A zipped download is unpacked; its published digest (if any) is that of the archive.
    if info is not None and (not info.zipped or path.name == info.download_name):
        expected = info.sha256
    if info is None or expected is None:
        status: Literal["ok", "mismatch", "unknown"] = "unknown"
    else:
        status = "ok" if actual == expected.lower() else "mismatch"
    return VerifyResult(path, info.name if info else None, status, actual, expected, path.stat().st_size)


def check_file(path: Path) -> None:
    """A :class:`WeightsError` naming ``path`` unless it is an existing file."""
    if not path.exists():
        raise WeightsError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"checkpoint path is not a file: {path}")
