"""Files by local path or by any URI pyarrow opens (``s3://``, ``gs://``, ``hdfs://``, ``file://``).

Plain paths take the local engine's code paths unchanged. A URI is read with pyarrow's filesystem
of its scheme; outputs for a URI are written under a local folder by the local writers first and
then copied to the destination under a temporary name and moved into place, so a reader there
never sees a half-written file.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from persam.io import IMAGE_EXTENSIONS, InputError, list_images

_GLOB_CHARS = "*?["


def is_uri(target: str | os.PathLike) -> bool:
    return "://" in str(target)


@functools.lru_cache(maxsize=16)
def _filesystem(scheme_and_host: str) -> Any:
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(scheme_and_host + "/")[0]


def split_uri(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path within it)`` of a URI; one filesystem object per scheme and host."""
    from pyarrow import fs as pafs

    parsed = urlparse(uri)
    try:
        if parsed.scheme == "file":
            return pafs.LocalFileSystem(), parsed.path
        fs = _filesystem(f"{parsed.scheme}://{parsed.netloc}")
        return fs, fs.normalize_path(f"{parsed.netloc}{parsed.path}".rstrip("/"))
    except (OSError, ValueError) as e:
        raise InputError(f"{uri}: cannot open ({str(e).splitlines()[0]})") from None


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass(frozen=True)
class Source:
    """One input file: ``label`` names it in messages and reports (the path or URI as given)."""

    label: str

    @property
    def local(self) -> bool:
        return not is_uri(self.label)

    def fs_path(self) -> str:
        return self.label if self.local else split_uri(self.label)[1]

    def read_bytes(self) -> bytes:
        """The file's bytes; a missing or unreadable file is a one-line :class:`InputError`."""
        if self.local:
            p = Path(self.label)
            if not p.exists():
                raise InputError(f"{p}: file not found")
            if p.is_dir():
                raise InputError(f"{p}: is a directory, expected an image file")
            try:
                return p.read_bytes()
            except OSError as e:
                raise InputError(f"{p}: cannot read ({e.strerror or type(e).__name__})") from None
        fs, path = split_uri(self.label)
        try:
            with fs.open_input_file(path) as f:
                return f.readall()
        except (OSError, ValueError) as e:
            raise InputError(f"{self.label}: cannot read ({str(e).splitlines()[0]})") from None


def list_sources(targets: list[str | os.PathLike]) -> list[Source]:
    """Image files of every target, in the order of ``list_images``: local files, folders and globs
    as the local engine lists them; URIs of files, folders (non-recursive) and glob patterns."""
    out: list[Source] = []
    for t in targets:
        if is_uri(t):
            out.extend(Source(u) for u in _list_uri(str(t)))
        else:
            out.extend(Source(str(p)) for p in list_images([t]))
    return list({s.label: s for s in out}.values())


def _list_uri(uri: str) -> list[str]:
    from pyarrow import fs as pafs

    fs, path = split_uri(uri)
    prefix = uri[: len(uri) - len(uri.split("://", 1)[1])]  # "s3://", "file://"

    def as_uri(p: str) -> str:
        return prefix + p

    if not any(c in path for c in _GLOB_CHARS):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [uri]
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path))
            return sorted(
                as_uri(i.path)
                for i in infos
                if i.type == pafs.FileType.File and Path(i.base_name).suffix.lower() in IMAGE_EXTENSIONS
            )
        raise InputError(f"{uri}: no such file, folder or glob match")
    parts = path.split("/")
    static = "/".join(parts[: next(i for i, p in enumerate(parts) if any(c in p for c in _GLOB_CHARS))])
    recursive = path.count("/") > static.count("/") + 1
    infos = fs.get_file_info(pafs.FileSelector(static, recursive=recursive, allow_not_found=True))
    matches = sorted(
        as_uri(i.path) for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path)
    )
    if not matches:
        raise InputError(f"{uri}: no such file, folder or glob match")
    return matches


class Destination:
    """An output folder given as a local path or a URI.

    ``local_dir`` is where the local writers write: the folder itself for a path, a staging folder
    for a URI (then :meth:`publish` copies files from it to the URI).
    """

    def __init__(self, target: str | os.PathLike, staging: Path | None = None) -> None:
        self.target = str(target)
        self.remote = is_uri(target)
        if self.remote:
            if staging is None:
                raise ValueError("a URI destination needs a local staging folder")
            self.local_dir = staging
            self.fs, self.root = split_uri(self.target)
        else:
            self.local_dir = Path(target)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.local_dir).as_posix()

    def existing(self) -> set[str] | None:
        """Relative paths of the files under a URI destination (None for a local folder: ask it)."""
        if not self.remote:
            return None
        from pyarrow import fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        except OSError as e:
            raise InputError(f"{self.target}: cannot list ({str(e).splitlines()[0]})") from None
        base = self.root.rstrip("/") + "/"
        return {
            i.path[len(base) :] for i in infos if i.type == pafs.FileType.File and i.path.startswith(base)
        }

    def download(self, rel: str) -> None:
        """Copies ``rel`` from a URI destination into ``local_dir`` if it exists there."""
        if not self.remote:
            return
        from pyarrow import fs as pafs

        src = f"{self.root}/{rel}"
        if self.fs.get_file_info(src).type != pafs.FileType.File:
            return
        with self.fs.open_input_file(src) as f:
            data = f.readall()
        (self.local_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.local_dir / rel).write_bytes(data)

    def publish(self, paths: list[Path], *, keep: bool = False) -> None:
        """Copies staged files to a URI destination (under a temporary name, then moved) and removes
        the staged copies unless ``keep``; nothing to do for a local folder."""
        if not self.remote:
            return
        for p in paths:
            rel = self.relative(p)
            dst = f"{self.root}/{rel}"
            tmp = f"{dst.rsplit('/', 1)[0]}/.{rel.rsplit('/', 1)[-1]}.{secrets.token_hex(4)}.part"
            try:
                self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
                with self.fs.open_output_stream(tmp) as f:
                    f.write(p.read_bytes())
                self.fs.move(tmp, dst)
            except OSError as e:
                try:
                    self.fs.delete_file(tmp)
                except OSError:
                    pass
                raise InputError(
                    f"{join_uri(self.target, rel)}: cannot write ({str(e).splitlines()[0]})"
                ) from None
            if not keep:
                p.unlink(missing_ok=True)


def fetch(label: str, into: Path) -> Path:
    """A local path for a file or folder: itself when local, else a copy under ``into`` (a folder's
    files, non-recursive)."""
    if not is_uri(label):
        return Path(label)
    from pyarrow import fs as pafs

    fs, path = split_uri(label)
    info = fs.get_file_info(path)
    dst = into / info.base_name
    if info.type == pafs.FileType.File:
        dst.write_bytes(Source(label).read_bytes())
    elif info.type == pafs.FileType.Directory:
        dst.mkdir(parents=True)
        for i in fs.get_file_info(pafs.FileSelector(path)):
            if i.type == pafs.FileType.File:
                with fs.open_input_file(i.path) as f:
                    (dst / i.base_name).write_bytes(f.readall())
    else:
        raise InputError(f"{label}: no such file or folder")
    return dst


def exists(label: str) -> bool:
    """Whether a file exists, by path or URI."""
    if not is_uri(label):
        return Path(label).is_file()
    from pyarrow import fs as pafs

    fs, path = split_uri(label)
    return fs.get_file_info(path).type == pafs.FileType.File
