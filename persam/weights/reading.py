"""Reading a checkpoint file as a flat ``{key: tensor}`` state dict, with one-line errors for
files that are missing, damaged, or not checkpoints at all."""

from __future__ import annotations

import argparse
import contextlib
import io
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from persam.errors import WeightsError, first_line
from persam.weights.cache import PathLike, check_file

if TYPE_CHECKING:  # torch is imported lazily: listing or locating checkpoints must stay cheap
    from torch import Tensor


def _torch_reason(e: BaseException) -> str:
    """The useful part of a ``torch.load`` error, in one line.

    torch wraps unpickling problems in paragraphs of advice (re-run with ``weights_only=False``,
    file an issue, ...) that do not apply to a damaged file and should not reach the user.
    """
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|Check the documentation|$)", text, re.S)
    if m:
        return " ".join(m.group(1).split())[:200]
    line = first_line(e, max_len=200)
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
            # The weights-only unpickler refuses anything that would import or call code (a
            # pickle whose __reduce__ runs os.system, say): that file is unsafe, not damaged.
            m = re.search(r"GLOBAL ([\w.]+)", str(e))
            if m or re.search(
                r"unsupported global|not an allowed global|call reduce|is blocked", str(e), re.I
            ):
                what = m.group(1) if m else _torch_reason(e)
                raise WeightsError(
                    f"{label}: holds code or Python objects that cannot be loaded safely ({what}); "
                    "it was not loaded: expected a plain state dict"
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
    check_file(p)
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
                member = wrapped_member(zf)
                if member is not None:
                    label = f"{p} (member {member.filename})"
                    source = io.BytesIO(zf.read(member))
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise WeightsError(f"{p}: is truncated or corrupt ({first_line(e, max_len=200)})") from None
    return _unwrap(_load_object(source, label), label)


def is_torch_archive(names: list[str]) -> bool:
    """A ``torch.save`` file is itself a zip: one top folder holding ``data.pkl``."""
    return any(n.endswith("data.pkl") and n.count("/") == 1 for n in names)


def wrapped_member(zf: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    """The single checkpoint file inside a plain zip archive (``None`` for a torch archive)."""
    if is_torch_archive(zf.namelist()):
        return None
    members = [
        m
        for m in zf.infolist()
        if not m.is_dir()
        and not m.filename.startswith("__MACOSX/")
        and Path(m.filename).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt")
    ]
    return members[0] if len(members) == 1 else None
