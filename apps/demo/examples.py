"""The example inputs of the page, made from ``skimage.data`` photos at first start (nothing large is
kept in the repository): two image sets and a short clip of a rolling ball.

* "sticker": the scikit-image logo stuck on a coffee table, on the astronaut and on the cat; its
  reference mask is exact (the logo's alpha channel), and one target has no sticker at all;
* "coffee cup": the cup marked by clicks, so the model makes the reference mask;
* "rolling ball": a ball marked by a click on the first frame.

Choosing an example shows the reference mask (or the marked objects) straight away.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from persam.io import atomic_path

EXAMPLES_DIR = "examples"
VIDEO_FRAMES = 12
VIDEO_FPS = 8.0


@dataclass(frozen=True)
class ImageExample:
    """A reference photo, its object marked by a mask file or by clicks (``[[x, y, label], ...]``),
    and target photos."""

    label: str
    reference: Path
    mask: Path | None
    clicks: str
    targets: list[Path]


@dataclass(frozen=True)
class VideoExample:
    """A clip and the clicks that mark its objects on the first frame (``[[x, y, label, object], ...]``)."""

    label: str
    video: Path
    clicks: str


@dataclass(frozen=True)
class Examples:
    images: list[ImageExample]
    videos: list[VideoExample]


def _resize(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)


def _save(path: Path, image: np.ndarray) -> Path:
    # Written under a temporary name and moved: a second demo starting on the same folder never
    # sees half a file.
    if not path.is_file():
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return path


def _cup_example(folder: Path) -> ImageExample:
    from skimage import data

    coffee = _resize(data.coffee(), 300)  # 300x200; the cup's rim is around (145, 75)
    astronaut = _resize(data.astronaut(), 200)  # no cup here: a target where it is not found
    targets = [
        _save(folder / "cup_flipped.jpg", np.ascontiguousarray(coffee[:, ::-1])),
        _save(folder / "cup_closer.jpg", _resize(coffee[20:170, 40:265], 300)),
        _save(folder / "astronaut.jpg", astronaut),
    ]
    ref = _save(folder / "cup_reference.jpg", coffee)
    return ImageExample("coffee cup", ref, None, json.dumps([[145, 70, 1], [60, 170, 0]]), targets)


def _stick(
    photo: np.ndarray, sticker: np.ndarray, size: int, x: int, y: int
) -> tuple[np.ndarray, np.ndarray]:
    """``photo`` with the RGBA ``sticker`` scaled to ``size`` pixels pasted at ``(x, y)``, and its mask."""
    s = cv2.resize(sticker, (size, size), interpolation=cv2.INTER_AREA)
    alpha = s[..., 3:].astype(np.float32) / 255.0
    out = photo.copy()
    region = out[y : y + size, x : x + size].astype(np.float32)
    out[y : y + size, x : x + size] = np.round(s[..., :3] * alpha + region * (1 - alpha)).astype(np.uint8)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[y : y + size, x : x + size] = np.where(s[..., 3] > 127, 255, 0)
    return out, mask


def _sticker_example(folder: Path) -> ImageExample:
    from skimage import data

    # The logo is a disc on white (its alpha channel is opaque everywhere): cut the disc out.
    logo = data.logo().copy()
    disc = np.zeros(logo.shape[:2], np.uint8)
    cv2.circle(disc, (250, 250), 238, 255, -1, cv2.LINE_AA)
    logo[..., 3] = disc
    table = _resize(data.coffee(), 300)[:, :, :3]
    ref, mask = _stick(table, logo, 90, 190, 95)
    targets = [
        _save(
            folder / "sticker_astronaut.jpg", _stick(_resize(data.astronaut(), 240), logo, 70, 150, 150)[0]
        ),
        _save(folder / "sticker_cat.jpg", _stick(_resize(data.chelsea(), 270), logo, 110, 10, 60)[0]),
        _save(folder / "no_sticker.jpg", _resize(data.chelsea(), 240)),
    ]
    mask_path = folder / "sticker_reference_mask.png"
    _save(mask_path, mask)
    return ImageExample("sticker", _save(folder / "sticker_reference.png", ref), mask_path, "", targets)


def ball_frames(frames: int = VIDEO_FRAMES) -> np.ndarray:
    """``uint8 [T, 120, 180, 3]``: a yellow ball rolling right over a coffee table."""
    from skimage import data

    background = _resize(data.coffee(), 180)
    out = []
    for t in range(frames):
        frame = background.copy()
        cv2.circle(frame, (30 + 10 * t, 90), 14, (250, 210, 30), -1, cv2.LINE_AA)
        out.append(frame)
    return np.stack(out)


def _ball_example(folder: Path) -> VideoExample:
    path = folder / "rolling_ball.avi"
    if not path.is_file():
        frames = ball_frames()
        with atomic_path(path) as tmp:
            # MJPG in AVI: OpenCV writes it everywhere without extra codecs (the temporary name
            # keeps the .avi suffix that picks the container).
            size = (frames.shape[2], frames.shape[1])
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, size)
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
    return VideoExample("rolling ball", path, json.dumps([[30, 90, 1, 1]]))


def make_examples(work_dir: Path) -> Examples:
    """The example files under ``work_dir/examples`` (made on first call, reused afterwards)."""
    folder = Path(work_dir) / EXAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return Examples([_sticker_example(folder), _cup_example(folder)], [_ball_example(folder)])
