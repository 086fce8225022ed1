"""Label Studio's brush RLE, in plain NumPy: what a ``brushlabels`` region's ``value.rle`` holds.

Label Studio stores a brush mask as the RGBA image of the region (alpha 255 where the object is,
every channel equal), flattened row by row and packed with the ``rle-pack`` bit format its editor
decodes:

* a header: the number of values (32 bits), the word size minus one (5 bits), then four run-length
  field sizes minus one (4 bits each; here 3, 4, 8 and 16 bits);
* then groups of: a repeat flag (1 bit), which run-length field follows (2 bits), the run length
  minus one (in that field's bits), and one value (repeat) or that many values (literal), each of
  the word size (8 bits);
* zero bits up to a whole byte.

The encoder writes runs only (every group a repeat), which any reader of the format accepts; the
decoder reads both kinds of group, so masks drawn in Label Studio decode as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from persam.errors import InputError

__all__ = ["decode_brush_rle", "encode_brush_rle"]

#: Bits of the run-length fields; a run is written in the smallest that holds it.
_RUN_FIELDS = (3, 4, 8, 16)
_WORD = 8
#: Channels per pixel (RGBA): the region is an RGBA image.
_CHANNELS = 4


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths and run values of a 1-D array."""
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [values.size]]))
    return lengths, values[starts]


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """The brush RLE of ``mask`` (``bool [H, W]``): a list of byte values, as Label Studio stores it
    in ``value.rle``."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise InputError(f"a brush mask must be a non-empty 2-D array, got shape {mask.shape}")
    lengths, values = _runs((mask.ravel() > 0).astype(np.uint8) * 255)
    num = mask.size * _CHANNELS
    parts = [f"{num:032b}", f"{_WORD - 1:05b}", *(f"{b - 1:04b}" for b in _RUN_FIELDS)]
    longest = 1 << _RUN_FIELDS[-1]
    for length, value in zip((lengths * _CHANNELS).tolist(), values.tolist(), strict=True):
        while length > 0:
            chunk = min(length, longest)
            field = next(k for k, bits in enumerate(_RUN_FIELDS) if chunk <= 1 << bits)
            parts.append(f"1{field:02b}{chunk - 1:0{_RUN_FIELDS[field]}b}{value:08b}")
            length -= chunk
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    packed = np.packbits(np.frombuffer(bits.encode("ascii"), np.uint8) - ord("0"))
    return packed.tolist()


class _Bits:
    """Reads unsigned big-endian fields from a bit array."""

    def __init__(self, data: Sequence[int]) -> None:
        arr = np.asarray(data)
        if arr.ndim != 1 or arr.size == 0 or arr.min() < 0 or arr.max() > 255:
            raise InputError("a brush RLE must be a non-empty list of byte values (0..255)")
        self.bits = np.unpackbits(arr.astype(np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        end = self.pos + n
        if end > self.bits.size:
            raise InputError("brush RLE ends early: the data is cut or not a brush RLE")
        value = 0
        for b in self.bits[self.pos : end].tolist():
            value = (value << 1) | b
        self.pos = end
        return value


def decode_brush_rle(rle: Sequence[int]) -> np.ndarray:
    """The flat ``uint8`` values (RGBA, row by row) of a brush RLE; reshape to ``[H, W, 4]`` with
    the region's ``original_height`` / ``original_width`` and take the alpha channel ``[..., 3]``."""
    src = _Bits(rle)
    num = src.read(32)
    word = src.read(5) + 1
    fields = [src.read(4) + 1 for _ in range(4)]
    if word > 8:
        raise InputError(f"brush RLE of {word}-bit values: Label Studio writes 8-bit ones")
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = src.read(1)
        j = i + 1 + src.read(fields[src.read(2)])
        if j > num:
            raise InputError(f"brush RLE runs past its {num} values")
        if repeat:
            out[i:j] = src.read(word)
        else:
            out[i:j] = [src.read(word) for _ in range(j - i)]
        i = j
    return out
