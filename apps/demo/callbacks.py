"""What the page's events run: Gradio values in, engine calls, new output values out (status last).

A :class:`DemoError` raised here becomes a message in the page through :func:`guarded`, so a bad
input never breaks the page or shows a stack trace.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from apps.demo.engine import DemoEngine, ImagesResult
from apps.demo.inputs import (
    brush_labels,
    brush_mask,
    davis_colour,
    editor_background,
    file_path,
    load_mask_file,
    parse_clicks,
)
from apps.demo.models import one_line
from apps.demo.settings import (
    MAX_OBJECTS,
    METHOD_LABELS,
    RANDOM_WEIGHTS_NOTE,
    DemoError,
    ModelSettings,
    image_method_labels,
)
from apps.demo.settings import settings_of as _settings
from persam.drawing import overlay_labels, render_overlay
from persam.io import InputError, as_image, load_image
from persam.outputs import mask_to_png_array
from persam.readers import DAVIS_PALETTE

logger = logging.getLogger("persam.demo")

UPLOAD_REFERENCE = "Upload a reference photo, or pick an example below."
CLICK_HINT = "Click on your object (positive points), or brush over it in the Brush tab."


def error_html(text: str) -> str:
    return f'<span class="persam-error">⚠️ {text}</span>'


def unexpected_html(e: BaseException) -> str:
    logger.exception("unexpected error in the demo")
    return error_html(
        f"Unexpected error ({type(e).__name__}: {one_line(e)}). The server log has the details."
    )


def guarded(fn: Callable[..., tuple], on_error: tuple) -> Callable[..., tuple]:
    """Runs ``fn``; a :class:`DemoError` (or anything unexpected) becomes a message in the last
    output (the status) and the other outputs take ``on_error``, so the page keeps working."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> tuple:
        try:
            return fn(*args, **kwargs)
        except DemoError as e:
            message = error_html(str(e))
        except InputError as e:
            message = error_html(one_line(e))
        except Exception as e:  # keep serving whatever went wrong
            message = unexpected_html(e)
        return (*on_error, message)

    return run


def draw_reference(image: np.ndarray, mask: np.ndarray | None, clicks: Sequence[tuple]) -> np.ndarray:
    """The reference mask ``bool [H, W]`` (or none yet) drawn like the results, with the clicks."""
    mask = np.zeros(image.shape[:2], bool) if mask is None else mask
    pts = np.array([c[:2] for c in clicks], np.float64).reshape(-1, 2)
    return render_overlay(image, mask, pts, np.array([c[2] for c in clicks], np.int64))


def draw_clicks(image: np.ndarray, labels: np.ndarray, clicks: Sequence[tuple]) -> np.ndarray:
    """The label map ``[H, W]`` tinted over ``image`` in DAVIS colours, with the clicks as dots."""
    out = overlay_labels(image, labels.astype(np.uint8), DAVIS_PALETTE)
    if clicks:
        pts = np.array([c[:2] for c in clicks], np.float64)
        lab = np.array([c[2] for c in clicks], np.int64)
        out = render_overlay(out, np.zeros(labels.shape, bool), pts, lab)
    return out


def _editor(image: np.ndarray) -> dict[str, Any]:
    return {"background": image, "layers": [], "composite": image}


def _mask_status(mask: np.ndarray, source: str) -> str:
    return (
        f"Reference mask: {int(mask.sum())} pixels from {source}. "
        "This is what will be learned; add clicks to correct it, then press Segment."
    )


def results_table(res: ImagesResult) -> str:
    """A Markdown table: each target, its score and whether the object was found; then the skipped."""
    rows = ["| target | score | object |", "| --- | ---: | --- |"]
    for t in res.targets:
        rows.append(f"| {t.name} | {t.score:.3f} | {'found' if t.found else '**not found**'} |")
    rows += [f"| {reason} | | skipped |" for reason in res.failed]
    return "\n".join(rows)


class PageCallbacks:
    """The handlers of every page event and API endpoint."""

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
            return None, [], None, None, UPLOAD_REFERENCE
        img = as_image(np.asarray(image), "reference photo")
        return img, [], None, _editor(img), CLICK_HINT

    def on_ref_clear(self) -> tuple:
        return None, [], None, None, UPLOAD_REFERENCE

    def on_ref_click(
        self, image, clicks, click_label, model, checkpoint, device, dtype, evt: gr.SelectData
    ) -> tuple:
        if image is None:
            return gr.update(), clicks, None, error_html("Upload a reference photo first.")
        x, y = evt.index[0], evt.index[1]
        clicks = list(clicks or []) + [(float(x), float(y), 1 if click_label == "positive" else 0)]
        img = as_image(np.asarray(image), "reference photo")
        settings = _settings(model, checkpoint, device, dtype)
        try:
            mask = self.engine.mask_from_clicks(settings, img, clicks)
        except DemoError as e:
            return draw_reference(img, None, clicks), clicks, None, error_html(str(e))
        # Drawn at once, so the user sees what will be learned before segmenting anything.
        return (
            draw_reference(img, mask, clicks),
            clicks,
            mask,
            self.done(_mask_status(mask, f"{len(clicks)} click(s)"), settings),
        )

    def on_image_example(
        self, image, example_mask, example_clicks, model, checkpoint, device, dtype
    ) -> tuple:
        """An example was picked: its photo and targets are loaded; its object is marked by its mask
        file or, without one, by its clicks (then the model draws the mask, as for a user's clicks)."""
        if image is None:
            raise DemoError("The example photo did not load; pick it again.")
        img = as_image(np.asarray(image), "reference photo")
        settings = _settings(model, checkpoint, device, dtype)
        mask_path = file_path(example_mask)
        if mask_path:
            clicks: list[tuple] = []
            mask = load_mask_file(mask_path, img.shape[:2], "example mask") > 0
            status = _mask_status(mask, "the example's mask")
        else:
            clicks = parse_clicks(example_clicks)
            mask = self.engine.mask_from_clicks(settings, img, clicks)
            status = _mask_status(mask, f"{len(clicks)} click(s)")
        return draw_reference(img, mask, clicks), img, clicks, mask, _editor(img), self.done(status, settings)

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

    def run_images(
        self, img, mask, method, targets, settings: ModelSettings, progress, table: bool = False
    ) -> tuple:
        """(gallery, masks zip, COCO file, Label Studio tasks, CVAT zip, status), with the results
        table before the status when ``table`` is set (the page shows it; gallery captions are cut
        short on narrow screens)."""
        paths = [p for p in (file_path(t) for t in (targets or [])) if p]
        res: ImagesResult = self.engine.segment_images(
            settings, img, mask, image_method_labels().get(method, method), paths,
            progress=lambda f, d: progress(f, desc=d),
        )  # fmt: skip
        gallery = [(str(t.overlay), t.caption) for t in res.targets]
        files = (str(res.zip_path), str(res.coco_path), str(res.labelstudio_path), str(res.cvat_path))
        status = self.done(res.summary, settings)
        return (gallery, *files, results_table(res), status) if table else (gallery, *files, status)

    def on_run_images(
        self, ref_plain, ref_mask, brush, mask_source, method, targets, model, checkpoint, device, dtype,
        progress=gr.Progress(),  # noqa: B008 (Gradio injects the tracker)
    ) -> tuple:  # fmt: skip
        img, mask = self.reference_from_ui(ref_plain, ref_mask, brush, mask_source)
        settings = _settings(model, checkpoint, device, dtype)
        return self.run_images(img, mask, method, targets, settings, progress, table=True)

    def api_segment_images(
        self, reference, reference_mask, clicks, method, targets, model, checkpoint, device, dtype,
        progress=gr.Progress(),  # noqa: B008
    ) -> tuple:  # fmt: skip
        """Reference image file + (mask image file or clicks JSON [[x, y, label], ...]), target image
        files -> (gallery of overlays with scores, zip of binary masks, COCO JSON, Label Studio
        tasks JSON, CVAT COCO 1.0 zip, status)."""
        settings = _settings(model, checkpoint, device, dtype)
        img = self._api_reference(reference)
        mask = self._api_reference_mask(img, reference_mask, clicks, settings)
        return self.run_images(img, mask, method, targets, settings, progress)

    def api_reference_mask(self, reference, clicks, model, checkpoint, device, dtype) -> tuple:
        """Reference image file + clicks JSON [[x, y, label], ...] -> (overlay, mask PNG file, status)."""
        settings = _settings(model, checkpoint, device, dtype)
        img = self._api_reference(reference)
        pts = parse_clicks(clicks)
        if not pts:
            raise DemoError("No clicks: give at least one positive click [x, y, 1].")
        mask = self.engine.mask_from_clicks(settings, img, pts)
        path = self.engine.new_result_dir() / "reference_mask.png"
        Image.fromarray(mask_to_png_array(mask)).save(path)
        return (
            draw_reference(img, mask, pts),
            str(path),
            self.done(_mask_status(mask, f"{len(pts)} click(s)"), settings),
        )

    def _api_reference(self, reference) -> np.ndarray:
        path = file_path(reference)
        if path is None:
            raise DemoError("No reference photo: upload one first.")
        try:
            return load_image(path)
        except (InputError, Image.DecompressionBombError):
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
            return None, None, [], None, "Upload a video, or pick the example below."
        frame = self.engine.first_frame(path)
        return frame, frame, [], _editor(frame), "Pick an object number, then click on it in the first frame."

    def on_video_clear(self) -> tuple:
        return None, None, [], None, "Upload a video, or pick the example below."

    def on_video_example(self, video, example_clicks, model, checkpoint, device, dtype) -> tuple:
        """The example clip was picked: show its first frame with its objects marked by its clicks."""
        path = file_path(video)
        if not path:
            raise DemoError("The example video did not load; pick it again.")
        frame = self.engine.first_frame(path)
        clicks = parse_clicks(example_clicks, with_object=True)
        settings = _settings(model, checkpoint, device, dtype)
        labels = self.engine.labels_from_clicks(settings, frame, clicks)
        n = len([v for v in np.unique(labels) if v])
        status = self.done(f"{n} object(s) marked. Press Track.", settings)
        return draw_clicks(frame, labels, clicks), frame, clicks, _editor(frame), status

    def on_frame_click(
        self, frame, clicks, obj_id, click_label, model, checkpoint, device, dtype, evt: gr.SelectData
    ):
        if frame is None:
            return gr.update(), clicks, error_html("Upload a video first.")
        x, y = evt.index[0], evt.index[1]
        clicks = list(clicks or []) + [
            (float(x), float(y), 1 if click_label == "positive" else 0, int(obj_id))
        ]
        settings = _settings(model, checkpoint, device, dtype)
        try:
            labels = self.engine.labels_from_clicks(settings, frame, clicks)
        except DemoError as e:
            return draw_clicks(frame, np.zeros(frame.shape[:2], np.uint8), clicks), clicks, error_html(str(e))
        n = len([v for v in np.unique(labels) if v])
        return draw_clicks(frame, labels, clicks), clicks, self.done(f"{n} object(s) marked.", settings)

    def on_frame_clear(self, frame) -> tuple:
        return frame, [], "Clicks cleared."

    def run_video(
        self, video_path, labels, method, settings: ModelSettings, progress, tracker: str = "auto",
        reference: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple:  # fmt: skip
        res = self.engine.track_video(
            settings, video_path, labels, METHOD_LABELS.get(method, method),
            progress=lambda f, d: progress(f, desc=d), tracker=tracker, reference=reference,
        )  # fmt: skip
        return str(res.video_path), str(res.zip_path), self.done(res.summary, settings)

    def on_run_video(
        self, video, frame, clicks, brush, mask_source, method, tracker, ref_plain, ref_mask, ref_brush,
        ref_source, model, checkpoint, device, dtype, progress=gr.Progress(),  # noqa: B008
    ) -> tuple:  # fmt: skip
        """Tracks the objects marked on the first frame, or (``mask_source == "photo"``) the object
        of the Images tab's reference photo, found on the frames first."""
        settings = _settings(model, checkpoint, device, dtype)
        path = file_path(video)
        if not path:
            raise DemoError("Upload a video first.")
        if mask_source == "photo":
            reference = self.reference_from_ui(ref_plain, ref_mask, ref_brush, ref_source)
            return self.run_video(path, None, method, settings, progress, tracker, reference)
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
        return self.run_video(path, labels, method, settings, progress, tracker)

    def api_track_video(
        self, video, first_mask, clicks, method, model, checkpoint, device, dtype,
        progress=gr.Progress(),  # noqa: B008
    ) -> tuple:  # fmt: skip
        """Video file + (first-frame label map image or clicks JSON [[x, y, label, object], ...]) ->
        (overlay video, zip of DAVIS-format masks, status)."""
        settings = _settings(model, checkpoint, device, dtype)
        path = file_path(video)
        if not path:
            raise DemoError("Upload a video first.")
        frame = self.engine.first_frame(path)
        mask_path = file_path(first_mask)
        if mask_path is not None:
            labels = load_mask_file(mask_path, frame.shape[:2], "first-frame mask")
        else:
            labels = self.engine.labels_from_clicks(settings, frame, parse_clicks(clicks, with_object=True))
        return self.run_video(path, labels, method, settings, progress)

    # ------------------------------------------------------------------ settings
    def on_load_model(self, model, checkpoint, device, dtype) -> str:
        try:
            with self.engine.lock:
                return self.engine.cache.describe(_settings(model, checkpoint, device, dtype))
        except DemoError as e:
            return error_html(str(e))
        except Exception as e:
            return unexpected_html(e)
