"""The demo's command line and the settings it turns into: launch options and model choices.

``--model`` takes what every ``persam`` command takes: a registry name, a small random test model
name (``tiny_random_sam``, ..., ``tiny_random_sam2``; with checkpoint ``none``) or a model config
JSON file. The checkpoint is empty or ``auto`` for the cached official file, a path for that file,
or ``none`` for random weights (testing only).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persam import devices
from persam.errors import InputError
from persam.methods import method_spec
from persam.registry import get_spec, is_registered, list_models, random_model_names
from persam.weights import get_info


class DemoError(Exception):
    """A problem to show to the user in the page (one readable sentence)."""


def _dtype_choices() -> tuple[list[str], str]:
    """The precisions to offer and the default: ``auto`` first when the library resolves it (it then
    picks the best precision for the device), else float32."""
    choices = list(devices.DTYPE_CHOICES)
    try:
        devices.resolve_dtype("auto")
    except (InputError, TypeError, ValueError):
        return choices, "float32"
    return (choices if "auto" in choices else ["auto", *choices]), "auto"


MODEL_CHOICES: list[str] = list_models()
DEVICE_CHOICES = list(devices.DEVICE_CHOICES)
DTYPE_CHOICES, DEFAULT_DTYPE = _dtype_choices()
METHOD_LABELS = {"PerSAM": "persam", "PerSAM-F": "persam_f"}
#: Segment everything, then rank the candidate masks by the concept (where the library has it).
CANDIDATES_LABEL = "Candidates"


def image_method_labels() -> dict[str, str]:
    """The Images tab's methods: PerSAM, PerSAM-F, and the candidates method when the library
    knows it (:func:`persam.methods.method_spec` accepts ``"candidates"``)."""
    labels = dict(METHOD_LABELS)
    try:
        method_spec("candidates")
    except (KeyError, ValueError):
        return labels
    labels[CANDIDATES_LABEL] = "candidates"
    return labels


def method_title(method: str) -> str:
    """How the status names ``method`` (``"persam_f"`` -> ``"PerSAM-F"``)."""
    titles = {v: k for k, v in image_method_labels().items()}
    return titles.get(method, method)


MAX_OBJECTS = 6
# Uploads above this are refused by the server before any handler runs (Gradio's max_file_size).
DEFAULT_MAX_FILE_SIZE = "50mb"

CHECKPOINT_HELP = (
    "empty or auto: the cached official checkpoint; a path: that file; none: random weights (testing only)"
)
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
    dtype: str = DEFAULT_DTYPE

    @property
    def random_weights(self) -> bool:
        """Whether the checkpoint is ``none`` (random weights, for testing only)."""
        return self.checkpoint.strip().lower() == "none"


def settings_of(model: str | None, checkpoint: str | None, device: str, dtype: str | None) -> ModelSettings:
    """The settings of the page's four Settings fields (empty fields as the defaults)."""
    return ModelSettings(model or "", checkpoint or "", device or "auto", dtype or DEFAULT_DTYPE)


@dataclass(frozen=True)
class LaunchSettings:
    """Everything ``python -m apps.demo`` was started with."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    model: ModelSettings = ModelSettings("sam_vit_b")
    random_model: bool = False
    max_file_size: str = DEFAULT_MAX_FILE_SIZE
    work_dir: Path | None = None


def official_checkpoint(name: str) -> str | None:
    """The catalogue entry holding the official weights of model ``name``, or None (a model config,
    or a model without official weights)."""
    return get_spec(name).checkpoint if is_registered(name) else None


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m apps.demo``."""
    p = argparse.ArgumentParser(
        prog="python -m apps.demo",
        description="persam web demo: personalize Segment Anything from one photo, in the browser.",
    )
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
        "--dtype",
        default=DEFAULT_DTYPE,
        choices=DTYPE_CHOICES,
        help=f"default image-encoder precision ({DEFAULT_DTYPE})",
    )
    p.add_argument(
        "--max-file-size",
        default=DEFAULT_MAX_FILE_SIZE,
        metavar="SIZE",
        help="largest upload the server accepts, e.g. 20mb or 1gb (default 50mb)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for examples and results (default: a temporary folder, removed on exit)",
    )
    p.add_argument(
        "--random-model",
        action="store_true",
        help="TESTS ONLY: serve a small random model (masks are meaningless; a banner says so)",
    )
    return p.parse_args(argv)


def launch_settings(args: argparse.Namespace | Any) -> LaunchSettings:
    """The parsed command line as :class:`LaunchSettings`."""
    return LaunchSettings(
        host=args.host,
        port=args.port,
        share=args.share,
        model=ModelSettings(args.model, args.checkpoint, args.device, args.dtype),
        random_model=args.random_model,
        max_file_size=args.max_file_size,
        work_dir=args.work_dir,
    )
