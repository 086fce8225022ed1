"""Official checkpoints: registry, local cache, download, and loading with clear errors.

The registry names are the model registry names (``sam_vit_h``, ``mobile_sam_vit_t``,
``efficient_sam_vit_s``, ...). Downloaded files live in ``cache_dir() / "checkpoints"`` under their
official file names, so a file fetched by hand can simply be placed there.

Loading is split in two steps so that a model builder can report problems precisely:
:func:`read_state_dict` turns a file into a flat ``{key: tensor}`` dict (unwrapping the usual
containers), and :func:`load_into` loads it strictly into a module, explaining a mismatch in one
line (e.g. a ViT-B checkpoint handed to a ViT-H model).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import json
import os
import pickle
import re
import shutil
import socket
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from persam.errors import UnverifiedCheckpointWarning, WeightsError, first_line
from persam.io import atomic_path

if TYPE_CHECKING:  # torch is imported lazily: listing or locating checkpoints must stay cheap
    from torch import Tensor, nn

PathLike = str | os.PathLike

_CHUNK = 1 << 20
_USER_AGENT = "persam-weights/0.1 (+python-urllib)"


@dataclass(frozen=True)
class CheckpointInfo:
    """One downloadable checkpoint.

    Attributes:
        name: registry name (the name of the model the weights belong to).
        model: the architecture, in words.
        filename: name of the checkpoint file in the cache (after unpacking, for zipped downloads).
        url: where to download it; the last path component is the name of the downloaded file.
        sha256: hex digest of the downloaded file, ``None`` when no digest is published.
        size: size in bytes of the downloaded file, ``None`` when unknown.
        description: one-line description.
    """

    name: str
    model: str
    filename: str
    url: str
    sha256: str | None
    size: int | None
    description: str

    @property
    def download_name(self) -> str:
        """File name of the download itself (differs from ``filename`` for a zipped checkpoint)."""
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(self.url).path)).name
        return name or self.filename

    @property
    def zipped(self) -> bool:
        """Whether the download is a zip archive wrapping ``filename``."""
        return self.download_name != self.filename and self.download_name.lower().endswith(".zip")


_SAM = "https://dl.fbaipublicfiles.com/segment_anything/"

CHECKPOINTS: dict[str, CheckpointInfo] = {
    info.name: info
    for info in (
        CheckpointInfo(
            name="sam_vit_h",
            model="SAM ViT-H",
            filename="sam_vit_h_4b8939.pth",
            url=_SAM + "sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            size=2_564_550_879,
            description="Segment Anything, ViT-H image encoder (Meta AI)",
        ),
        CheckpointInfo(
            name="sam_vit_l",
            model="SAM ViT-L",
            filename="sam_vit_l_0b3195.pth",
            url=_SAM + "sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            size=1_249_524_607,
            description="Segment Anything, ViT-L image encoder (Meta AI)",
        ),
        CheckpointInfo(
            name="sam_vit_b",
            model="SAM ViT-B",
            filename="sam_vit_b_01ec64.pth",
            url=_SAM + "sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            size=375_042_383,
            description="Segment Anything, ViT-B image encoder (Meta AI)",
        ),
        CheckpointInfo(
            name="mobile_sam_vit_t",
            model="MobileSAM ViT-T",
            filename="mobile_sam.pt",
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            size=40_728_226,
            description="MobileSAM: TinyViT image encoder distilled from SAM ViT-H, SAM decoder",
        ),
        CheckpointInfo(
            name="efficient_sam_vit_t",
            model="EfficientSAM ViT-T",
            filename="efficient_sam_vitt.pt",
            url="https://github.com/yformer/EfficientSAM/raw/main/weights/efficient_sam_vitt.pt",
            sha256=None,
            size=None,
            description="EfficientSAM-Ti: ViT-Tiny image encoder trained with SAMI",
        ),
        CheckpointInfo(
            name="efficient_sam_vit_s",
            model="EfficientSAM ViT-S",
            filename="efficient_sam_vits.pt",
            url="https://github.com/yformer/EfficientSAM/raw/main/weights/efficient_sam_vits.pt.zip",
            sha256=None,
            size=None,
            description="EfficientSAM-S: ViT-Small image encoder trained with SAMI (ships zipped)",
        ),
    )
}


def checkpoint_names() -> list[str]:
    """Registry names of the official checkpoints, in registry order."""
    return list(CHECKPOINTS)


def get_info(name: str) -> CheckpointInfo:
    """The registry entry ``name``; :class:`WeightsError` listing the known names otherwise."""
    try:
        return CHECKPOINTS[name]
    except KeyError:
        raise WeightsError(
            f"no official checkpoint named {name!r} (known: {', '.join(CHECKPOINTS)})"
        ) from None


def _as_info(name_or_info: str | CheckpointInfo) -> CheckpointInfo:
    return name_or_info if isinstance(name_or_info, CheckpointInfo) else get_info(name_or_info)


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
    return checkpoints_dir() / _as_info(name_or_info).filename


def cached_path(name: str | CheckpointInfo) -> Path | None:
    """Path of the cached checkpoint ``name``, or ``None`` when it has not been downloaded."""
    path = cache_location(name)
    return path if path.is_file() else None


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
        info = _as_info(path_or_name if isinstance(path_or_name, CheckpointInfo) else str(path_or_name))
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
        _check_file(path)
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


# ------------------------------------------------------------------------------------------ download


def format_size(n: int | None) -> str:
    """``375042383`` -> ``"357.7 MiB"``; ``None`` -> ``"?"``."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _reason(e: BaseException) -> str:
    """A short, single-line reason for a network failure."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}".strip()
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):
            return str(e.reason).splitlines()[0]
        e = e.reason
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host ({e.strerror or e})"
    if isinstance(e, TimeoutError):
        return "connection timed out"
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0]


class _DownloadFailed(Exception):
    """Internal: a network failure; ``partial`` tells whether resumable bytes were kept."""

    def __init__(self, reason: str, partial: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` or ``bytes */TOTAL`` -> (START, TOTAL); unknown parts are None."""
    m = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch(
    url: str, part: Path, expected_size: int | None, progress: bool, timeout: float, label: str
) -> str:
    """Downloads ``url`` into ``part``, resuming from what ``part`` already holds; returns the sha256.

    Raises :class:`_DownloadFailed` on network errors (the part file is kept for a later resume).
    """
    from tqdm import tqdm

    if expected_size is not None and part.is_file() and part.stat().st_size > expected_size:
        part.unlink()  # longer than the real file: not a prefix of it
    for _attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset > 0:
                # Nothing left to send from `offset`: either the part is complete or it is stale.
                _, total = _parse_content_range(e.headers.get("Content-Range"))
                e.close()
                if offset == (total if total is not None else expected_size):
                    return file_sha256(part)
                part.unlink()
                continue
            raise _DownloadFailed(_reason(e)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _DownloadFailed(_reason(e), partial=offset > 0) from None
        with response:
            status = response.status
            if status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != offset:
                    part.unlink(missing_ok=True)
                    continue
            else:
                offset, total = 0, None  # the server ignored Range: start over
            length = response.headers.get("Content-Length")
            remaining = int(length) if length and length.isdigit() else None
            if total is None and remaining is not None:
                total = offset + remaining
            if total is None:
                total = expected_size
            elif expected_size is not None and total != expected_size:
                # Not the file we want (an error page, another version): stop before fetching it.
                part.unlink(missing_ok=True)
                raise WeightsError(
                    f"{label}: {url} offers {total} bytes, expected {expected_size}; nothing was kept"
                )
            h = hashlib.sha256()
            if offset:
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
            written = offset
            bar = tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
            )
            with bar, open(part, "ab" if offset else "wb") as out:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _DownloadFailed(
                            f"connection lost after {format_size(written)} of {format_size(total)} "
                            f"({_reason(e)})",
                            partial=True,
                        ) from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise WeightsError(f"cannot write {part}: {e.strerror or e}") from None
                    h.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            if total is not None and written < total:
                raise _DownloadFailed(
                    f"connection closed after {format_size(written)} of {format_size(total)}", partial=True
                )
            return h.hexdigest()
    raise _DownloadFailed("the server does not answer range requests consistently")


def _is_torch_archive(names: list[str]) -> bool:
    """A ``torch.save`` file is itself a zip: one top folder holding ``data.pkl``."""
    return any(n.endswith("data.pkl") and n.count("/") == 1 for n in names)


def _wrapped_member(zf: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    """The single checkpoint file inside a plain zip archive (``None`` for a torch archive)."""
    if _is_torch_archive(zf.namelist()):
        return None
    members = [
        m
        for m in zf.infolist()
        if not m.is_dir()
        and not m.filename.startswith("__MACOSX/")
        and Path(m.filename).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt")
    ]
    return members[0] if len(members) == 1 else None


def _unzip_checkpoint(archive: Path, final: Path) -> None:
    """Extracts the checkpoint wrapped in ``archive`` to ``final`` (atomically), then removes ``archive``."""
    problem = None
    try:
        with zipfile.ZipFile(archive) as zf:
            torch_file = _is_torch_archive(zf.namelist())
            member = None if torch_file else _wrapped_member(zf)
            if member is not None:
                with atomic_path(final) as tmp, zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            elif not torch_file:
                problem = "expected a zip archive holding one .pt file"
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        torch_file, problem = False, f"not a valid zip archive ({_first_line(e)})"
    if torch_file:  # the server sent the checkpoint itself, not zipped
        os.replace(archive, final)
        return
    archive.unlink()
    if problem is not None:
        raise WeightsError(f"{archive.name}: {problem}; the download was removed")


def download(
    name_or_info: str | CheckpointInfo,
    dest_dir: PathLike | None = None,
    *,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Downloads a checkpoint into ``dest_dir`` (default: the cache) and returns its path.

    An existing complete file is returned as is. The download goes to ``<file>.part`` and resumes
    from it (HTTP Range) after an interruption; it is checked against the published size and
    sha256 before being renamed to its final name, so the final name never holds a partial or
    corrupt file. Zipped checkpoints are unpacked. ``url`` replaces the registry URL (a mirror).

    Raises:
        WeightsError: unknown name, network failure, or a file that fails verification.
    """
    info = _as_info(name_or_info)
    if url is not None:
        info = replace(info, url=url)
    dest = Path(dest_dir).expanduser() if dest_dir is not None else checkpoints_dir()
    final = dest / info.filename
    if final.is_file() and (info.size is None or info.zipped or final.stat().st_size == info.size):
        return final
    dest.mkdir(parents=True, exist_ok=True)
    # A mirror may name the file differently; only a zip archive keeps its own name until unpacked.
    fetched = dest / info.download_name if info.zipped else final
    part = fetched.with_name(fetched.name + ".part")
    if info.zipped and fetched.is_file():  # downloaded before, but not unpacked yet
        _unzip_checkpoint(fetched, final)
        return final

    try:
        digest = _fetch(info.url, part, info.size, progress, timeout, fetched.name)
    except _DownloadFailed as e:
        resume = " (partial download kept; run again to resume)" if e.partial else ""
        raise WeightsError(
            f"cannot download {info.name} from {info.url}: {e.reason}{resume}. "
            f"Download it by hand and pass --checkpoint PATH, or place it at {final}"
        ) from None

    size = part.stat().st_size
    if info.size is not None and size != info.size:
        part.unlink()
        raise WeightsError(
            f"{fetched.name}: downloaded {size} bytes from {info.url}, expected {info.size}; "
            "the incomplete file was removed"
        )
    if info.sha256 is not None and digest != info.sha256.lower():
        part.unlink()
        raise WeightsError(
            f"{fetched.name}: sha256 mismatch (expected {info.sha256}, got {digest}); "
            "the corrupt download was removed"
        )
    if info.sha256 is None:
        warnings.warn(
            f"{fetched.name}: no published sha256 is known, the download was not verified (sha256 {digest})",
            UnverifiedCheckpointWarning,
            stacklevel=2,
        )
    os.replace(part, fetched)
    if info.zipped:
        _unzip_checkpoint(fetched, final)
    return final


# ---------------------------------------------------------------------------------------- resolving


def _check_file(path: Path) -> None:
    if not path.exists():
        raise WeightsError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"checkpoint path is not a file: {path}")


def resolve_checkpoint(model_name: str | None, checkpoint: PathLike) -> Path:
    """Turns a ``checkpoint`` argument into an existing file.

    ``"auto"`` means the official checkpoint of ``model_name``: the cached file, downloaded first
    if needed. Anything else is a path that must exist.
    """
    if str(checkpoint) == "auto":
        if model_name is None:
            raise WeightsError(
                "checkpoint 'auto' needs a model name (see 'persam weights list') to pick the official "
                "checkpoint; for a model config pass a checkpoint path, or 'none' for random weights"
            )
        if model_name not in CHECKPOINTS:
            raise WeightsError(
                f"no official checkpoint for model {model_name!r} (known: {', '.join(CHECKPOINTS)}); "
                "pass a checkpoint path"
            )
        info = CHECKPOINTS[model_name]
        path = cached_path(info)
        if path is None:
            return download(info)
        if info.size is not None and not info.zipped and path.stat().st_size != info.size:
            raise WeightsError(
                f"cached checkpoint {path} has {path.stat().st_size} bytes, expected {info.size}; "
                f"delete it and run: persam weights download {info.name}"
            )
        return path
    path = Path(checkpoint).expanduser()
    _check_file(path)
    return path


# ------------------------------------------------------------------------------------------ reading


def _first_line(e: BaseException) -> str:
    return first_line(e, max_len=200)


def _torch_reason(e: BaseException) -> str:
    """The useful part of a ``torch.load`` error, in one line.

    torch wraps unpickling problems in paragraphs of advice (re-run with ``weights_only=False``,
    file an issue, ...) that do not apply to a damaged file and should not reach the user.
    """
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|Check the documentation|$)", text, re.S)
    if m:
        return " ".join(m.group(1).split())[:200]
    line = _first_line(e)
    # "PytorchStreamReader failed ...: failed finding central directory. This is an internal ..."
    return line.split(". ")[0].rstrip(".")


_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x7fELF", "a program"),
    (b"%PDF", "a PDF document"),
)


def _not_a_checkpoint(head: bytes) -> str | None:
    """What a file is, from its first bytes, when it is clearly not a ``torch.save`` file.

    ``torch.save`` writes a zip archive (``PK``) or, in the legacy format, a pickle (``0x80``).
    """
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file (convert it to a state dict saved with torch.save)"
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return "an HTML or XML page (an error page saved instead of the file?)"
    for cut in range(4):  # the 64-byte head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return "a text file" if all(c.isprintable() or c in "\t\r\n" for c in text) else None
    return None


def _load_object(source: Path | io.BytesIO, label: str) -> object:
    import torch

    # Training scripts often store their argparse namespace beside the weights; it is harmless.
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    allow = safe_globals([argparse.Namespace]) if safe_globals is not None else contextlib.nullcontext()
    with allow:
        try:
            return torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Unsupported global" in str(e) or "not an allowed global" in str(e):
                m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
                what = m.group(1) if m else _first_line(e)
                raise WeightsError(
                    f"{label}: holds Python objects that cannot be loaded safely ({what}); "
                    "expected a plain state dict"
                ) from None
            raise WeightsError(f"{label}: is truncated or corrupt ({_torch_reason(e)})") from None
        except (
            RuntimeError,
            EOFError,
            ValueError,
            OSError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            zipfile.BadZipFile,
            struct.error,
        ) as e:
            raise WeightsError(f"{label}: is truncated or corrupt ({_torch_reason(e)})") from None


def _unwrap(obj: object, label: str) -> dict[str, Tensor]:
    import torch

    for _ in range(3):  # e.g. {"model": {...}}, {"state_dict": {...}}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{label}: is not a state dict (it holds a {type(obj).__name__})")
    if not obj:
        raise WeightsError(f"{label}: is not a state dict (it is an empty dict)")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{label}: is not a state dict (entry {key!r} is a {type(value).__name__}, not a tensor)"
            )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_state_dict(path: PathLike) -> dict[str, Tensor]:
    """Reads a checkpoint file as a flat ``{key: tensor}`` dict on the CPU.

    Accepts a bare state dict, one nested under ``"model"`` (EfficientSAM) or ``"state_dict"``,
    keys prefixed with ``module.``, and a plain zip archive holding a single ``.pt`` file. Only
    tensors and plain containers are unpickled (``weights_only=True``).

    Raises:
        WeightsError: missing, empty, truncated or corrupt file, or a file that holds no state dict.
    """
    p = Path(path).expanduser()
    _check_file(p)
    if p.stat().st_size == 0:
        raise WeightsError(f"{p}: is empty (0 bytes)")
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise WeightsError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None
    what = _not_a_checkpoint(head)
    if what is not None:
        raise WeightsError(f"{p}: is not a PyTorch checkpoint (it looks like {what})")
    source: Path | io.BytesIO = p
    label = str(p)
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                member = _wrapped_member(zf)
                if member is not None:
                    label = f"{p} (member {member.filename})"
                    source = io.BytesIO(zf.read(member))
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise WeightsError(f"{p}: is truncated or corrupt ({_first_line(e)})") from None
    return _unwrap(_load_object(source, label), label)


# ------------------------------------------------------------------------------------------ loading


def _shape(t: Tensor) -> str:
    return "[" + ",".join(str(s) for s in t.shape) + "]"


_SAM_DIMS = {768: "sam_vit_b", 1024: "sam_vit_l", 1280: "sam_vit_h"}
_EFFICIENT_SAM_DIMS = {192: "efficient_sam_vit_t", 384: "efficient_sam_vit_s"}
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"


def infer_model_name(state_dict: Mapping[str, Tensor]) -> str | None:
    """Guesses which registry model a state dict belongs to from characteristic keys and shapes.

    Returns e.g. ``"sam_vit_b"``, ``"mobile_sam_vit_t"``, ``"efficient_sam_vit_s"``, or ``None``.
    """
    patch = state_dict.get(_PATCH_KEY)
    dim = int(patch.shape[0]) if patch is not None and patch.dim() == 4 else None
    if any(k.startswith("mask_decoder.final_output_upscaling_layers.") for k in state_dict):
        return _EFFICIENT_SAM_DIMS.get(dim) if dim is not None else None
    if any(k.startswith("image_encoder.layers.") for k in state_dict):
        return "mobile_sam_vit_t"
    if dim is not None and "mask_decoder.output_upscaling.0.weight" in state_dict:
        return _SAM_DIMS.get(dim)
    return None


def _differs(got: Tensor | None, want: Tensor) -> bool:
    return got is not None and got.shape != want.shape


def _first_shape_mismatch(
    expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]
) -> tuple[str, Tensor, Tensor] | None:
    mismatches = [(k, state_dict[k], t) for k, t in expected.items() if _differs(state_dict.get(k), t)]
    # The patch embedding is the most telling difference between encoder sizes.
    mismatches.sort(key=lambda m: m[0] != _PATCH_KEY)
    return mismatches[0] if mismatches else None


def describe_mismatch(expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]) -> str | None:
    """Missing / unexpected keys and shape differences between two state dicts, in one line."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    n_shape = sum(1 for k, t in expected.items() if _differs(state_dict.get(k), t))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key{'s' * (len(missing) != 1)} (first: {missing[0]})")
    if unexpected:
        n = len(unexpected)
        parts.append(f"{n} unexpected key{'s' * (n != 1)} (first: {unexpected[0]})")
    first = _first_shape_mismatch(expected, state_dict)
    if first is not None:
        key, got, want = first
        parts.append(
            f"{n_shape} shape mismatch{'es' * (n_shape != 1)} (first: {key} is {_shape(got)}, "
            f"expected {_shape(want)})"
        )
    return ", ".join(parts) if parts else None


def load_into(module: nn.Module, state_dict: Mapping[str, Tensor], path: PathLike, model_name: str) -> None:
    """Loads ``state_dict`` (read from ``path``) into ``module`` strictly.

    Modules built on the ``meta`` device get the checkpoint tensors assigned instead of copied.

    Raises:
        WeightsError: naming the file and the problem, e.g. ``sam_vit_b_01ec64.pth is not a
            sam_vit_h checkpoint: it looks like sam_vit_b (shape of ... is [768,3,16,16], expected
            [1280,3,16,16])``.
    """
    name = Path(path).name
    expected = module.state_dict()
    problem = describe_mismatch(expected, state_dict)
    if problem is not None:
        guess = infer_model_name(state_dict)
        if guess is not None and guess != model_name:
            first = _first_shape_mismatch(expected, state_dict)
            if first is not None:
                key, got, want = first
                why = f"shape of {key} is {_shape(got)}, expected {_shape(want)}"
            else:
                why = problem
            article = "an" if model_name[:1] in tuple("aeiou") else "a"
            raise WeightsError(
                f"{name} is not {article} {model_name} checkpoint: it looks like {guess} ({why})"
            )
        raise WeightsError(f"{name} does not fit {model_name}: {problem}")
    on_meta = any(t.is_meta for t in expected.values())
    try:
        module.load_state_dict(dict(state_dict), strict=True, assign=on_meta)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        raise WeightsError(f"{name} cannot be loaded into {model_name}: {_first_line(e)}") from None
