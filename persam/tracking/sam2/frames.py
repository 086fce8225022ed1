"""Frames for the SAM 2 tracker: the official video preprocessing and on-demand frame access.

Preprocessing (official video loader): PIL bicubic resize of the uint8 RGB frame to
``image_size²`` (rounded back to uint8), ``/ 255``, then ImageNet normalisation. It differs from
the image predictor's torch bilinear resize.

:class:`FrameReader` decodes frames only when the tracker asks for them, from a video file, a
folder, an array, a :class:`~persam.readers.FrameSource` or any iterable of frames, and holds at
most one decoded frame: random access where the source allows it (files, folders, arrays),
strictly forward reading for plain iterables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from persam.io import InputError
from persam.readers import FrameSource, open_video

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def _normalisation_table() -> np.ndarray:
    """``float32 [3, 256]``: the normalised value of every byte per channel, computed with the
    loader's float32 operations (``v / 255``, then ``- mean``, ``/ std``), so that a look-up gives
    the same numbers as the arithmetic on every pixel."""
    v = torch.arange(256, dtype=torch.float32) / 255.0
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32)[:, None]
    std = torch.tensor(IMAGE_STD, dtype=torch.float32)[:, None]
    return ((v[None] - mean) / std).numpy()


_TABLE = _normalisation_table()


def preprocess_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """``uint8 [H, W, 3]`` RGB -> ``[1, 3, S, S]`` float32, exactly as the official video loader."""
    resized = np.asarray(Image.fromarray(frame).resize((image_size, image_size), Image.BICUBIC))
    out = np.stack([_TABLE[c][resized[..., c]] for c in range(3)])
    return torch.from_numpy(out)[None]


VideoInput = FrameSource | str | os.PathLike | np.ndarray | Sequence[np.ndarray] | Iterable[np.ndarray]


class FrameReader:
    """On-demand access to the frames of a video.

    Args:
        video: a video file, a folder of images, an array ``[T, H, W, 3]``, a sequence or an
            iterable of ``uint8 [H, W, 3]`` frames, or an open :class:`FrameSource`.
        num_frames: the length when ``video`` does not tell it (an iterable); None = unknown.

    Attributes:
        num_frames: the number of frames, or None while unknown (set once a stream ends).
        seekable: whether earlier frames can be read again.
    """

    def __init__(self, video: VideoInput, *, num_frames: int | None = None) -> None:
        self._array: np.ndarray | Sequence[np.ndarray] | None = None
        self._source: FrameSource | None = None
        self._iter: Iterator[tuple[int, np.ndarray]] | None = None
        self._stream: Iterator[np.ndarray] | None = None
        self._last: tuple[int, np.ndarray] | None = None
        if isinstance(video, np.ndarray) or (isinstance(video, Sequence) and not isinstance(video, str)):
            self._array = video
            self.num_frames: int | None = len(video)
            self.seekable = True
        elif isinstance(video, (str, os.PathLike, FrameSource)):
            self._source = video if isinstance(video, FrameSource) else open_video(video)
            self.num_frames = self._source.info.num_frames
            self.seekable = self._source.info.backend != "arrays"
        else:
            self._stream = iter(video)
            self.num_frames = num_frames
            self.seekable = False
        if self.num_frames is None and num_frames is not None:
            self.num_frames = num_frames
        self._next = 0  # next index of a forward-only reader
        self.size: tuple[int, int] | None = None

    def _check(self, idx: int, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(
                f"frame {idx}: expected a uint8 [H, W, 3] RGB array, got {frame.dtype} {frame.shape}"
            )
        size = (int(frame.shape[0]), int(frame.shape[1]))
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise InputError(
                f"frame {idx} is {size[1]}×{size[0]} (W×H), earlier frames are {self.size[1]}×{self.size[0]}"
            )
        return frame

    def has(self, idx: int) -> bool:
        """Whether frame ``idx`` exists (reads ahead on a stream of unknown length)."""
        if idx < 0:
            return False
        if self.num_frames is not None:
            return idx < self.num_frames
        try:
            self.get(idx)
        except IndexError:
            return False
        return True

    def get(self, idx: int) -> np.ndarray:
        """Frame ``idx`` as ``uint8 [H, W, 3]`` RGB.

        Raises:
            IndexError: beyond the end of the video.
            InputError: an earlier frame of a forward-only stream (no longer available).
        """
        if idx < 0 or (self.num_frames is not None and idx >= self.num_frames):
            raise IndexError(f"frame {idx} is outside the video ({self.num_frames} frames)")
        if self._last is not None and self._last[0] == idx:
            return self._last[1]
        if self._array is not None:
            frame = self._check(idx, self._array[idx])
        elif self._source is not None:
            frame = self._from_source(idx)
        else:
            frame = self._from_stream(idx)
        self._last = (idx, frame)
        return frame

    def _from_source(self, idx: int) -> np.ndarray:
        assert self._source is not None
        if self._iter is None or idx != self._next:
            if not self.seekable and idx < self._next:
                raise InputError(f"frame {idx} was already read from a forward-only source")
            self._iter = self._source.frames(start=idx)
            self._next = idx
        try:
            i, frame = next(self._iter)
        except StopIteration:
            self.num_frames = self._next
            raise IndexError(f"frame {idx} is beyond the end of the video") from None
        self._next = i + 1
        return self._check(i, frame)

    def _from_stream(self, idx: int) -> np.ndarray:
        assert self._stream is not None
        if idx < self._next:
            raise InputError(f"frame {idx} was already read from a forward-only stream")
        frame = None
        while self._next <= idx:
            try:
                frame = next(self._stream)
            except StopIteration:
                self.num_frames = self._next
                raise IndexError(f"frame {idx} is beyond the end of the video") from None
            self._next += 1
        return self._check(idx, frame)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
