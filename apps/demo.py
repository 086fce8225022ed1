"""persam web demo: personalize Segment Anything from one photo, in the browser.

Launch::

    python -m apps.demo --model sam_vit_b                      # http://127.0.0.1:7860
    python -m apps.demo --model sam_vit_h --checkpoint ~/sam_vit_h_4b8939.pth --device cuda --dtype bfloat16
    python -m apps.demo --model my_sam.json --checkpoint my_sam.pth   # a model config and its weights
    python -m apps.demo --random-model                         # tests only: masks are meaningless

``--model`` (and Settings → Model) takes what every ``persam`` command takes: a registry name, a
small random test model name (``tiny_random_sam``, ...; with checkpoint ``none``) or a model config
JSON file. The checkpoint is empty or ``auto`` for the cached official file, a path for that file, or
``none`` for random weights (testing only).

Images tab: upload a reference photo, mark the object by clicking (positive / negative points; the
backbone segments it live) or by brushing over it, choose PerSAM or PerSAM-F, upload target photos,
and get a gallery of overlays with scores plus a zip of the binary masks. Video tab: upload a video,
mark one or more objects on its first frame, and get the overlay video plus a zip of DAVIS-format
per-frame masks.

Besides the page, the app serves three endpoints for programmatic clients (``gradio_client``):
``/reference_mask`` (reference image + clicks -> mask), ``/segment_images`` (reference image + mask
image or clicks, targets -> gallery, zip, status) and ``/track_video`` (video + first-frame label
map or clicks -> overlay video, zip, status). Clicks are JSON: ``[[x, y, label], ...]`` for images
and ``[[x, y, label, object_id], ...]`` for videos (label 1 positive, 0 negative).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from persam import devices
from persam.drawing import overlay_labels, render_overlay
from persam.io import InputError, as_image, load_image, load_label_map
from persam.outputs import mask_to_png_array
from persam.readers import DAVIS_PALETTE, open_video
from persam.registry import get_spec, is_registered, list_models, random_model_names
from persam.weights import WeightsError, cache_location, cached_path, get_info

logger = logging.getLogger("persam.demo")

# A deliberately small random SAM (real 1024-pixel geometry, 64x64 embedding grid, windowed
# attention only), for tests and UI development: one image-encoder pass takes milliseconds.
RANDOM_MODEL_CONFIG: dict[str, Any] = {
    "name": "random_demo_model",
    "family": "sam",
    "image_encoder": {
        "class": "ImageEncoderViT",
        "img_size": 1024,
        "patch_size": 16,
        "in_chans": 3,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "out_chans": 32,
        "qkv_bias": True,
        "use_abs_pos": True,
        "use_rel_pos": True,
        "window_size": 8,
        "global_attn_indexes": [],
    },
    "prompt_encoder": {
        "class": "PromptEncoder",
        "embed_dim": 32,
        "image_embedding_size": [64, 64],
        "input_image_size": [1024, 1024],
        "mask_in_chans": 8,
    },
    "mask_decoder": {
        "class": "MaskDecoder",
        "transformer_dim": 32,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 32,
        "transformer": {
            "class": "TwoWayTransformer",
            "depth": 2,
            "embedding_dim": 32,
            "num_heads": 2,
            "mlp_dim": 64,
            "attention_downsample_rate": 2,
        },
    },
    "pixel_mean": [123.675, 116.28, 103.53],
    "pixel_std": [58.395, 57.12, 57.375],
}

RANDOM_BANNER = (
    "⚠️ **Test mode: a small random model is loaded — its masks are meaningless.** "
    "Start the demo with `--model NAME` (and `--checkpoint PATH` or a cached checkpoint) for real results."
)
# Shown with every result computed with checkpoint ``none`` (random weights on a chosen model).
RANDOM_WEIGHTS_NOTE = (
    "⚠️ **Test mode: checkpoint `none` gives the model random weights — its masks are meaningless.** "
    "Leave Settings → Checkpoint empty (the cached official checkpoint) or give a checkpoint file "
    "for real results."
)

MODEL_CHOICES: list[str] = list_models()
DEVICE_CHOICES = list(devices.DEVICE_CHOICES)
DTYPE_CHOICES = list(devices.DTYPE_CHOICES)
CHECKPOINT_HELP = (
    "empty or auto: the cached official checkpoint; a path: that file; none: random weights (testing only)"
)
METHOD_LABELS = {"PerSAM": "persam", "PerSAM-F": "persam_f"}
MAX_OBJECTS = 6

CSS = """
#status-images, #status-video, #status-model { min-height: 1.6em; }
.persam-error { color: var(--error-text-color, #b91c1c); font-weight: 600; }
#banner { background: #fff4e5; border: 1px solid #f0b35a; border-radius: 8px; padding: 4px 12px; }
"""


class DemoError(Exception):
    """A problem to show to the user in the page (one readable sentence)."""


# ---------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelSettings:
    """What the Settings panel selects.

    Attributes:
        model: registry name, small random test model name or model config JSON path.
        checkpoint: empty or ``auto`` (the cached official file), a path, or ``none`` (random weights).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        dtype: image-encoder precision, one of :data:`DTYPE_CHOICES`.
    """

    model: str
    checkpoint: str = ""
    device: str = "auto"
    dtype: str = "float32"

    @property
    def random_weights(self) -> bool:
        """Whether the checkpoint is ``none`` (random weights, for testing only)."""
        return self.checkpoint.strip().lower() == "none"


def official_checkpoint(name: str) -> str | None:
    """The entry of :data:`persam.weights.CHECKPOINTS` holding the official weights of model
    ``name``, or None (a model config, or a model without official weights)."""
    return get_spec(name).checkpoint if is_registered(name) else None


def how_to_get(name: str) -> str:
    """One sentence telling the user how to obtain the checkpoint of model ``name``."""
    entry = official_checkpoint(name)
    if entry is None:
        return "Enter the path of its checkpoint file under Settings → Checkpoint."
    return (
        f"Download it with `persam weights download {name}` (it goes to {cache_location(entry)}), "
        "or enter the path of a checkpoint file under Settings → Checkpoint."
    )


def resolve_model(model: str | None) -> str:
    """The model as ``build_model`` takes it: a registry name, a small random test model name, or the
    path of a model config JSON file (which must exist and hold a JSON object).

    Raises:
        DemoError: empty, unknown name, or a config file that is missing or not a JSON object.
    """
    text = (model or "").strip()
    if not text:
        raise DemoError("Choose a model under Settings → Model.")
    if is_registered(text):
        return text
    path = Path(text).expanduser()
    if path.suffix.lower() != ".json" and not path.is_file():
        raise DemoError(
            f"Unknown model {text!r}: choose one of {', '.join(MODEL_CHOICES)}, a small random test model "
            f"({', '.join(random_model_names())}) or the path of a model config JSON file."
        )
    if not path.is_file():
        raise DemoError(f"Model config file not found: {path}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DemoError(f"Cannot read the model config {path}: {e.strerror or e}.") from None
    except UnicodeDecodeError:
        raise DemoError(f"The model config {path} is not a JSON text file.") from None
    except json.JSONDecodeError as e:
        raise DemoError(f"The model config {path} is not valid JSON ({e.msg} at line {e.lineno}).") from None
    if not isinstance(config, dict):
        raise DemoError(f"The model config {path} must hold a JSON object.")
    return str(path)


def resolve_dtype(dtype: str | None) -> str:
    """``dtype`` when it is one of :data:`DTYPE_CHOICES` (empty -> float32), else a :class:`DemoError`."""
    text = (dtype or "float32").strip().lower()
    if text not in DTYPE_CHOICES:
        raise DemoError(f"Unknown precision {dtype!r} (choose one of {', '.join(DTYPE_CHOICES)}).")
    return text


def resolve_device(device: str) -> str:
    """``auto`` -> the best available device (:func:`persam.devices.resolve_device`); an unknown
    or unavailable device is a :class:`DemoError`."""
    if device not in DEVICE_CHOICES:
        raise DemoError(f"Unknown device {device!r} (choose one of {', '.join(DEVICE_CHOICES)}).")
    try:
        return str(devices.resolve_device(device))
    except InputError:
        # The page speaks in sentences; the resolver's one-line reason names the missing backend.
        raise DemoError(f"Device {device} is not available on this machine; choose cpu or auto.") from None


def resolve_checkpoint_path(name: str, checkpoint: str) -> Path | None:
    """The checkpoint file for model ``name``: the given path, the cached official file (empty or
    ``auto``), or None for ``none`` (random weights).

    The demo never downloads on its own (a checkpoint can be gigabytes): a missing file is a
    :class:`DemoError` saying how to get it. Only registry models have an official checkpoint.
    """
    name = resolve_model(name)
    text = (checkpoint or "").strip()
    if text.lower() == "none":
        return None
    if text in ("", "auto"):
        entry = official_checkpoint(name)
        if entry is None:
            raise DemoError(
                f"{name} has no official checkpoint: enter the path of its checkpoint file under "
                "Settings → Checkpoint, or `none` for random weights (testing only)."
            )
        path = cached_path(entry)
        if path is None:
            raise DemoError(f"No checkpoint for {name} in the cache. {how_to_get(name)}")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise DemoError(f"Checkpoint file not found: {path}. {how_to_get(name)}")
    return path


class ModelCache:
    """Keeps the last loaded backbone so that repeated requests do not reload it.

    Args:
        random_model: ignore the settings and serve :data:`RANDOM_MODEL_CONFIG` with random weights.
    """

    def __init__(self, random_model: bool = False) -> None:
        self.random_model = random_model
        self._key: tuple[str, str, str, str] | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    def key(self, settings: ModelSettings) -> tuple[str, str, str, str]:
        """``(model, checkpoint, device, dtype)``: settings with the same key share one loaded model."""
        if self.random_model:
            return ("random", "none", "cpu", "float32")
        return (settings.model.strip(), settings.checkpoint.strip(), settings.device, settings.dtype)

    def uses_random_weights(self, settings: ModelSettings) -> bool:
        """Whether ``settings`` give a chosen model random weights (checkpoint ``none``; not the
        ``random_model`` test mode, which says so in the page banner)."""
        return not self.random_model and settings.random_weights

    def get(self, settings: ModelSettings) -> Any:
        """The backbone for ``settings`` (loaded on first use; :class:`DemoError` on any failure)."""
        from persam.registry import build_model

        key = self.key(settings)
        with self._lock:
            if key == self._key:
                return self._model
            self._key, self._model = None, None  # free the old model before loading another
            if self.random_model:
                import torch

                torch.manual_seed(0)
                model = build_model(RANDOM_MODEL_CONFIG, checkpoint=None, device="cpu")
            else:
                name = resolve_model(settings.model)
                dtype = resolve_dtype(settings.dtype)
                path = resolve_checkpoint_path(name, settings.checkpoint)
                device = resolve_device(settings.device)
                what = f"build the model {name}" if path is None else f"load {name} from {path}"
                try:
                    model = build_model(name, checkpoint=path, device=device, dtype=dtype)
                except (WeightsError, InputError, ValueError, TypeError, KeyError, OSError) as e:
                    # Config problems (unknown section or argument) surface as TypeError / KeyError.
                    message = _one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
                    raise DemoError(f"Cannot {what}: {message}") from None
                except RuntimeError as e:  # out of memory, unsupported dtype on a device, ...
                    raise DemoError(f"Cannot load {name} on {device} in {dtype}: {_one_line(e)}") from None
            self._key, self._model = key, model
            return model

    def describe(self, settings: ModelSettings) -> str:
        """Loads the model and says what was loaded (for the Settings panel)."""
        model = self.get(settings)
        if self.random_model:
            return "Loaded a small **random** model (test mode): masks are meaningless."
        where = f"on {model.device} in {resolve_dtype(settings.dtype)}"
        if settings.random_weights:
            return f"Loaded **{model.name}** with random weights {where}.\n\n{RANDOM_WEIGHTS_NOTE}"
        return f"Loaded **{model.name}** {where} (checkpoint sha256 {model.checkpoint_id[:12]}…)."


def _one_line(e: BaseException, path: str | None = None) -> str:
    """The first line of an error message; ``path`` (a server-side upload) is shown by its name only."""
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    return line.replace(str(path), Path(path).name) if path else line


# ---------------------------------------------------------------------------------------- input
def parse_clicks(text: str | None, with_object: bool = False) -> list[tuple]:
    """Clicks from JSON: ``[[x, y, label], ...]`` (``with_object``: ``[[x, y, label, object_id], ...]``).

    Raises:
        DemoError: not JSON, or an entry that is not numbers of the right count / a label not 0 or 1.
    """
    if text is None or not str(text).strip():
        return []
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DemoError(f"Clicks are not valid JSON ({e.msg}).") from None
    n = 4 if with_object else 3
    form = "[x, y, label, object]" if with_object else "[x, y, label]"
    if not isinstance(items, list):
        raise DemoError(f"Clicks must be a list of {form} entries.")
    out = []
    for item in items:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != n
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
        ):
            raise DemoError(f"Each click must be {form} with numbers, got {item!r}.")
        if int(item[2]) not in (0, 1):
            raise DemoError(f"A click label is 1 (positive) or 0 (negative), got {item[2]!r}.")
        click = (float(item[0]), float(item[1]), int(item[2]))
        if with_object:
            if not 1 <= int(item[3]) <= 255:
                raise DemoError(f"Object ids are 1..255, got {item[3]!r}.")
            click = (*click, int(item[3]))
        out.append(click)
    return out


def brush_mask(editor_value: dict | None) -> np.ndarray | None:
    """The painted region ``bool [H, W]`` of a ``gr.ImageEditor`` value (any layer pixel with alpha > 0)."""
    labels = brush_labels(editor_value, [(255, 255, 255)])
    return None if labels is None else labels > 0


def brush_labels(editor_value: dict | None, colours: Sequence[Sequence[int]]) -> np.ndarray | None:
    """Painted pixels of a ``gr.ImageEditor`` value as a label map ``uint8 [H, W]``.

    A painted pixel (alpha > 0 in any layer) gets ``1 + `` the index of the nearest of ``colours``
    (RGB); later layers are on top. Returns None when nothing is painted.
    """
    if not editor_value:
        return None
    palette = np.asarray(colours, np.float32).reshape(-1, 3)
    labels = None
    for layer in editor_value.get("layers") or []:
        if layer is None:
            continue
        a = np.asarray(layer)
        if a.ndim != 3 or a.shape[2] != 4:
            continue
        painted = a[..., 3] > 0
        if labels is None:
            labels = np.zeros(a.shape[:2], np.uint8)
        if painted.any():
            rgb = a[painted][:, :3].astype(np.float32)
            nearest = np.argmin(((rgb[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
            labels[painted] = (nearest + 1).astype(np.uint8)
    if labels is None or not labels.any():
        return None
    return labels


def editor_background(editor_value: dict | None) -> np.ndarray | None:
    """The photo under a ``gr.ImageEditor`` value, ``uint8 [H, W, 3]``, or None."""
    if not editor_value:
        return None
    bg = editor_value.get("background")
    if bg is None:
        return None
    a = np.asarray(bg)
    if a.ndim == 3 and a.shape[2] == 4:  # transparent pixels over white, as the editor shows them
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.round(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return as_image(a, "reference photo")


def load_mask_file(path: str, size: tuple[int, int], what: str) -> np.ndarray:
    """A label map ``uint8 [H, W]`` from a mask image (binary, palette or colour PNG) of size ``(H, W)``."""
    try:
        labels = load_label_map(path)
    except InputError as e:
        raise DemoError(f"Cannot read the {what}: {_one_line(e, path)}") from None
    if labels.shape != tuple(size):
        raise DemoError(
            f"The {what} is {labels.shape[1]}x{labels.shape[0]} but the image is {size[1]}x{size[0]}."
        )
    if labels.max(initial=0) > 255:
        raise DemoError(f"The {what} has more than 255 objects.")
    if not labels.any():
        raise DemoError(f"The {what} is empty: it marks no object.")
    return labels.astype(np.uint8)


def file_path(value: Any) -> str | None:
    """The local path of a Gradio file value (str, FileData-like object or dict)."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    return str(getattr(value, "path", None) or getattr(value, "name", None) or value)


# ---------------------------------------------------------------------------------------- files
def zip_folder(folder: Path, dest: Path, prefix: str = "") -> Path:
    """Zips every file under ``folder`` (relative names, under ``prefix/``) into ``dest``."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, (Path(prefix) / f.relative_to(folder)).as_posix())
    return dest


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def draw_clicks(image: np.ndarray, labels: np.ndarray, clicks: Sequence[tuple]) -> np.ndarray:
    """The label map ``[H, W]`` tinted over ``image`` in DAVIS colours, with the clicks as dots."""
    out = overlay_labels(image, labels.astype(np.uint8), DAVIS_PALETTE)
    if clicks:
        pts = np.array([c[:2] for c in clicks], np.float64)
        lab = np.array([c[2] for c in clicks], np.int64)
        out = render_overlay(out, np.zeros(labels.shape, bool), pts, lab)
    return out


def draw_reference(image: np.ndarray, mask: np.ndarray | None, clicks: Sequence[tuple]) -> np.ndarray:
    """The reference mask ``bool [H, W]`` (or none yet) drawn like the results, with the clicks."""
    mask = np.zeros(image.shape[:2], bool) if mask is None else mask
    pts = np.array([c[:2] for c in clicks], np.float64).reshape(-1, 2)
    return render_overlay(image, mask, pts, np.array([c[2] for c in clicks], np.int64))


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def davis_colour(object_id: int) -> tuple[int, int, int]:
    r, g, b = DAVIS_PALETTE[3 * object_id : 3 * object_id + 3]
    return int(r), int(g), int(b)


# ---------------------------------------------------------------------------------------- logic
@dataclass
class ImagesResult:
    """Output of :meth:`DemoEngine.segment_images`."""

    gallery: list[tuple[np.ndarray, str]]  # (overlay uint8 [H, W, 3], caption) per target
    zip_path: Path  # binary mask PNGs (0 / 255), one per target
    summary: str


@dataclass
class VideoResult:
    """Output of :meth:`DemoEngine.track_video`."""

    video_path: Path  # WebM (VP8) overlay video, one frame per tracked frame
    zip_path: Path  # DAVIS palette PNGs ``<video>/<frame>.png`` and ``scores.json``
    frames: int
    summary: str


class DemoEngine:
    """Everything the page does, as plain methods (the Gradio layer only wires them up).

    The backbone holds one image at a time, so every method that runs it takes ``self.lock``.

    Args:
        cache: the model cache.
        work_dir: where result files are written (a fresh temporary folder when None; removed at exit).
        max_concepts: learned concepts kept for reuse (keyed by reference image, mask, method, model).
    """

    def __init__(self, cache: ModelCache, work_dir: Path | None = None, max_concepts: int = 4) -> None:
        self.cache = cache
        if work_dir is None:
            work_dir = Path(tempfile.mkdtemp(prefix="persam-demo-"))
            atexit.register(shutil.rmtree, work_dir, True)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.max_concepts = max_concepts
        self._concepts: OrderedDict[str, Any] = OrderedDict()
        self.concepts_learned = 0  # how many times a concept was learned (the rest were reused)

    # -- files
    def new_result_dir(self, max_age_s: float = 3600.0) -> Path:
        """A fresh folder for one request's files; folders of requests older than ``max_age_s`` go."""
        now = time.time()
        for d in self.work_dir.glob("run-*"):
            try:
                if now - d.stat().st_mtime > max_age_s:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))

    # -- reference mask
    def mask_from_clicks(
        self, settings: ModelSettings, image: np.ndarray, clicks: Sequence[tuple]
    ) -> np.ndarray:
        """``bool [H, W]``: the backbone's mask for positive / negative clicks ``(x, y, label)``."""
        from persam.personalize import mask_from_prompts, points_outside

        if not any(c[2] == 1 for c in clicks):
            raise DemoError("Click on the object (a positive point) in the reference photo first.")
        h, w = image.shape[:2]
        outside = points_outside([c[:2] for c in clicks], (h, w))
        if outside.any():
            c = clicks[int(np.argmax(outside))]
            raise DemoError(f"Click ({c[0]:g}, {c[1]:g}) is outside the {w}x{h} photo.")
        pts = np.array([c[:2] for c in clicks], np.float32)
        labels = np.array([c[2] for c in clicks], np.int64)
        with self.lock:
            model = self.cache.get(settings)
            try:
                # The backbone keeps the photo encoded between clicks: only the decoder runs again.
                mask = mask_from_prompts(model, image, pts, labels)
            except (InputError, ValueError) as e:
                raise DemoError(f"Cannot segment the clicks: {_one_line(e)}") from None
        return np.asarray(mask, bool)

    def labels_from_clicks(
        self, settings: ModelSettings, frame: np.ndarray, clicks: Sequence[tuple]
    ) -> np.ndarray:
        """A label map ``uint8 [H, W]`` from clicks ``(x, y, label, object_id)``: one mask per object
        (an object needs a positive click), later ids on top."""
        labels = np.zeros(frame.shape[:2], np.uint8)
        for obj in sorted({int(c[3]) for c in clicks}):
            pts = [c[:3] for c in clicks if int(c[3]) == obj]
            if any(c[2] == 1 for c in pts):
                labels[self.mask_from_clicks(settings, frame, pts)] = obj
        if not labels.any():
            raise DemoError("Mark at least one object: click on it (a positive point) in the first frame.")
        return labels

    # -- images
    def concept(self, settings: ModelSettings, image: np.ndarray, mask: np.ndarray, method: str) -> Any:
        """The concept learned from this reference, computed once and reused while it is kept."""
        from persam.personalize import learn

        key = _digest(image, mask.astype(bool)) + method + repr(self.cache.key(settings))
        with self.lock:
            model = self.cache.get(settings)
            if key in self._concepts:
                self._concepts.move_to_end(key)
                return self._concepts[key]
            try:
                concept = learn(model, image, mask, method=method)
            except (InputError, ValueError) as e:
                raise DemoError(f"Cannot learn from the reference: {_one_line(e)}") from None
            self.concepts_learned += 1
            self._concepts[key] = concept
            while len(self._concepts) > self.max_concepts:
                self._concepts.popitem(last=False)
            return concept

    def segment_images(
        self,
        settings: ModelSettings,
        ref_image: np.ndarray,
        ref_mask: np.ndarray,
        method: str,
        targets: Sequence[str],
        progress: Callable[[float, str], None] | None = None,
    ) -> ImagesResult:
        """Learns the concept (once) and segments every target file.

        Targets that cannot be read are listed in the summary; the others are still segmented.
        """
        if ref_mask.shape != ref_image.shape[:2]:
            raise DemoError(
                f"The reference mask is {ref_mask.shape[1]}x{ref_mask.shape[0]} but the photo is "
                f"{ref_image.shape[1]}x{ref_image.shape[0]}."
            )
        if not ref_mask.any():
            raise DemoError("The reference mask is empty: mark the object in the reference photo.")
        if not targets:
            raise DemoError("Upload at least one target image.")
        if progress is not None:
            progress(0.0, "learning the concept")
        concept = self.concept(settings, ref_image, ref_mask, method)
        out_dir = self.new_result_dir()
        mask_dir = out_dir / "masks"
        mask_dir.mkdir()
        gallery: list[tuple[np.ndarray, str]] = []
        failed: list[str] = []
        used: set[str] = set()
        for i, path in enumerate(targets):
            name = Path(path).name
            if progress is not None:
                progress(i / len(targets), f"segmenting {name}")
            try:
                image = load_image(path)
            except InputError:
                failed.append(f"{name} (not a readable image)")
                continue
            with self.lock:
                result = concept.segment(image)
            mask = np.asarray(result.mask, bool)
            pts = result.points
            caption = f"{name} — score {float(result.score):.3f}"
            if not result.found:
                caption += " (not found)"
            gallery.append((render_overlay(image, mask, pts, result.point_labels), caption))
            stem = Path(name).stem
            out_name, k = f"{stem}.png", 1
            while out_name in used:
                k += 1
                out_name = f"{stem}_{k}.png"
            used.add(out_name)
            Image.fromarray(mask_to_png_array(mask)).save(mask_dir / out_name)
        if not gallery:
            raise DemoError("No target could be read as an image: " + "; ".join(failed) + ".")
        label = "PerSAM-F" if method == "persam_f" else "PerSAM"
        summary = f"Segmented {len(gallery)} image(s) with {label}."
        if failed:
            summary += " Skipped: " + "; ".join(failed) + "."
        zip_path = zip_folder(mask_dir, out_dir / "masks.zip")
        if progress is not None:
            progress(1.0, "done")
        return ImagesResult(gallery, zip_path, summary)

    # -- video
    def first_frame(self, video_path: str) -> np.ndarray:
        """Frame 0 of a video, ``uint8 [H, W, 3]`` (:class:`DemoError` when it cannot be decoded)."""
        try:
            with open_video(video_path) as source:
                for _, frame in source.frames():
                    return frame
        except InputError as e:
            raise DemoError(f"Cannot read the video: {_one_line(e, video_path)}") from None
        raise DemoError("Cannot read the video: it holds no frame that can be decoded.")

    def track_video(
        self,
        settings: ModelSettings,
        video_path: str,
        first_labels: np.ndarray,
        method: str,
        progress: Callable[[float, str], None] | None = None,
    ) -> VideoResult:
        """Tracks the objects of the first-frame label map ``uint8 [H, W]`` through the video."""
        from persam.pipelines.video import track_to_folder

        if not first_labels.any():
            raise DemoError("Mark at least one object on the first frame.")
        out_dir = self.new_result_dir()
        stem = Path(video_path).stem or "video"
        video_out = out_dir / f"{stem}_overlay.webm"
        try:
            source = open_video(video_path)
        except InputError as e:
            raise DemoError(f"Cannot read the video: {_one_line(e, video_path)}") from None
        total = source.info.num_frames
        done = [0]

        def on_frame(_: Any) -> None:
            done[0] += 1
            if progress is not None:
                share = done[0] / total if total else 0.0
                progress(min(share, 1.0), f"frame {done[0]}" + (f" of {total}" if total else ""))

        try:
            with self.lock, source:
                model = self.cache.get(settings)
                summary = track_to_folder(
                    model, source, first_labels, out_dir / "masks", overlay=video_out, method=method,
                    on_frame=on_frame,
                )  # fmt: skip
        except InputError as e:
            raise DemoError(f"Tracking stopped: {_one_line(e, video_path)}") from None
        frames = summary.frames
        if frames == 0:
            raise DemoError("Cannot read the video: it holds no frame that can be decoded.")
        zip_path = zip_folder(out_dir / "masks", out_dir / f"{stem}_masks_davis.zip", prefix=stem)
        n_obj = len([v for v in np.unique(first_labels) if v])
        summary = f"Tracked {n_obj} object(s) over {frames} frame(s)."
        return VideoResult(video_out, zip_path, frames, summary)


# ---------------------------------------------------------------------------------------- page
def _error(text: str) -> str:
    return f'<span class="persam-error">⚠️ {text}</span>'


def _unexpected(e: BaseException) -> str:
    logger.exception("unexpected error in the demo")
    return _error(f"Unexpected error ({type(e).__name__}: {_one_line(e)}). The server log has the details.")


def settings_of(model: str | None, checkpoint: str | None, device: str, dtype: str | None) -> ModelSettings:
    return ModelSettings(model=model or "", checkpoint=checkpoint or "", device=device, dtype=dtype or "")


def guarded(fn: Callable[..., tuple], on_error: tuple) -> Callable[..., tuple]:
    """Runs ``fn``; a :class:`DemoError` (or anything unexpected) becomes a message in the last
    output (the status) and the other outputs take ``on_error``, so the page keeps working."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> tuple:
        try:
            return fn(*args, **kwargs)
        except DemoError as e:
            message = _error(str(e))
        except InputError as e:
            message = _error(_one_line(e))
        except Exception as e:  # keep serving whatever went wrong
            message = _unexpected(e)
        return (*on_error, message)

    return run


class PageCallbacks:
    """What the page's events run; each returns the new values of its outputs (status last).

    A :class:`DemoError` raised here is shown in the page by :func:`guarded`.
    """

    def __init__(self, engine: DemoEngine) -> None:
        self.engine = engine

    def done(self, text: str, settings: ModelSettings) -> str:
        """A success status; with random weights (checkpoint ``none``) it adds that masks are meaningless."""
        if self.engine.cache.uses_random_weights(settings):
            return f"{text}\n\n{RANDOM_WEIGHTS_NOTE}"
        return text

    # ------------------------------------------------------------------ images: reference
    def on_ref_upload(self, image: np.ndarray | None) -> tuple:
        if image is None:
            return None, [], None, None, "Upload a reference photo."
        img = as_image(np.asarray(image), "reference photo")
        editor = {"background": img, "layers": [], "composite": img}
        return (
            img,
            [],
            None,
            editor,
            "Click on your object (positive points), or brush over it in the Brush tab.",
        )

    def on_ref_clear(self) -> tuple:
        return None, [], None, None, "Upload a reference photo."

    def on_ref_click(
        self, image, clicks, click_label, model, checkpoint, device, dtype, evt: gr.SelectData
    ) -> tuple:
        if image is None:
            return gr.update(), clicks, None, _error("Upload a reference photo first.")
        x, y = evt.index[0], evt.index[1]
        clicks = list(clicks or []) + [(float(x), float(y), 1 if click_label == "positive" else 0)]
        img = as_image(np.asarray(image), "reference photo")
        settings = settings_of(model, checkpoint, device, dtype)
        try:
            mask = self.engine.mask_from_clicks(settings, img, clicks)
        except DemoError as e:
            return draw_reference(img, None, clicks), clicks, None, _error(str(e))
        view = draw_reference(img, mask, clicks)
        status = f"Reference mask: {int(mask.sum())} pixels from {len(clicks)} click(s)."
        return view, clicks, mask, self.done(status, settings)

    def on_clear_clicks(self, image) -> tuple:
        return image, [], None, "Clicks cleared."

    def reference_from_ui(self, ref_plain, ref_mask, brush, mask_source) -> tuple[np.ndarray, np.ndarray]:
        if mask_source == "brush":
            img = editor_background(brush)
            if img is None:
                raise DemoError("No reference photo: upload one in the Brush tab (or the Click points tab).")
            mask = brush_mask(brush)
            if mask is None:
                raise DemoError("No reference mask: brush over your object in the reference photo.")
            return img, mask
        if ref_plain is None:
            raise DemoError("No reference photo: upload one first.")
        if ref_mask is None:
            raise DemoError("No reference mask: click on your object in the reference photo first.")
        return as_image(np.asarray(ref_plain), "reference photo"), np.asarray(ref_mask, bool)

    def run_images(self, img, mask, method, targets, settings: ModelSettings, progress) -> tuple:
        paths = [p for p in (file_path(t) for t in (targets or [])) if p]
        res = self.engine.segment_images(
            settings,
            img,
            mask,
            METHOD_LABELS.get(method, method),
            paths,
            progress=lambda f, d: progress(f, desc=d),
        )
        return res.gallery, str(res.zip_path), self.done(res.summary, settings)

    def on_run_images(
        self,
        ref_plain,
        ref_mask,
        brush,
        mask_source,
        method,
        targets,
        model,
        checkpoint,
        device,
        dtype,
        progress=gr.Progress(),  # noqa: B008 (Gradio injects the tracker)
    ) -> tuple:
        img, mask = self.reference_from_ui(ref_plain, ref_mask, brush, mask_source)
        settings = settings_of(model, checkpoint, device, dtype)
        return self.run_images(img, mask, method, targets, settings, progress)

    def api_segment_images(
        self,
        reference,
        reference_mask,
        clicks,
        method,
        targets,
        model,
        checkpoint,
        device,
        dtype,
        progress=gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Reference image file + (mask image file or clicks JSON [[x, y, label], ...]), target image
        files -> (gallery of overlays with scores, zip of binary masks, status)."""
        settings = settings_of(model, checkpoint, device, dtype)
        img = self._api_reference(reference)
        mask = self._api_reference_mask(img, reference_mask, clicks, settings)
        return self.run_images(img, mask, method, targets, settings, progress)

    def api_reference_mask(self, reference, clicks, model, checkpoint, device, dtype) -> tuple:
        """Reference image file + clicks JSON [[x, y, label], ...] -> (overlay, mask PNG file, status)."""
        settings = settings_of(model, checkpoint, device, dtype)
        img = self._api_reference(reference)
        pts = parse_clicks(clicks)
        if not pts:
            raise DemoError("No clicks: give at least one positive click [x, y, 1].")
        mask = self.engine.mask_from_clicks(settings, img, pts)
        path = self.engine.new_result_dir() / "reference_mask.png"
        Image.fromarray(mask_to_png_array(mask)).save(path)
        view = draw_reference(img, mask, pts)
        status = f"Reference mask: {int(mask.sum())} pixels from {len(pts)} click(s)."
        return view, str(path), self.done(status, settings)

    def _api_reference(self, reference) -> np.ndarray:
        path = file_path(reference)
        if path is None:
            raise DemoError("No reference photo: upload one first.")
        try:
            return load_image(path)
        except InputError:
            raise DemoError(f"The reference photo {Path(path).name} is not a readable image.") from None

    def _api_reference_mask(self, img, reference_mask, clicks, settings: ModelSettings) -> np.ndarray:
        mask_path = file_path(reference_mask)
        if mask_path is not None:
            return load_mask_file(mask_path, img.shape[:2], "reference mask") > 0
        pts = parse_clicks(clicks)
        if not pts:
            raise DemoError("No reference mask: give a mask image or click on your object.")
        return self.engine.mask_from_clicks(settings, img, pts)

    # ------------------------------------------------------------------ video
    def on_video_upload(self, video) -> tuple:
        path = file_path(video)
        if not path:
            return None, None, [], None, "Upload a video."
        frame = self.engine.first_frame(path)
        editor = {"background": frame, "layers": [], "composite": frame}
        return frame, frame, [], editor, "Pick an object number, then click on it in the first frame."

    def on_frame_click(
        self, frame, clicks, obj_id, click_label, model, checkpoint, device, dtype, evt: gr.SelectData
    ):
        if frame is None:
            return gr.update(), clicks, _error("Upload a video first.")
        x, y = evt.index[0], evt.index[1]
        clicks = list(clicks or []) + [
            (float(x), float(y), 1 if click_label == "positive" else 0, int(obj_id))
        ]
        settings = settings_of(model, checkpoint, device, dtype)
        try:
            labels = self.engine.labels_from_clicks(settings, frame, clicks)
        except DemoError as e:
            return draw_clicks(frame, np.zeros(frame.shape[:2], np.uint8), clicks), clicks, _error(str(e))
        n = len([v for v in np.unique(labels) if v])
        return draw_clicks(frame, labels, clicks), clicks, self.done(f"{n} object(s) marked.", settings)

    def on_frame_clear(self, frame) -> tuple:
        return frame, [], "Clicks cleared."

    def run_video(self, video_path, labels, method, settings: ModelSettings, progress) -> tuple:
        res = self.engine.track_video(
            settings,
            video_path,
            labels,
            METHOD_LABELS.get(method, method),
            progress=lambda f, d: progress(f, desc=d),
        )
        return str(res.video_path), str(res.zip_path), self.done(res.summary, settings)

    def on_run_video(
        self,
        video,
        frame,
        clicks,
        brush,
        mask_source,
        method,
        model,
        checkpoint,
        device,
        dtype,
        progress=gr.Progress(),  # noqa: B008
    ) -> tuple:
        settings = settings_of(model, checkpoint, device, dtype)
        path = file_path(video)
        if not path:
            raise DemoError("Upload a video first.")
        if frame is None:
            frame = self.engine.first_frame(path)
        if mask_source == "brush":
            labels = brush_labels(brush, [davis_colour(k) for k in range(1, MAX_OBJECTS + 1)])
            if labels is None:
                raise DemoError("Mark at least one object: brush over it in the first frame.")
            if labels.shape != frame.shape[:2]:
                raise DemoError("The brushed frame does not match the video size; upload the video again.")
        else:
            labels = self.engine.labels_from_clicks(settings, frame, clicks or [])
        return self.run_video(path, labels, method, settings, progress)

    def api_track_video(
        self,
        video,
        first_mask,
        clicks,
        method,
        model,
        checkpoint,
        device,
        dtype,
        progress=gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Video file + (first-frame label map image or clicks JSON [[x, y, label, object], ...]) ->
        (overlay video, zip of DAVIS-format masks, status)."""
        settings = settings_of(model, checkpoint, device, dtype)
        path = file_path(video)
        if not path:
            raise DemoError("Upload a video first.")
        frame = self.engine.first_frame(path)
        mask_path = file_path(first_mask)
        if mask_path is not None:
            labels = load_mask_file(mask_path, frame.shape[:2], "first-frame mask")
        else:
            pts = parse_clicks(clicks, with_object=True)
            labels = self.engine.labels_from_clicks(settings, frame, pts)
        return self.run_video(path, labels, method, settings, progress)

    # ------------------------------------------------------------------ settings
    def on_load_model(self, model, checkpoint, device, dtype) -> str:
        try:
            with self.engine.lock:
                return self.engine.cache.describe(settings_of(model, checkpoint, device, dtype))
        except DemoError as e:
            return _error(str(e))
        except Exception as e:
            return _unexpected(e)


def build_app(
    engine: DemoEngine,
    *,
    banner: str | None = None,
    default_model: str = "sam_vit_b",
    default_checkpoint: str = "",
    default_device: str = "auto",
    default_dtype: str = "float32",
) -> Any:
    """The Gradio Blocks of the demo (start it with :func:`serve`).

    The defaults fill the Settings panel (and are what API clients get when they leave the settings
    out); they are checked when the model is loaded, so a bad one is a message in the page.
    """
    cb = PageCallbacks(engine)
    # All model work runs one request at a time: the backbone holds one image.
    model_queue = {"concurrency_id": "persam-model", "concurrency_limit": 1}
    private = {"api_visibility": "private"}

    # ------------------------------------------------------------------ layout
    model_labels = model_choices(default_model)
    with gr.Blocks(title="persam — personalize Segment Anything") as app:
        gr.Markdown(
            "# persam\nSegment **your** object in new photos and videos from one example: "
            "mark it once, PerSAM finds it everywhere."
        )
        if banner:
            gr.Markdown(banner, elem_id="banner")
        with gr.Accordion("Settings", open=False, elem_id="settings"):
            with gr.Row():
                model = gr.Dropdown(
                    model_labels,
                    value=default_model,
                    label="Model",
                    info="a name from the list, or the path of a model config JSON file",
                    allow_custom_value=True,
                    elem_id="model",
                )
                checkpoint = gr.Textbox(
                    value=default_checkpoint,
                    label="Checkpoint (path, auto or none)",
                    placeholder=CHECKPOINT_HELP,
                    elem_id="checkpoint",
                )
                device = gr.Dropdown(DEVICE_CHOICES, value=default_device, label="Device", elem_id="device")
                dtype = gr.Dropdown(DTYPE_CHOICES, value=default_dtype, label="Precision", elem_id="dtype")
            with gr.Row():
                load_btn = gr.Button("Load model", size="sm", scale=0, min_width=140)
                random_weights = default_checkpoint.strip().lower() == "none" and not banner
                model_status = gr.Markdown(
                    RANDOM_WEIGHTS_NOTE if random_weights else "", elem_id="status-model"
                )
        settings = [model, checkpoint, device, dtype]

        with gr.Tabs():
            # ---------------------------------------------------------- images tab
            with gr.Tab("Images", id="images"):
                clicks = gr.State([])
                ref_plain = gr.State(None)
                ref_mask = gr.State(None)
                mask_source = gr.State("clicks")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        gr.Markdown("### 1. Reference: mark your object")
                        with gr.Tabs():
                            with gr.Tab("Click points", id="ref-clicks") as tab_clicks:
                                ref_view = gr.Image(
                                    type="numpy",
                                    label="Reference photo — click on your object",
                                    sources=["upload", "clipboard"],
                                    elem_id="ref-image",
                                    height=360,
                                )
                                with gr.Row():
                                    click_label = gr.Radio(
                                        ["positive", "negative"],
                                        value="positive",
                                        label="A click adds a",
                                        elem_id="click-label",
                                    )
                                    clear_btn = gr.Button("Clear clicks", size="sm", scale=0, min_width=120)
                            with gr.Tab("Brush", id="ref-brush") as tab_brush:
                                brush = gr.ImageEditor(
                                    type="numpy",
                                    label="Reference photo — paint over your object",
                                    sources=["upload", "clipboard"],
                                    brush=gr.Brush(colors=[("#ff3b30", 0.6)], color_mode="fixed"),
                                    transforms=(),
                                    layers=False,
                                    elem_id="ref-brush-editor",
                                    height=360,
                                )
                        method = gr.Radio(
                            list(METHOD_LABELS),
                            value="PerSAM",
                            label="Method",
                            info="PerSAM is training-free; PerSAM-F also fits two mask weights (slower).",
                            elem_id="method",
                        )
                    with gr.Column(scale=1):
                        gr.Markdown("### 2. Targets: where to find it")
                        targets = gr.File(
                            file_count="multiple",
                            label="Target photos",
                            elem_id="targets",
                            height=160,
                        )
                        run_btn = gr.Button("Segment", variant="primary", elem_id="run-images")
                        status = gr.Markdown("", elem_id="status-images")
                        gallery = gr.Gallery(
                            label="Results (overlay, score)",
                            columns=3,
                            height=340,
                            object_fit="contain",
                            elem_id="gallery",
                        )
                        masks_zip = gr.DownloadButton(
                            "Download the masks (zip)", elem_id="masks-zip", size="md"
                        )

                ref_outputs = [ref_plain, clicks, ref_mask, brush, status]
                ref_view.upload(cb.on_ref_upload, [ref_view], ref_outputs, queue=False, **private)
                ref_view.clear(cb.on_ref_clear, None, ref_outputs, queue=False, **private)
                ref_view.select(
                    guarded(cb.on_ref_click, (gr.update(), gr.update(), gr.update())),
                    [ref_plain, clicks, click_label, *settings],
                    [ref_view, clicks, ref_mask, status],
                    **private,
                    **model_queue,
                )
                clear_btn.click(
                    cb.on_clear_clicks, [ref_plain], [ref_view, clicks, ref_mask, status], **private
                )
                tab_clicks.select(lambda: "clicks", None, mask_source, queue=False, **private)
                tab_brush.select(lambda: "brush", None, mask_source, queue=False, **private)
                run_btn.click(
                    guarded(cb.on_run_images, ([], None)),
                    [ref_plain, ref_mask, brush, mask_source, method, targets, *settings],
                    [gallery, masks_zip, status],
                    **private,
                    **model_queue,
                )

            # ---------------------------------------------------------- video tab
            with gr.Tab("Video", id="video"):
                v_clicks = gr.State([])
                v_frame = gr.State(None)
                v_source = gr.State("clicks")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        gr.Markdown("### 1. Video and its objects")
                        video = gr.File(
                            label="Video (mp4, webm, avi, mov, ...)", elem_id="video-in", height=120
                        )
                        with gr.Tabs():
                            with gr.Tab("Click points", id="frame-clicks") as v_tab_clicks:
                                frame_view = gr.Image(
                                    type="numpy",
                                    label="First frame — click on each object",
                                    interactive=False,
                                    elem_id="frame",
                                    height=320,
                                )
                                with gr.Row():
                                    obj_id = gr.Dropdown(
                                        list(range(1, MAX_OBJECTS + 1)), value=1, label="Object", min_width=90
                                    )
                                    v_click_label = gr.Radio(
                                        ["positive", "negative"], value="positive", label="A click adds a"
                                    )
                                    v_clear = gr.Button("Clear clicks", size="sm", scale=0, min_width=120)
                            with gr.Tab("Brush", id="frame-brush") as v_tab_brush:
                                colours = [(_hex(davis_colour(k)), 0.6) for k in range(1, MAX_OBJECTS + 1)]
                                v_brush = gr.ImageEditor(
                                    type="numpy",
                                    label="First frame — paint each object in its own colour",
                                    sources=(),
                                    brush=gr.Brush(colors=colours, color_mode="fixed"),
                                    transforms=(),
                                    layers=False,
                                    elem_id="frame-brush-editor",
                                    height=320,
                                )
                        v_method = gr.Radio(list(METHOD_LABELS), value="PerSAM", label="Method")
                    with gr.Column(scale=1):
                        gr.Markdown("### 2. Track")
                        v_run = gr.Button("Track", variant="primary", elem_id="run-video")
                        v_status = gr.Markdown("", elem_id="status-video")
                        v_out = gr.Video(label="Overlay video", elem_id="video-out", height=320)
                        v_zip = gr.DownloadButton(
                            "Download the per-frame masks (DAVIS format, zip)", elem_id="video-zip", size="md"
                        )

                video.change(
                    guarded(cb.on_video_upload, (None, None, [], None)),
                    [video],
                    [frame_view, v_frame, v_clicks, v_brush, v_status],
                    **private,
                    **model_queue,
                )
                frame_view.select(
                    guarded(cb.on_frame_click, (gr.update(), gr.update())),
                    [v_frame, v_clicks, obj_id, v_click_label, *settings],
                    [frame_view, v_clicks, v_status],
                    **private,
                    **model_queue,
                )
                v_clear.click(cb.on_frame_clear, [v_frame], [frame_view, v_clicks, v_status], **private)
                v_tab_clicks.select(lambda: "clicks", None, v_source, queue=False, **private)
                v_tab_brush.select(lambda: "brush", None, v_source, queue=False, **private)
                v_run.click(
                    guarded(cb.on_run_video, (None, None)),
                    [video, v_frame, v_clicks, v_brush, v_source, v_method, *settings],
                    [v_out, v_zip, v_status],
                    **private,
                    **model_queue,
                )

        load_btn.click(cb.on_load_model, settings, [model_status], **private, **model_queue)

        # -------------------------------------------------------------- API for programmatic clients
        with gr.Group(visible=False):
            api_ref = gr.File(label="reference", elem_id="api-reference")
            api_ref_mask = gr.File(label="reference_mask")
            api_clicks = gr.Textbox(label="clicks")
            api_mask_out = gr.File(label="mask")
            api_view = gr.Image(label="overlay", type="numpy")
            api_video = gr.File(label="video")
            api_first_mask = gr.File(label="first_mask")
            api_v_clicks = gr.Textbox(label="clicks")
            api_status = gr.Markdown()
            api_buttons = [gr.Button(visible=False) for _ in range(3)]
        api_buttons[0].click(
            guarded(cb.api_reference_mask, (None, None)),
            [api_ref, api_clicks, *settings],
            [api_view, api_mask_out, api_status],
            api_name="reference_mask",
            **model_queue,
        )
        api_buttons[1].click(
            guarded(cb.api_segment_images, ([], None)),
            [api_ref, api_ref_mask, api_clicks, method, targets, *settings],
            [gallery, masks_zip, status],
            api_name="segment_images",
            **model_queue,
        )
        api_buttons[2].click(
            guarded(cb.api_track_video, (None, None)),
            [api_video, api_first_mask, api_v_clicks, v_method, *settings],
            [v_out, v_zip, v_status],
            api_name="track_video",
            **model_queue,
        )
    return app


def _model_label(name: str) -> str:
    """The architecture in words (from its official checkpoint entry), else the name."""
    entry = official_checkpoint(name)
    return get_info(entry).model if entry is not None else name


def model_choices(default_model: str = "") -> list[tuple[str, str]]:
    """``(label, value)`` of the Model dropdown: the registry models, the small random test models and,
    when it is neither, ``default_model`` itself (e.g. a config path given on the command line)."""
    choices = [(f"{_model_label(n)} ({n})", n) for n in MODEL_CHOICES]
    choices += [(f"{n} (random test model, checkpoint none)", n) for n in random_model_names()]
    if default_model and default_model not in {value for _, value in choices}:
        choices.append((default_model, default_model))
    return choices


def create_demo(
    random_model: bool = False,
    model: str = "sam_vit_b",
    checkpoint: str = "",
    device: str = "auto",
    work_dir: Path | None = None,
    dtype: str = "float32",
) -> Any:
    """The demo app (not launched); ``random_model`` serves a small random model with a warning banner."""
    engine = DemoEngine(ModelCache(random_model=random_model), work_dir=work_dir)
    return build_app(
        engine,
        banner=RANDOM_BANNER if random_model else None,
        default_model=model,
        default_checkpoint=checkpoint,
        default_device=device,
        default_dtype=dtype,
    )


def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    prevent_thread_lock: bool = False,
) -> tuple[Any, str, str | None]:
    """Starts the app (queued); returns ``(app, local URL, share URL or None)``. ``app.close()`` stops it."""
    return app.queue().launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        css=CSS,
        quiet=prevent_thread_lock,
        show_error=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m apps.demo``."""
    p = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--share", action="store_true", help="also make a public gradio.live link (off by default)"
    )
    p.add_argument(
        "--model",
        default="sam_vit_b",
        metavar="NAME|CONFIG.json",
        help="default model: a registry name (see 'persam weights list'), a small random test model "
        f"({', '.join(random_model_names())}) or a model config JSON file (default sam_vit_b)",
    )
    p.add_argument(
        "--checkpoint",
        default="",
        metavar="PATH|auto|none",
        help="default checkpoint: empty or 'auto' uses the cached official checkpoint (never downloaded "
        "by the demo), a path uses that file, 'none' keeps random weights, for testing only "
        "(default: empty)",
    )
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="default device (auto)")
    p.add_argument(
        "--dtype", default="float32", choices=DTYPE_CHOICES, help="default model precision (float32)"
    )
    p.add_argument(
        "--random-model",
        action="store_true",
        help="TESTS ONLY: serve a small random model (masks are meaningless; a banner says so)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = create_demo(args.random_model, args.model, args.checkpoint, args.device, dtype=args.dtype)
    serve(app, args.host, args.port, args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
