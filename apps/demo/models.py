"""Which model the page asked for, and the one loaded backbone: names, checkpoints, devices and
precisions resolved through the registry and :mod:`persam.devices`, every failure a :class:`DemoError`."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from apps.demo.settings import (
    DEVICE_CHOICES,
    DTYPE_CHOICES,
    MODEL_CHOICES,
    RANDOM_WEIGHTS_NOTE,
    DemoError,
    ModelSettings,
    official_checkpoint,
)
from persam import devices
from persam.errors import InputError
from persam.registry import build_model, is_registered, random_model_names
from persam.weights import WeightsError, cache_location, cached_path

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


def one_line(e: BaseException | str, path: str | None = None) -> str:
    """The first line of an error message; ``path`` (a server-side upload) is shown by its name only."""
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    return line.replace(str(path), Path(path).name) if path else line


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
    path of a model config JSON file (which must exist and hold a JSON object)."""
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
    """The canonical precision name (empty: the default), checked by :func:`persam.devices.resolve_dtype`."""
    text = (dtype or DTYPE_CHOICES[0]).strip().lower()
    if text != "auto":
        try:
            text = str(devices.resolve_dtype(text)).removeprefix("torch.")
        except InputError:
            text = ""
    if text not in DTYPE_CHOICES:
        raise DemoError(f"Unknown precision {dtype!r} (choose one of {', '.join(DTYPE_CHOICES)}).")
    return text


def resolve_device(device: str) -> str:
    """``auto`` -> the best available device; an unknown or unavailable device is a :class:`DemoError`."""
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
    :class:`DemoError` saying how to get it.
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
    """Keeps the last loaded backbone so that repeated requests do not reload it (one at a time:
    a second large model beside the first could exhaust the memory).

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
        key = self.key(settings)
        with self._lock:
            if key == self._key:
                return self._model
            self._key, self._model = None, None  # free the old model before loading another
            self._model = self._build(settings)
            self._key = key
            return self._model

    def _build(self, settings: ModelSettings) -> Any:
        if self.random_model:
            import torch

            torch.manual_seed(0)  # the same random model on every start, so results are repeatable
            return build_model(RANDOM_MODEL_CONFIG, checkpoint=None, device="cpu")
        name = resolve_model(settings.model)
        dtype = resolve_dtype(settings.dtype)
        path = resolve_checkpoint_path(name, settings.checkpoint)
        device = resolve_device(settings.device)
        what = f"build the model {name}" if path is None else f"load {name} from {path}"
        try:
            return build_model(name, checkpoint=path, device=device, dtype=dtype)
        except (WeightsError, InputError, ValueError, TypeError, KeyError, OSError) as e:
            # Config problems (unknown section or argument) surface as TypeError / KeyError.
            message = one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
            raise DemoError(f"Cannot {what}: {message}") from None
        except RuntimeError as e:  # out of memory, unsupported dtype on a device, ...
            raise DemoError(f"Cannot load {name} on {device} in {dtype}: {one_line(e)}") from None

    def describe(self, settings: ModelSettings) -> str:
        """Loads the model and says what was loaded (for the Settings panel)."""
        model = self.get(settings)
        if self.random_model:
            return "Loaded a small **random** model (test mode): masks are meaningless."
        where = f"on {model.device} in {resolve_dtype(settings.dtype)}"
        if settings.random_weights:
            return f"Loaded **{model.name}** with random weights {where}.\n\n{RANDOM_WEIGHTS_NOTE}"
        return f"Loaded **{model.name}** {where} (checkpoint sha256 {model.checkpoint_id[:12]}…)."
