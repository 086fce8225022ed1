"""Resumable, verified downloads of official checkpoints, and turning a ``checkpoint`` argument
(``"auto"`` or a path) into an existing file."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

from persam.errors import InputError, UnverifiedCheckpointWarning, WeightsError, first_line
from persam.io import atomic_path, check_output_dir
from persam.weights.cache import PathLike, cached_path, check_file, checkpoints_dir, file_sha256
from persam.weights.catalog import CHECKPOINTS, CheckpointInfo, as_info, format_size
from persam.weights.reading import is_torch_archive, wrapped_member

_CHUNK = 1 << 20
_USER_AGENT = "persam-weights/0.1 (+python-urllib)"


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


def _unzip_checkpoint(archive: Path, final: Path) -> None:
    """Extracts the checkpoint wrapped in ``archive`` to ``final`` (atomically), then removes ``archive``."""
    problem = None
    try:
        with zipfile.ZipFile(archive) as zf:
            torch_file = is_torch_archive(zf.namelist())
            member = None if torch_file else wrapped_member(zf)
            if member is not None:
                with atomic_path(final) as tmp, zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            elif not torch_file:
                problem = "expected a zip archive holding one .pt file"
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        torch_file, problem = False, f"not a valid zip archive ({first_line(e, max_len=200)})"
    if torch_file:  # the server sent the checkpoint itself, not zipped
        os.replace(archive, final)
        return
    archive.unlink()
    if problem is not None:
        raise WeightsError(f"{archive.name}: {problem}; the download was removed")


def _make_dest(dest: Path) -> list[Path]:
    """Creates the download folder; returns the folders it created (deepest first)."""
    try:
        check_output_dir(dest)
    except InputError as e:
        raise WeightsError(f"cannot download into {dest}: {first_line(e)}") from None
    created = []
    p = dest
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"{dest}: cannot create folder ({e.strerror or type(e).__name__})") from None
    return created


def _remove_empty(created: list[Path]) -> None:
    """Removes the folders a failed download created, if it left nothing in them."""
    for d in created:
        try:
            d.rmdir()
        except OSError:
            return


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
    info = as_info(name_or_info)
    if url is not None:
        info = replace(info, url=url)
    dest = Path(dest_dir).expanduser() if dest_dir is not None else checkpoints_dir()
    final = dest / info.filename
    if final.is_file() and (info.size is None or info.zipped or final.stat().st_size == info.size):
        return final
    created = _make_dest(dest)
    # A mirror may name the file differently; only a zip archive keeps its own name until unpacked.
    fetched = dest / info.download_name if info.zipped else final
    part = fetched.with_name(fetched.name + ".part")
    if info.zipped and fetched.is_file():  # downloaded before, but not unpacked yet
        _unzip_checkpoint(fetched, final)
        return final

    try:
        digest = _fetch(info.url, part, info.size, progress, timeout, fetched.name)
    except _DownloadFailed as e:
        kept = part.is_file() and part.stat().st_size > 0
        resume = " (partial download kept; run again to resume)" if kept else ""
        _remove_empty(created)
        raise WeightsError(
            f"cannot download {info.name} from {info.url}: {e.reason}{resume}. "
            f"Download it by hand and pass --checkpoint PATH, or place it at {final}"
        ) from None
    except BaseException:
        _remove_empty(created)
        raise

    size = part.stat().st_size
    if info.size is not None and size != info.size:
        part.unlink()
        _remove_empty(created)
        raise WeightsError(
            f"{fetched.name}: downloaded {size} bytes from {info.url}, expected {info.size}; "
            "the incomplete file was removed"
        )
    if info.sha256 is not None and digest != info.sha256.lower():
        part.unlink()
        _remove_empty(created)
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
    check_file(path)
    return path
