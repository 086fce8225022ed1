"""Building and starting the demo: engine, examples and page put together, then served."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from apps.demo.callbacks import PageCallbacks
from apps.demo.engine import DemoEngine
from apps.demo.examples import make_examples
from apps.demo.layout import CSS, build_blocks
from apps.demo.models import ModelCache
from apps.demo.settings import (
    DEFAULT_DTYPE,
    DEFAULT_MAX_FILE_SIZE,
    RANDOM_BANNER,
    ModelSettings,
    launch_settings,
    parse_args,
)
from apps.demo.workdir import cleanup_on_sigterm
from persam import tune_cpu_allocator


def build_app(
    engine: DemoEngine,
    *,
    banner: str | None = None,
    default_model: str = "sam_vit_b",
    default_checkpoint: str = "",
    default_device: str = "auto",
    default_dtype: str = DEFAULT_DTYPE,
) -> gr.Blocks:
    """The demo page over ``engine`` (start it with :func:`serve`); the example files are made in
    the engine's work folder on first use."""
    defaults = ModelSettings(default_model, default_checkpoint, default_device, default_dtype)
    app = build_blocks(PageCallbacks(engine), make_examples(engine.work_dir), defaults, banner)
    app.persam_work_dir = engine.work_dir  # served to the page (examples, results)
    return app


def create_demo(
    random_model: bool = False,
    model: str = "sam_vit_b",
    checkpoint: str = "",
    device: str = "auto",
    work_dir: Path | None = None,
    dtype: str = DEFAULT_DTYPE,
) -> gr.Blocks:
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
    app: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    prevent_thread_lock: bool = False,
    max_file_size: str | int | None = DEFAULT_MAX_FILE_SIZE,
) -> tuple[Any, str, str | None]:
    """Starts the app (queued); returns ``(app, local URL, share URL or None)``. ``app.close()`` stops it.

    Uploads over ``max_file_size`` (``"50mb"``, bytes, or None for no limit) are refused by the server.
    """
    work_dir = getattr(app, "persam_work_dir", None)
    return app.queue().launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        css=CSS,
        quiet=prevent_thread_lock,
        show_error=False,
        max_file_size=max_file_size,
        allowed_paths=[str(work_dir)] if work_dir is not None else None,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m apps.demo``: serve until stopped; the work folder is removed on exit or SIGTERM."""
    launch = launch_settings(parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tune_cpu_allocator()
    engine = DemoEngine(ModelCache(random_model=launch.random_model), work_dir=launch.work_dir)
    cleanup_on_sigterm(engine.work)
    m = launch.model
    app = build_app(
        engine,
        banner=RANDOM_BANNER if launch.random_model else None,
        default_model=m.model,
        default_checkpoint=m.checkpoint,
        default_device=m.device,
        default_dtype=m.dtype,
    )
    serve(app, launch.host, launch.port, launch.share, max_file_size=launch.max_file_size)
    return 0
