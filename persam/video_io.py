"""Reading videos and first-frame masks, and writing tracking results, for the video pipeline.

Frames come from video files (``.mp4``, ``.avi``, ``.mov``, ``.webm``, ...; decoded with decord, or
with OpenCV when decord is not installed or cannot open the file), from folders of images (sorted
by name, e.g. a DAVIS ``JPEGImages/480p/<sequence>`` folder) or from in-memory arrays. Frames are
always ``uint8 [H, W, 3]`` RGB and are produced one at a time, optionally by a background thread
(:class:`Prefetcher`), so a video is never held in memory as a whole.

The first-frame mask is a label map (DAVIS palette PNG with several object ids, a binary PNG, an
array) or one mask per object. Results are written as DAVIS-format palette PNGs (one per frame), an
overlay video and a JSON file of per-frame, per-object scores; :class:`ResultWriter` stages every
file and moves them into place only when the whole run succeeded.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from persam.io import (
    IMAGE_EXTENSIONS,
    InputError,
    PathLike,
    check_output_dir,
    create_temp_beside,
    image_to_rgb,
    load_image,
    load_label_map,
    mask_to_bool,
)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 24.0  # DAVIS sequences are 24 frames/s; used for frame folders and arrays

__all__ = [
    "DAVIS_PALETTE",
    "DEFAULT_FPS",
    "VIDEO_EXTENSIONS",
    "FirstMask",
    "FrameSource",
    "Prefetcher",
    "ResultWriter",
    "VideoInfo",
    "davis_palette",
    "davis_sequence",
    "load_first_mask",
    "open_video",
    "overlay_labels",
]


# --------------------------------------------------------------------------------------- palette
def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS / PASCAL VOC annotations (flat ``[r, g, b] * 256``).

    Colour ``i`` spreads the bits of ``i`` over the three channels, most significant bit first.
    """
    out: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        out += [r, g, b]
    return out


DAVIS_PALETTE: list[int] = davis_palette()


# ---------------------------------------------------------------------------------------- frames
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
                f"{self.info.source}: frame {index} is {size[1]}x{size[0]}, "
                f"earlier frames are {self.info.size[1]}x{self.info.size[0]}"
            )
        return frame


def _check_range(info: VideoInfo, start: int, stride: int) -> None:
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    if start < 0:
        raise InputError(f"start must be >= 0, got {start}")
    if info.num_frames is not None and start >= info.num_frames:
        raise InputError(f"{info.source}: start frame {start} is beyond the end ({info.num_frames} frames)")


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


class Prefetcher:
    """Runs an iterator in a background thread, keeping at most ``maxsize`` items ahead.

    Exceptions raised by the iterator are re-raised by the consumer; :meth:`close` stops the thread
    early (when the consumer gives up) without waiting for the iterator to finish.
    """

    _DONE = object()

    def __init__(self, iterator: Iterator[Any], maxsize: int = 4) -> None:
        self._it = iterator
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="persam-frame-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._it:
                if not self._put((True, item)):
                    return
        except BaseException as e:  # handed to the consumer
            self._put((False, e))
            return
        self._put((True, self._DONE))

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                ok, item = self._queue.get()
                if not ok:
                    raise item
                if item is self._DONE:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        close = getattr(self._it, "close", None)
        if close is not None and not self._thread.is_alive():
            close()


# ------------------------------------------------------------------------------ first-frame mask
@dataclass
class FirstMask:
    """The objects to track, from the first-frame annotation.

    Attributes:
        label_map: ``uint8 [H, W]``, 0 = background, else the object id (lowest id where masks overlap).
        object_ids: ids of the objects, ascending (each present in the annotation).
        masks: one ``bool [H, W]`` mask per object (in ``object_ids`` order; may overlap when given
            as separate masks).
        palette: the annotation's palette (flat ``[r, g, b] * 256``) or None when it has none.
        source: the file name(s) or ``"mask"``, for messages.
    """

    label_map: np.ndarray
    object_ids: list[int]
    masks: list[np.ndarray]
    palette: list[int] | None = None
    source: str = "mask"

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.label_map.shape[0]), int(self.label_map.shape[1]))


def _read_palette_png(path: Path) -> tuple[np.ndarray, list[int] | None]:
    """Label values and the palette (None unless the PNG is indexed) of a mask file."""
    labels = load_label_map(path)
    palette = None
    with Image.open(path) as im:
        if im.mode == "P":
            pal = im.getpalette() or []
            palette = (list(pal) + [0] * 768)[:768]
    if palette is None:
        values = np.unique(labels)
        nonzero = values[values != 0]
        if len(nonzero) == 1:
            # A binary mask (0/1, 0/255, 0/128, ...): one object with id 1.
            labels = (labels != 0).astype(np.uint8)
    return labels, palette


def _labels_to_first_mask(labels: np.ndarray, source: str, palette: list[int] | None) -> FirstMask:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"{source}: expected a label map of shape [H, W], got {labels.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{source}: a label map needs integer object ids, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise InputError(f"{source}: object ids must be in 0..255, got {labels.min()}..{labels.max()}")
    labels = labels.astype(np.uint8)
    ids = [int(v) for v in np.unique(labels) if v != 0]
    if not ids:
        raise InputError(f"{source}: the mask holds no object (every pixel is background)")
    return FirstMask(labels, ids, [labels == i for i in ids], palette, source)


def load_first_mask(
    mask: PathLike | np.ndarray | Sequence[PathLike | np.ndarray],
    size: tuple[int, int] | None = None,
) -> FirstMask:
    """Reads the first-frame annotation.

    Args:
        mask: a label-map PNG (DAVIS palette PNG with object ids, or a binary PNG = one object with
            id 1), a label map ``uint8 [H, W]`` (0 = background), or a list of per-object masks
            (paths or bool arrays; object ``k`` of the list gets id ``k + 1``).
        size: ``(H, W)`` of the video frames; a mask of another size is an error.

    Raises:
        InputError: unreadable file, no object, or a size that differs from ``size``.
    """
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        labels, palette = _read_palette_png(path)
        first = _labels_to_first_mask(labels, str(path), palette)
    elif isinstance(mask, np.ndarray):
        first = _labels_to_first_mask(mask, "mask", None)
    else:
        items = list(mask)
        if not items:
            raise InputError("mask: the list of object masks is empty")
        masks: list[np.ndarray] = []
        names: list[str] = []
        for k, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                m = load_label_map(item) != 0
                names.append(str(item))
            else:
                m = mask_to_bool(np.asarray(item), f"mask {k}")
                names.append(f"mask {k}")
            if m.shape != masks[0].shape if masks else False:
                raise InputError(f"{names[-1]}: mask is {m.shape[1]}x{m.shape[0]}, the first one is "
                                 f"{masks[0].shape[1]}x{masks[0].shape[0]}")  # fmt: skip
            if not m.any():
                raise InputError(f"{names[-1]}: the mask holds no object (every pixel is background)")
            masks.append(m)
        if len(masks) > 255:
            raise InputError(f"mask: at most 255 objects, got {len(masks)}")
        labels = np.zeros(masks[0].shape, np.uint8)
        for k in range(len(masks) - 1, -1, -1):  # lower ids win where masks overlap
            labels[masks[k]] = k + 1
        first = FirstMask(labels, list(range(1, len(masks) + 1)), masks, None, ", ".join(names))
    if size is not None and first.size != tuple(size):
        raise InputError(
            f"{first.source}: mask is {first.size[1]}x{first.size[0]} but the video frames are "
            f"{size[1]}x{size[0]}"
        )
    return first


def davis_sequence(davis_root: PathLike, sequence: str, resolution: str = "480p") -> tuple[Path, Path]:
    """``(frames folder, first-frame annotation)`` of a DAVIS sequence."""
    root = Path(davis_root)
    frames = root / "JPEGImages" / resolution / sequence
    annotations = root / "Annotations" / resolution / sequence
    if not frames.is_dir():
        raise InputError(f"{frames}: DAVIS frame folder not found")
    pngs = sorted(annotations.glob("*.png")) if annotations.is_dir() else []
    if not pngs:
        raise InputError(f"{annotations}: no first-frame annotation PNG found")
    return frames, pngs[0]


# ---------------------------------------------------------------------------------------- output
def overlay_labels(
    frame: np.ndarray, label_map: np.ndarray, palette: Sequence[int], alpha: float = 0.5
) -> np.ndarray:
    """Blends the palette colour of every labelled pixel into ``frame`` and outlines each object.

    Args:
        frame: ``uint8 [H, W, 3]`` RGB. label_map: ``uint8 [H, W]``. Returns ``uint8 [H, W, 3]`` RGB.
    """
    lut = np.asarray(list(palette)[:768] + [0] * max(0, 768 - len(palette)), np.uint8).reshape(256, 3)
    colours = lut[label_map]
    fg = label_map > 0
    out = frame.astype(np.float32)
    out[fg] = (1.0 - alpha) * out[fg] + alpha * colours[fg].astype(np.float32)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    edges = cv2.morphologyEx(label_map, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges & fg] = colours[edges & fg]
    return out


@dataclass
class ResultWriter:
    """Writes tracking results; nothing appears at the destinations unless :meth:`commit` runs.

    Label PNGs and the scores JSON are staged in a hidden folder inside ``out_dir`` and moved into
    place by :meth:`commit`; the overlay video is written to a temporary file beside its
    destination. :meth:`abort` (called on any exception when used as a context manager) removes
    everything this writer created, including ``out_dir`` itself when it did not exist before.

    Args:
        out_dir: folder for ``<frame name>.png`` label maps and ``scores.json`` (None: no PNGs).
        palette: flat ``[r, g, b] * 256`` palette of the PNGs and overlay colours.
        overlay: path of the overlay video (``.mp4`` / ``.avi``), or None.
        fps: frame rate of the overlay video.
        scores_name: file name of the per-frame scores inside ``out_dir`` (None: not written).
    """

    out_dir: PathLike | None
    palette: list[int] = field(default_factory=lambda: list(DAVIS_PALETTE))
    overlay: PathLike | None = None
    fps: float = DEFAULT_FPS
    scores_name: str | None = "scores.json"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._created_dirs: list[Path] = []
        self._stage: Path | None = None
        self._records: list[dict[str, Any]] = []
        self._video: cv2.VideoWriter | None = None
        self._video_tmp: Path | None = None
        self._closed = False
        if self.out_dir is not None:
            out = check_output_dir(self.out_dir)
            self._mkdirs(out)
            self._stage = Path(tempfile.mkdtemp(prefix=".persam-track-", dir=out))

    def _mkdirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        path.mkdir(parents=True, exist_ok=True)
        self._created_dirs.extend(missing)  # deepest first

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _open_video(self, size: tuple[int, int]) -> None:
        dst = Path(self.overlay)  # type: ignore[arg-type]
        self._mkdirs(check_output_dir(dst.parent))
        # Not mkstemp: the final video gets ordinary file permissions, not 0600.
        self._video_tmp = create_temp_beside(dst)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if dst.suffix.lower() == ".avi" else "mp4v"))
        self._video = cv2.VideoWriter(str(self._video_tmp), fourcc, float(self.fps), (size[1], size[0]))
        if not self._video.isOpened():
            raise InputError(f"{dst}: cannot write a video here (OpenCV has no encoder for {dst.suffix})")

    def write(
        self,
        name: str,
        label_map: np.ndarray,
        frame: np.ndarray | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Adds one frame: its label PNG ``<name>.png``, its overlay frame and its scores record."""
        if self._stage is not None:
            im = Image.frombytes(
                "P", (label_map.shape[1], label_map.shape[0]), np.ascontiguousarray(label_map).tobytes()
            )
            im.putpalette(self.palette)
            im.save(self._stage / f"{name}.png", format="PNG")
        if self.overlay is not None:
            if frame is None:
                raise ValueError("an overlay video needs the frames")
            if self._video is None:
                self._open_video(label_map.shape[:2])
            bgr = cv2.cvtColor(overlay_labels(frame, label_map, self.palette), cv2.COLOR_RGB2BGR)
            self._video.write(bgr)  # type: ignore[union-attr]
        if record is not None:
            self._records.append(record)

    def commit(self) -> None:
        """Finishes the overlay video and moves every staged file to its destination."""
        if self._closed:
            return
        try:
            if self._video is not None:
                self._video.release()
                self._video = None
                os.replace(self._video_tmp, Path(self.overlay))  # type: ignore[arg-type]
                self._video_tmp = None
            if self._stage is not None:
                out = Path(self.out_dir)  # type: ignore[arg-type]
                if self.scores_name is not None:
                    doc = dict(self.metadata)
                    doc["frames"] = self._records
                    (self._stage / self.scores_name).write_text(json.dumps(doc, indent=1), encoding="utf-8")
                for f in sorted(self._stage.iterdir()):
                    os.replace(f, out / f.name)
                self._stage.rmdir()
                self._stage = None
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Removes everything this writer created."""
        if self._closed:
            return
        self._closed = True
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._video_tmp is not None:
            self._video_tmp.unlink(missing_ok=True)
            self._video_tmp = None
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        for d in self._created_dirs:  # deepest first; only folders this run made, and only if empty
            try:
                d.rmdir()
            except OSError:
                pass
