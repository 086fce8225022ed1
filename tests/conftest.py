"""Shared test helpers: the location of the golden fixtures (skip when absent), small random models
and the synthetic scenes several test files use."""

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
from PIL import Image
from skimage import data

from persam.registry import tiny_sam_config
from persam.video_io import DAVIS_PALETTE

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


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Decoder outputs change in the last bits with the thread count; keep tests reproducible.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _float32_by_default(monkeypatch: pytest.MonkeyPatch):
    # The golden comparisons are float32; ``build_model``'s default ``dtype="auto"`` would pick
    # bfloat16 on a machine that computes in it natively (AMX / AVX512-BF16 CPUs, CUDA).
    from persam.devices import resolve_dtype
    from persam.registry import build

    def pinned(dtype="auto", device=None, *, option="dtype"):
        return resolve_dtype("float32" if dtype in ("auto", None) else dtype, device, option=option)

    monkeypatch.setattr(build, "resolve_dtype", pinned)


@pytest.fixture
def persam_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ``PERSAM_HOME`` (weights cache) for the test, and no proxy (test servers are
    local)."""
    home = tmp_path / "home"
    monkeypatch.setenv("PERSAM_HOME", str(home))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def one_thread(_deterministic_threads) -> None:
    """One intra-op thread for the test: on a busy machine, threads contending for the cores slow
    the small models down many times over."""
    torch.set_num_threads(1)


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
