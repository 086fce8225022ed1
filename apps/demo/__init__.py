"""persam web demo: personalize Segment Anything from one photo, in the browser.

Launch::

    python -m apps.demo --model sam_vit_b                      # http://127.0.0.1:7860
    python -m apps.demo --model sam_vit_h --checkpoint ~/sam_vit_h_4b8939.pth --device cuda --dtype bfloat16
    python -m apps.demo --model my_sam.json --checkpoint my_sam.pth   # a model config and its weights
    python -m apps.demo --random-model                         # tests only: masks are meaningless

Modules: :mod:`.settings` (command line, model choices), :mod:`.models` (model resolution and
cache), :mod:`.engine` (every call into the library), :mod:`.inputs` (clicks, brushes, uploads),
:mod:`.examples` (example files made at first start), :mod:`.workdir` (work folder and its
cleanup), :mod:`.callbacks` (event handlers), :mod:`.layout` (the page), :mod:`.server` (start).

Besides the page, the app serves three endpoints for programmatic clients (``gradio_client``):
``/reference_mask`` (reference image + clicks -> overlay, mask, status), ``/segment_images``
(reference image + mask image or clicks, targets -> gallery, masks zip, COCO JSON, Label Studio
tasks JSON, CVAT COCO 1.0 zip, status) and
``/track_video`` (video + first-frame label map or clicks -> overlay video, zip, status). Clicks are
JSON: ``[[x, y, label], ...]`` for images and ``[[x, y, label, object_id], ...]`` for videos
(label 1 positive, 0 negative).
"""

from apps.demo.callbacks import PageCallbacks, draw_clicks, draw_reference, guarded
from apps.demo.engine import DemoEngine, ImagesResult, TargetResult, VideoResult, caption
from apps.demo.examples import Examples, ImageExample, VideoExample, make_examples
from apps.demo.inputs import brush_labels, brush_mask, davis_colour, editor_background, parse_clicks
from apps.demo.models import (
    RANDOM_MODEL_CONFIG,
    ModelCache,
    resolve_checkpoint_path,
    resolve_device,
    resolve_dtype,
    resolve_model,
)
from apps.demo.server import build_app, create_demo, main, serve
from apps.demo.settings import (
    DEFAULT_DTYPE,
    DEFAULT_MAX_FILE_SIZE,
    DTYPE_CHOICES,
    MODEL_CHOICES,
    RANDOM_BANNER,
    DemoError,
    ModelSettings,
    model_choices,
    parse_args,
)
from apps.demo.workdir import WorkDir, cleanup_on_sigterm
from persam.readers import DAVIS_PALETTE

__all__ = [
    "DAVIS_PALETTE",
    "DEFAULT_DTYPE",
    "DEFAULT_MAX_FILE_SIZE",
    "DTYPE_CHOICES",
    "MODEL_CHOICES",
    "RANDOM_BANNER",
    "RANDOM_MODEL_CONFIG",
    "DemoEngine",
    "DemoError",
    "Examples",
    "ImageExample",
    "ImagesResult",
    "ModelCache",
    "ModelSettings",
    "PageCallbacks",
    "TargetResult",
    "VideoExample",
    "VideoResult",
    "WorkDir",
    "brush_labels",
    "brush_mask",
    "build_app",
    "caption",
    "cleanup_on_sigterm",
    "create_demo",
    "davis_colour",
    "draw_clicks",
    "draw_reference",
    "editor_background",
    "guarded",
    "main",
    "make_examples",
    "model_choices",
    "parse_args",
    "parse_clicks",
    "resolve_checkpoint_path",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
    "serve",
]
