"""How large an image persam reads, and how many bits a 16-bit file really uses.

Very large images are refused rather than decoded: a 20000×10000 photo takes 600 MB once decoded,
and a small file can claim a huge size (a "decompression bomb"). The limit is
:data:`DEFAULT_MAX_IMAGE_PIXELS`, changed by the ``PERSAM_MAX_IMAGE_PIXELS`` environment variable
or ``--max-image-pixels`` (:func:`set_max_image_pixels`; 0 removes it). A JPEG over the limit is
not refused but decoded at 1/2, 1/4 or 1/8 of its size (the decoder's own reduced-size mode), the
largest that fits; its outputs then have that reduced size.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
from pathlib import Path

from PIL import Image

from persam.errors import InputError

ENV_VAR = "PERSAM_MAX_IMAGE_PIXELS"
# Far above any camera photo (a 100-megapixel frame is 300 MB as RGB), far below what exhausts memory.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000

_override: int | None = None
_pil_guard = threading.Lock()


def set_max_image_pixels(limit: int | None) -> None:
    """Sets the pixel limit for this process (None: back to the environment / default; 0: none)."""
    global _override
    _override = limit


def max_image_pixels() -> int:
    """The pixel limit in force (0: none)."""
    if _override is not None:
        return _override
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(f"{ENV_VAR}={text!r}: expected a number of pixels") from None
    return max(value, 0)


def _limit_hint() -> str:
    return f"set {ENV_VAR} or --max-image-pixels to read it"


def open_within_limit(path: Path | io.BytesIO, name: str | None = None) -> Image.Image:
    """Opens an image file or in-memory file (header only) within the pixel limit, reading a
    too-large JPEG at reduced size; a too-large image of another format is an :class:`InputError`
    naming ``name`` (default: ``path``)."""
    limit = max_image_pixels()
    shown_name = name if name is not None else path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            m = re.search(r"\((\d+) pixels\)", str(e))
            pixels = int(m.group(1)) if m else None
            if limit and (pixels is None or pixels > limit):
                shown = f"{pixels / 1e6:.1f} megapixels" if pixels else "too many pixels"
                raise InputError(
                    f"{shown_name}: image has {shown}, over the limit of {limit / 1e6:g} megapixels "
                    f"({_limit_hint()})"
                ) from None
            im = _open_unguarded(path, limit)
    w, h = im.size
    if not limit or w * h <= limit:
        return im
    if im.format == "JPEG":
        for scale in (2, 4, 8):
            if (w // scale) * (h // scale) <= limit:
                im.draft(im.mode, (-(-w // scale), -(-h // scale)))
                if im.size[0] * im.size[1] <= limit:
                    return im
                break
    im.close()
    raise InputError(
        f"{shown_name}: image is {w}×{h} pixels ({w * h / 1e6:.1f} megapixels), over the limit of "
        f"{limit / 1e6:g} megapixels ({_limit_hint()})"
    )


def _open_unguarded(path: Path | io.BytesIO, limit: int) -> Image.Image:
    """Opens an image Pillow's own guard refuses but the configured limit allows."""
    if isinstance(path, io.BytesIO):
        path.seek(0)
    with _pil_guard:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit or None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def png_significant_bits(path: Path | bytes) -> int | None:
    """The bit depth a PNG declares its samples use (its ``sBIT`` chunk), or None.

    A 12-bit camera image stored in a 16-bit PNG says 12 there; scaled as 16 bits it looks black.
    """
    try:
        with io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            for _ in range(64):  # sBIT comes before the image data, among the first chunks
                head = f.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IDAT":
                    return None
                data = f.read(length)
                f.seek(4, os.SEEK_CUR)
                if kind == b"sBIT" and data:
                    bits = max(data[:3]) if len(data) >= 3 else data[0]
                    return bits if 1 <= bits <= 16 else None
    except OSError:
        return None
    return None
