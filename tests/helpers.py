"""Shared test helpers (imported as ``from helpers import ...``): the location of the golden
fixtures (skip when absent), small random models and the synthetic scenes several test files use.
Pytest fixtures live in ``conftest.py``."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data
from torch import nn

from persam.backbones.base import Backbone, DecoderOutput
from persam.readers import DAVIS_PALETTE
from persam.registry import tiny_sam_config

ROOT = Path(__file__).resolve().parents[1]
# Golden data beside the checkout; a user's clone has none, and those tests then skip.
SHARED = Path(os.environ.get("PERSAM_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def fixture_dir(name: str) -> Path:
    """``../shared/fixtures/<name>``, skipping the calling test when it is absent."""
    d = FIXTURES / name
    if not d.is_dir():
        pytest.skip(f"golden fixtures not available ({d})")
    return d


def load_fixture(name: str, file: str):
    return torch.load(fixture_dir(name) / file, weights_only=True, map_location="cpu")


def json_number(v: Any) -> Any:
    """A value from a golden JSON file, where the string ``"NaN"`` stands for NaN."""
    return math.nan if v == "NaN" else v


def assert_close(actual: float, expected: Any, what: str, tol: float = 1e-9) -> None:
    """``actual`` within ``tol`` of a golden JSON value (NaN only matches NaN); 1e-9 is the
    tolerance the PerSeg and DAVIS evaluation fixtures recommend."""
    expected = json_number(expected)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), f"{what}: expected NaN, got {actual}"
    else:
        assert abs(actual - expected) <= tol, f"{what}: {actual!r} != {expected!r}"


# ------------------------------------------------------------------------------------ models
def fast_sam_config() -> dict[str, Any]:
    """``tiny_random_sam`` with a single 16-wide windowed encoder block (no global attention): the
    same prompt encoder and decoder (32-dim embedding), at a fifth of the encoder cost. For tests
    that run the whole PerSAM pipeline many times and need no particular encoder."""
    cfg = tiny_sam_config()
    cfg["name"] = "fast_random_sam"
    cfg["image_encoder"].update(embed_dim=16, depth=1, global_attn_indexes=[])
    return cfg


# ------------------------------------------------------------------------------------ scenes
def astronaut_scene() -> tuple[np.ndarray, np.ndarray]:
    """``skimage``'s astronaut at 128 x 128 and a rectangular reference region ``[20:80, 40:90]``."""
    img = np.ascontiguousarray(data.astronaut()[::4, ::4])
    mask = np.zeros(img.shape[:2], bool)
    mask[20:80, 40:90] = True
    return img, mask


def coffee_image() -> np.ndarray:
    """``skimage``'s coffee cup at 100 x 150 (a non-square image)."""
    return np.ascontiguousarray(data.coffee()[::4, ::4])


def gradient_scene(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A noisy colour-gradient background with a bright yellow disc and a dark blue rectangle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 90.0)], -1)
    img[(yy - h * 0.4) ** 2 + (xx - w * 0.6) ** 2 < (min(h, w) * 0.2) ** 2] = (250, 240, 30)
    img[int(h * 0.6) : int(h * 0.9), int(w * 0.1) : int(w * 0.35)] = (20, 30, 200)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def disc_scene(h: int = 96, w: int = 128, centre: tuple[int, int] = (60, 45), radius: int = 18) -> np.ndarray:
    """A flat green background with a red disc (the object, ``centre`` is (x, y)) and a blue square."""
    img = np.full((h, w, 3), (40, 120, 60), np.uint8)
    cv2.rectangle(img, (w - 30, 5), (w - 10, 25), (30, 60, 200), -1)
    cv2.circle(img, centre, radius, (220, 50, 40), -1)
    return img


def disc_video(path: Path, frames: int = 6) -> Path:
    """An MJPG (``.avi``) video of :func:`disc_scene` at 8 fps, the disc moving right by 4 pixels a
    frame."""
    return write_video(path, np.stack([disc_scene(centre=(40 + 4 * i, 45)) for i in range(frames)]), fps=8.0)


# ------------------------------------------------------------------------------------- files
def write_video(path: Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Writes RGB ``frames [T, H, W, 3]`` as MJPG (``.avi``) or MPEG-4 (other suffixes)."""
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (frames.shape[2], frames.shape[1]))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_palette_png(path: Path, labels: np.ndarray, palette: list[int] | None = None) -> Path:
    """Writes ``uint8 [H, W]`` ids as a palette PNG (the DAVIS palette by default)."""
    im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    im.putpalette(palette or DAVIS_PALETTE)
    im.save(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------- video scenes and backbones
H, W = 96, 128  # frame size of make_scene
FPS = 10.0


# ------------------------------------------------------------------------------------ scenes
def _texture(rng: np.random.Generator, h: int, w: int, base: tuple[int, int, int], amp: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
    noise = noise / (np.abs(noise).max() + 1e-6)
    img = np.asarray(base, np.float32)[None, None] * (1.0 + amp * noise[..., None])
    return np.clip(img, 0, 255).astype(np.uint8)


def make_scene(
    t: int = 10, seed: int = 0, leave: tuple[int, int] | None = (4, 6)
) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[T, H, W, 3]`` and labels ``[T, H, W]``: over a textured grey background, a red
    square (id 3) moves right, a green disc (id 7) moves left and passes in front of it, and a
    blue square (id 2) leaves the frame at the right border during frames ``leave[0]..leave[1]``
    and comes back."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.zeros((t, H, W, 3), np.uint8)
    labels = np.zeros((t, H, W), np.uint8)
    red = _texture(rng, 22, 22, (200, 40, 40), 0.25)
    green = _texture(rng, 25, 25, (40, 190, 50), 0.25)
    blue = _texture(rng, 18, 18, (40, 50, 210), 0.25)
    for i in range(t):
        bg = 110 + 25 * np.sin(xx / 7.0 + i * 0.3) * np.cos(yy / 9.0)
        frame = np.repeat(bg[..., None], 3, axis=2) + rng.normal(0, 4, (H, W, 1))
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        lab = np.zeros((H, W), np.uint8)
        # Blue square near the right border; outside the frame for the 'leave' frames.
        if leave[0] <= i <= leave[1]:
            bx = W + 5
        else:
            bx = W - 30
        if bx < W:
            x1 = min(bx + 18, W)
            frame[60:78, bx:x1] = blue[:, : x1 - bx]
            lab[60:78, bx:x1] = 2
        # Red square moving right.
        rx, ry = 8 + 4 * i, 14 + i
        frame[ry : ry + 22, rx : rx + 22] = red
        lab[ry : ry + 22, rx : rx + 22] = 3
        # Green disc moving left, drawn last (in front of the red square where they overlap).
        cx, cy = 80 - 4 * i, 30
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= 12**2
        gx0, gy0 = cx - 12, cy - 12
        patch = np.zeros((H, W, 3), np.uint8)
        ys, xs = np.nonzero(disc)
        patch[ys, xs] = green[np.clip(ys - gy0, 0, 24), np.clip(xs - gx0, 0, 24)]
        frame[disc] = patch[disc]
        lab[disc] = 7
        frames[i], labels[i] = frame, lab
    return frames, labels


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


# ------------------------------------------------------------------------------------ models
class ColourBackbone(Backbone):
    """A deterministic stand-in for SAM on the synthetic scenes.

    Features: per embedding cell, the pixel chroma (colour minus grey level) plus a constant
    channel, so grey cells are orthogonal to coloured ones. "Decoder": the connected region of
    saturated pixels of the same dominant colour as the first positive point, or the centre of the
    box prompt (nothing when that pixel is grey), as ±8 logits; the three outputs are that mask,
    identical.
    """

    name = "colour"
    checkpoint_id = "none"

    def __init__(self) -> None:
        self.model = nn.Linear(1, 1)
        self.encoder_calls = 0
        self.decoder_batches: list[int] = []

    def set_image(self, image: np.ndarray) -> None:
        self.encoder_calls += 1
        img = image.astype(np.float32)
        chroma = img - img.mean(axis=2, keepdims=True)
        feat = np.concatenate([chroma, np.full(img.shape[:2] + (1,), 20.0, np.float32)], axis=2)
        grid = cv2.resize(feat, (64, 64), interpolation=cv2.INTER_AREA)
        self._features = torch.from_numpy(grid).permute(2, 0, 1)[None].contiguous()
        sat = np.abs(chroma).max(axis=2) > 45
        self._classes = np.where(sat, chroma.argmax(axis=2) + 1, 0).astype(np.uint8)
        self._size = image.shape[:2]

    @property
    def features(self) -> torch.Tensor:
        return self._features

    @property
    def original_size(self) -> tuple[int, int]:
        return self._size

    def _region(self, x: int, y: int) -> np.ndarray:
        h, w = self._size
        x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
        c = self._classes[y, x]
        if c == 0:
            return np.zeros((h, w), bool)
        _, comp = cv2.connectedComponents((self._classes == c).astype(np.uint8), connectivity=8)
        return comp == comp[y, x]

    def decode(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
               attn_sim=None, target_embedding=None) -> DecoderOutput:  # fmt: skip
        b = (point_coords if point_coords is not None else boxes).shape[0]
        self.decoder_batches.append(b)
        c = 3 if multimask_output else 1
        low = torch.zeros(b, c, 256, 256)
        for i in range(b):
            if point_coords is None:  # a box prompt: the region under its centre
                x0, y0, x1, y1 = boxes[i].tolist()
                pos = [((x0 + x1) / 2, (y0 + y1) / 2)]
            else:
                pos = [
                    p
                    for p, lab in zip(point_coords[i].tolist(), point_labels[i].tolist(), strict=True)
                    if lab == 1
                ]
            mask = self._region(int(pos[0][0]), int(pos[0][1])).astype(np.float32) * 16.0 - 8.0
            low[i, :] = torch.from_numpy(cv2.resize(mask, (256, 256), interpolation=cv2.INTER_LINEAR))
        iou = torch.tensor([[0.9, 0.8, 0.7][:c]] * b)
        return DecoderOutput(low, iou)

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res.float(), size=self._size, mode="bilinear", align_corners=False)

    def mask_to_embedding_grid(self, mask, pad_value: float = 0.0) -> torch.Tensor:
        m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None, None]
        return F.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)[0, 0]
