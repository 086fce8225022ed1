"""Reading images and masks the way users hand them to us, and writing files atomically.

Images of any common kind (grayscale, RGBA, palette, 16-bit, EXIF-rotated JPEGs) become
``uint8 [H, W, 3]`` RGB arrays; masks (bool / 0-1 / 0-255 arrays, binary PNGs, palette PNGs,
RGB-coloured PNGs, transparent cut-outs) become boolean or integer label maps. Every failure is an
:class:`InputError` whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from persam.errors import InputError, OutputPathError
from persam.paths import IMAGE_EXTENSIONS, list_images
from persam.pixels import open_within_limit, png_significant_bits

PathLike = str | os.PathLike

# Errors and path listing live below this module; re-exported here for existing imports.
__all__ = ["IMAGE_EXTENSIONS", "InputError", "OutputPathError", "PathLike", "list_images"]


def _open(path: PathLike) -> Image.Image:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected an image file")
    try:
        im = open_within_limit(p)
        im.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as e:
        raise InputError(f"{p}: cannot read image ({type(e).__name__}: {e})") from None
    return im


def _to_uint8(a: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Scales 16-bit / float arrays to uint8 (full range), leaves uint8 alone.

    Integers are scaled by the ``bits`` the file declares; without it, by 16 bits when a value
    exceeds 255 (so a 12-bit image in a 16-bit file that does not say so comes out dark).
    """
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        maxval = (1 << bits) - 1 if bits else 65535 if a.max(initial=0) > 255 else 255
        return np.clip(np.round(a.astype(np.float64) * (255.0 / maxval)), 0, 255).astype(np.uint8)
    a = a.astype(np.float64)
    if a.max(initial=0.0) <= 1.0:
        a = a * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def image_to_rgb(image: np.ndarray, name: str = "image", bits: int | None = None) -> np.ndarray:
    """Converts an array image (``[H, W]``, ``[H, W, 1|3|4]``, any numeric dtype) to ``uint8 [H, W, 3]``
    (``bits``: the significant bits of integer samples, when known)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: expected an image of shape [H, W], [H, W, 3] or [H, W, 4], got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: image is empty ({a.shape[1]}×{a.shape[0]} pixels, W×H)")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise InputError(f"{name}: image holds NaN or infinite values")
    a = _to_uint8(a, bits)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def load_image(path: PathLike) -> np.ndarray:
    """Reads an image file as ``uint8 [H, W, 3]`` RGB, applying its EXIF orientation."""
    path = Path(path)
    im = _open(path)
    bits = png_significant_bits(path) if im.format == "PNG" else None
    return _pil_to_rgb(im, str(path), bits)


def load_image_bytes(data: bytes, name: str) -> np.ndarray:
    """Decodes the bytes of an image file exactly as :func:`load_image` reads the file (``name``
    stands for the file in messages)."""
    try:
        im = open_within_limit(io.BytesIO(data), name)
        im.load()
    except InputError:
        raise
    except UnidentifiedImageError as e:
        # Worded as PIL words it for a file, so both readers report a bad file the same way.
        raise InputError(
            f"{name}: cannot read image ({type(e).__name__}: cannot identify image file {name!r})"
        ) from None
    except (OSError, SyntaxError, ValueError, MemoryError) as e:
        raise InputError(f"{name}: cannot read image ({type(e).__name__}: {e})") from None
    bits = png_significant_bits(data) if im.format == "PNG" else None
    return _pil_to_rgb(im, name, bits)


def _pil_to_rgb(im: Image.Image, name: str, bits: int | None = None) -> np.ndarray:
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        pass
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return image_to_rgb(np.asarray(im).astype(np.int64), name, bits)
    if im.mode == "F":
        return image_to_rgb(np.asarray(im), name)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels over white, as viewers show them.
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def as_image(image: PathLike | np.ndarray, name: str | None = None) -> np.ndarray:
    """An image given as a path or an array, as ``uint8 [H, W, 3]`` RGB."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    return image_to_rgb(np.asarray(image), name or "image")


def load_label_map(path: PathLike) -> np.ndarray:
    """Reads a label PNG: palette indices for indexed PNGs, else the gray/first channel values.

    A mask drawn as transparency (an RGBA / gray+alpha PNG whose alpha channel is not uniform, such
    as a cut-out of the object exported from an image editor) is read from its alpha channel: the
    object is every pixel at least half opaque (label 1). Its colour channels would otherwise turn
    a white-on-transparent mask into the whole image.

    Returns an integer array ``[H, W]`` (uint8 or uint16).
    """
    im = _open(path)
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.size and alpha.min() != alpha.max():
            return (alpha >= 128).astype(np.uint8)
    if im.mode == "P":
        return np.asarray(im).copy()
    a = np.asarray(im)
    if a.ndim == 3:
        if a.shape[2] == 4:
            a = a[:, :, :3]
        colour = a.shape[2] >= 3 and not (
            np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
        )
        if colour:
            # A colour-coded label image: each distinct colour (black = background) is one object.
            flat = a.reshape(-1, a.shape[2])
            colours, inv = np.unique(flat, axis=0, return_inverse=True)
            if len(colours) > 256:
                raise InputError(
                    f"{path}: looks like a colour photo, not a mask ({len(colours)} colours); give a "
                    "black-and-white, palette or transparent PNG"
                )
            order = np.argsort([tuple(c) != (0,) * a.shape[2] for c in colours], kind="stable")
            remap = np.empty(len(colours), np.int64)
            remap[order] = np.arange(len(colours))
            bg = np.all(colours == 0, axis=1)
            labels = remap[inv.reshape(-1)] + (0 if bg.any() else 1)
            return labels.reshape(a.shape[:2]).astype(np.uint16 if labels.max() > 255 else np.uint8)
        a = a[..., 0]
    return np.asarray(a).copy()


def mask_to_bool(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """A binary mask from bool / 0-1 / 0-255 / label / RGB arrays: everything non-zero is foreground."""
    a = np.asarray(mask)
    if a.ndim == 3:
        if a.shape[2] in (3, 4):
            a = a[:, :, :3].max(axis=2) if a.dtype != bool else a[:, :, :3].any(axis=2)
        elif a.shape[2] == 1:
            a = a[:, :, 0]
        else:
            raise InputError(f"{name}: expected a mask of shape [H, W] or [H, W, 3], got {a.shape}")
    if a.ndim != 2:
        raise InputError(f"{name}: expected a mask of shape [H, W], got {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise InputError(f"{name}: mask holds NaN or infinite values")
    return a.astype(bool) if a.dtype != bool else a.copy()


def load_mask(path: PathLike) -> np.ndarray:
    """Reads a mask file as a boolean ``[H, W]`` array (every non-background pixel is foreground)."""
    return load_label_map(path) > 0


def as_mask(mask: PathLike | np.ndarray, name: str | None = None) -> np.ndarray:
    """A mask given as a path or an array, as a boolean ``[H, W]`` array."""
    if isinstance(mask, (str, os.PathLike)):
        return load_mask(mask)
    return mask_to_bool(mask, name or "mask")


def _blocking_file(path: Path) -> Path | None:
    """The first component of ``path`` that exists but is not a folder (so ``path`` cannot be one)."""
    for q in [*reversed(path.parents), path]:
        if q.exists() and not q.is_dir():
            return q
        if not q.exists():
            return None
    return None


def _make_dirs(folder: Path) -> None:
    """``mkdir -p``, failing with a one-line :class:`OutputPathError` naming the folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = _blocking_file(folder)
        if blocker is not None:
            raise OutputPathError(f"{folder}: cannot create folder, {blocker} is a file") from None
        raise OutputPathError(f"{folder}: cannot create folder ({e.strerror or type(e).__name__})") from None


def create_temp_beside(dst: Path) -> Path:
    """Creates an empty, uniquely named file beside ``dst``.

    Unlike :func:`tempfile.mkstemp` (always mode 0600), the file gets the permissions of any newly
    created file (0666 minus the umask), which ``os.replace`` then gives the final file.
    """
    for _ in range(100):
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.part{dst.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputPathError(f"{dst}: cannot write ({e.strerror or type(e).__name__})") from None
        os.close(fd)
        return tmp
    raise OutputPathError(f"{dst}: cannot create a temporary file beside it")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    A crash or interrupt therefore never leaves a half-written file at ``path``.
    """
    dst = Path(path)
    _make_dirs(dst.parent)
    tmp_p = create_temp_beside(dst)
    try:
        yield tmp_p
        os.replace(tmp_p, dst)
    except BaseException:
        tmp_p.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: PathLike, obj: object, indent: int | None = None) -> None:
    """Writes ``obj`` as UTF-8 JSON atomically."""
    write_bytes_atomic(path, json.dumps(obj, indent=indent).encode("utf-8"))


def save_image(path: PathLike, image: np.ndarray, quality: int = 90) -> None:
    """Writes a ``uint8 [H, W, 3]`` RGB image atomically, as JPEG or PNG according to the suffix."""
    suffix = Path(path).suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix {suffix!r} (use .jpg, .jpeg or .png)")
    im = Image.fromarray(image_to_rgb(image, str(path)))
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            im.save(tmp, format=fmt, quality=quality)
        else:
            im.save(tmp, format=fmt)


def check_output_dir(path: PathLike) -> Path:
    """Checks, without creating anything, that ``path`` is or can become a writable folder.

    Commands call it before any slow work, and create the folder only when they write into it, so
    a run that fails early leaves no empty output folder behind.

    Raises:
        OutputPathError: it (or a folder above it) is a file, or it cannot be created or written.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{p}: output folder is an existing file")
    if p.is_dir():
        _probe_writable(p)
        return p
    blocker = _blocking_file(p)
    if blocker is not None:
        raise OutputPathError(f"{p}: output folder cannot be created, {blocker} is a file")
    existing = next(q for q in p.parents if q.exists())  # the root always exists
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{p}: output folder cannot be created ({existing} is not writable)")
    return p


def _probe_writable(folder: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".persam-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(
            f"{folder}: output folder is not writable ({e.strerror or type(e).__name__})"
        ) from None


def ensure_output_dir(path: PathLike) -> Path:
    """Creates ``path`` (with parents) and checks that files can be created in it.

    Raises:
        OutputPathError: if it is a file, cannot be created or is not writable.
    """
    p = check_output_dir(path)
    _make_dirs(p)
    _probe_writable(p)
    return p


def check_same_size(
    image: np.ndarray, mask: np.ndarray, image_name: str = "image", mask_name: str = "mask"
) -> None:
    """Raises :class:`InputError` unless ``mask`` ``[H, W]`` matches ``image`` ``[H, W, 3]``."""
    if tuple(mask.shape[:2]) != tuple(image.shape[:2]):
        mh, mw = mask.shape[:2]
        ih, iw = image.shape[:2]
        raise InputError(f"{mask_name}: mask is {mw}×{mh} pixels (W×H) but image {image_name} is {iw}×{ih}")


def load_reference(
    image: PathLike | np.ndarray, mask: PathLike | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A reference image and its object mask, checked: same size and a non-empty mask.

    Returns ``(uint8 [H, W, 3] RGB, bool [H, W])``.
    """
    img_name = str(image) if isinstance(image, (str, os.PathLike)) else "reference image"
    mask_name = str(mask) if isinstance(mask, (str, os.PathLike)) else "reference mask"
    img = as_image(image, img_name)
    m = as_mask(mask, mask_name)
    check_same_size(img, m, img_name, mask_name)
    if not m.any():
        raise InputError(f"{mask_name}: reference mask is empty (no foreground pixel)")
    return img, m


def save_png(path: PathLike, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Writes a lossless PNG atomically; with ``palette`` the array is stored as indexed colour."""
    a = np.ascontiguousarray(array)
    if palette is not None:
        if a.ndim != 2 or a.dtype != np.uint8:
            raise ValueError(f"an indexed PNG needs a uint8 [H, W] label map, got {a.dtype} {a.shape}")
        im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
        im.putpalette(palette)
    else:
        im = Image.fromarray(a)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
