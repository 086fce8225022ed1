"""Video frame sources: video files, folders of frames and in-memory arrays, decoded on demand.

Frames come from video files (``.mp4``, ``.avi``, ``.mov``, ``.webm``, ...; decoded with decord, or
with OpenCV when decord is not installed or cannot open the file), from folders of images (sorted
by name, e.g. a DAVIS ``JPEGImages/480p/<sequence>`` folder) or from in-memory arrays. Frames are
always ``uint8 [H, W, 3]`` RGB and are produced one at a time, so a video is never held in memory
as a whole.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from persam.io import IMAGE_EXTENSIONS, InputError, PathLike, image_to_rgb, load_image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 24.0  # DAVIS sequences are 24 frames/s; used for frame folders and arrays


@dataclass
class VideoInfo:
    """What is known about a frame source before decoding it.

    Attributes:
        source: the file or folder name (``"<arrays>"`` for in-memory frames).
        num_frames: number of frames, or None when unknown (an iterable of arrays).
        fps: frames per second (:data:`DEFAULT_FPS` for folders and arrays).
        size: ``(H, W)`` of every frame, or None when unknown before decoding.
        names: per-frame output names (the image stems for a folder), or None (``00000``, ...).
        backend: ``"decord"``, ``"opencv"``, ``"folder"`` or ``"arrays"``.
    """

    source: str
    num_frames: int | None
    fps: float
    size: tuple[int, int] | None
    names: list[str] | None
    backend: str

    def frame_name(self, index: int) -> str:
        if self.names is not None and 0 <= index < len(self.names):
            return self.names[index]
        return f"{index:05d}"


class FrameSource:
    """A sequence of ``uint8 [H, W, 3]`` RGB frames, decoded on demand.

    Use :meth:`frames` to iterate over ``(index, frame)`` pairs from ``start`` every ``stride``
    frames; call :meth:`close` (or use it as a context manager) to release the decoder.
    """

    info: VideoInfo

    def frames(self, start: int = 0, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, index: int, frame: np.ndarray) -> np.ndarray:
        frame = image_to_rgb(frame, f"{self.info.source}: frame {index}")
        size = (int(frame.shape[0]), int(frame.shape[1]))
        if self.info.size is None:
            self.info.size = size
        elif size != self.info.size:
            raise InputError(
                f"{self.info.source}: frame {index} is {size[1]}×{size[0]} (W×H), "
                f"earlier frames are {self.info.size[1]}×{self.info.size[0]}"
            )
        return frame


def _check_range(info: VideoInfo, start: int, stride: int) -> None:
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    if start < 0:
        raise InputError(f"start must be >= 0, got {start}")
    if info.num_frames is not None and start >= info.num_frames:
        raise InputError(f"{info.source}: start frame {start} is beyond the end ({info.num_frames} frames)")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silences what native decoders print while a video is opened.

    FFmpeg (inside decord and OpenCV) and decord's own logger write straight to file descriptor 2,
    below Python's ``sys.stderr``: a damaged file would show their log lines before our one-line
    error. The descriptor is pointed at the null device for the duration, and restored after.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_decord() -> Any | None:
    try:
        import decord
    except ImportError:
        return None
    return decord


class DecordSource(FrameSource):
    """A video file decoded with decord."""

    def __init__(self, path: Path, decord: Any) -> None:
        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        n = len(self._reader)
        fps = float(self._reader.get_avg_fps() or 0.0)
        first = self._reader[0].asnumpy() if n else None
        size = None if first is None else (int(first.shape[0]), int(first.shape[1]))
        self.info = VideoInfo(str(path), n, fps if fps > 0 else DEFAULT_FPS, size, None, "decord")

    def frames(self, start: int = 0, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        _check_range(self.info, start, stride)
        for i in range(start, self.info.num_frames or 0, stride):
            try:
                frame = self._reader[i].asnumpy()
            except Exception as e:  # decord raises its own error types
                raise InputError(f"{self.info.source}: cannot decode frame {i} ({e})") from None
            yield i, self._check(i, frame)

    def close(self) -> None:
        self._reader = None


class OpenCVSource(FrameSource):
    """A video file decoded with OpenCV (sequential reads; skipped frames are only grabbed)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise InputError(f"{path}: cannot read video (not a video file, corrupt, or without frames)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, frame = cap.read()
        cap.release()
        size = (int(frame.shape[0]), int(frame.shape[1])) if ok else None
        # The container's frame count can be missing or an estimate; None means "read to the end".
        count = 0 if not ok else (n if n > 0 else None)
        self.info = VideoInfo(str(path), count, fps or DEFAULT_FPS, size, None, "opencv")
        self._cap: cv2.VideoCapture | None = None

    def frames(self, start: int = 0, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        _check_range(self.info, start, stride)
        self._cap = cap = cv2.VideoCapture(str(self._path))
        try:
            i = 0
            while True:
                if i < start or (i - start) % stride:
                    if not cap.grab():
                        break
                    i += 1
                    continue
                ok, bgr = cap.read()
                if not ok:
                    break
                yield i, self._check(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                i += 1
            if i <= start:
                raise InputError(f"{self._path}: start frame {start} is beyond the end ({i} frames)")
        finally:
            cap.release()
            self._cap = None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


class FolderSource(FrameSource):
    """A folder of frame images, in natural name order (``frame2`` before ``frame10``)."""

    def __init__(self, folder: Path) -> None:
        files = [q for q in folder.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS]
        self._files = sorted(files, key=_natural_key)
        names = [q.stem for q in self._files]
        self.info = VideoInfo(str(folder), len(self._files), DEFAULT_FPS, None, names, "folder")
        if self._files:
            self.info.size = load_image(self._files[0]).shape[:2]

    def frames(self, start: int = 0, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        _check_range(self.info, start, stride)
        for i in range(start, len(self._files), stride):
            yield i, self._check(i, load_image(self._files[i]))


class ArraySource(FrameSource):
    """Frames given as an array ``[T, H, W, 3]`` or any iterable of ``[H, W, 3]`` arrays."""

    def __init__(self, frames: Iterable[np.ndarray] | np.ndarray, fps: float = DEFAULT_FPS) -> None:
        n = len(frames) if isinstance(frames, (np.ndarray, Sequence)) else None
        self._frames = frames
        self.info = VideoInfo("<arrays>", n, fps, None, None, "arrays")
        if n is None and iter(frames) is frames:
            # A one-shot stream cannot be read twice: its first frame is taken now (for the frame
            # size) and handed out again as the first of the frames.
            first = next(frames, None)
            if first is not None:
                self._frames = itertools.chain([self._check(0, np.asarray(first))], frames)

    def frames(self, start: int = 0, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        _check_range(self.info, start, stride)
        count = 0
        for i, frame in enumerate(self._frames):
            count = i + 1
            if i >= start and (i - start) % stride == 0:
                yield i, self._check(i, np.asarray(frame))
        if count <= start:
            raise InputError(f"frames: start frame {start} is beyond the end ({count} frames)")


def open_video(source: PathLike | Iterable[np.ndarray] | np.ndarray, prefer: str = "decord") -> FrameSource:
    """Opens a video file, a folder of frames or in-memory frames.

    Args:
        source: a video file, a folder of images, an array ``[T, H, W, 3]`` or an iterable of frames.
        prefer: ``"decord"`` (default; falls back to OpenCV when decord is missing or cannot open
            the file) or ``"opencv"``.

    Raises:
        InputError: the file or folder does not exist, cannot be decoded or holds no frame.
    """
    if not isinstance(source, (str, os.PathLike)):
        return ArraySource(source)
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        src: FrameSource = FolderSource(path)
        if not src.info.num_frames:
            raise InputError(f"{path}: folder holds no frame images ({', '.join(IMAGE_EXTENSIONS)})")
        return src
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InputError(f"{path}: is an image; give a video file or a folder of frames")
    decord = _import_decord() if prefer == "decord" else None
    src = None
    with quiet_native_stderr():
        if decord is not None:
            try:
                src = DecordSource(path, decord)
            except Exception:  # unreadable for decord; OpenCV may still read it (or report it)
                src = None
        if src is None:
            src = OpenCVSource(path)
    if src.info.num_frames == 0:
        raise InputError(f"{path}: video holds no frames")
    return src


def frame_size(source: FrameSource, start: int) -> tuple[int, int]:
    """``(H, W)`` of the frames of ``source`` (decodes frame ``start`` if the source does not say).

    Raises:
        InputError: there is no frame at ``start``.
    """
    if source.info.size is None:
        frames = source.frames(start, 1)
        try:
            next(frames, None)
        finally:
            frames.close()
    if source.info.size is None:
        raise InputError(f"{source.info.source}: no frame at index {start}")
    return source.info.size
