"""The page: a Settings panel, an Images tab and a Video tab, each with examples, plus three API
endpoints for programmatic clients (``/reference_mask``, ``/segment_images``, ``/track_video``)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from apps.demo.callbacks import UPLOAD_REFERENCE, PageCallbacks, guarded
from apps.demo.examples import Examples
from apps.demo.inputs import davis_colour, hex_colour
from apps.demo.settings import (
    CANDIDATES_LABEL,
    CHECKPOINT_HELP,
    DEVICE_CHOICES,
    DTYPE_CHOICES,
    MAX_OBJECTS,
    METHOD_LABELS,
    RANDOM_WEIGHTS_NOTE,
    ModelSettings,
    image_method_labels,
    model_choices,
)

CSS = """
#status-images, #status-video, #status-model { min-height: 1.6em; }
.persam-error { color: var(--error-text-color, #b91c1c); font-weight: 600; }
#banner { background: #fff4e5; border: 1px solid #f0b35a; border-radius: 8px; padding: 4px 12px; }
"""
# Results of a request are kept an hour in Gradio's cache (checked every 10 minutes), so a page left
# open can still download them, and a long-running demo does not fill the disk.
DELETE_CACHE = (600, 3600)
INTRO = (
    "# persam\nSegment **your** object in new photos and videos from one example: mark it once, "
    "PerSAM finds it everywhere. New here? Pick an example under a tab to see every step filled in."
)
# All model work runs one request at a time: the backbone holds one encoded image.
MODEL_QUEUE: dict[str, Any] = {"concurrency_id": "persam-model", "concurrency_limit": 1}
PRIVATE: dict[str, Any] = {"api_visibility": "private"}


def _settings_panel(
    cb: PageCallbacks, defaults: ModelSettings, banner: str | None
) -> list[gr.components.Component]:
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        with gr.Row():
            model = gr.Dropdown(
                model_choices(defaults.model), value=defaults.model, label="Model",
                info="a name from the list, or the path of a model config JSON file",
                allow_custom_value=True, elem_id="model",
            )  # fmt: skip
            checkpoint = gr.Textbox(
                value=defaults.checkpoint, label="Checkpoint (path, auto or none)",
                placeholder=CHECKPOINT_HELP, elem_id="checkpoint",
            )  # fmt: skip
            device = gr.Dropdown(DEVICE_CHOICES, value=defaults.device, label="Device", elem_id="device")
            dtype = gr.Dropdown(DTYPE_CHOICES, value=defaults.dtype, label="Precision", elem_id="dtype")
        with gr.Row():
            load_btn = gr.Button("Load model", size="sm", scale=0, min_width=140)
            random_weights = defaults.random_weights and not banner
            model_status = gr.Markdown(RANDOM_WEIGHTS_NOTE if random_weights else "", elem_id="status-model")
    settings = [model, checkpoint, device, dtype]
    load_btn.click(cb.on_load_model, settings, [model_status], **PRIVATE, **MODEL_QUEUE)
    return settings


def _images_tab(cb: PageCallbacks, settings: list, examples: Examples) -> dict[str, Any]:
    clicks, ref_plain, ref_mask, mask_source = (
        gr.State([]),
        gr.State(None),
        gr.State(None),
        gr.State("clicks"),
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            gr.Markdown("### 1. Reference: mark your object")
            with gr.Tabs():
                with gr.Tab("Click points", id="ref-clicks") as tab_clicks:
                    ref_view = gr.Image(
                        type="numpy", label="Reference photo — click on your object (the mask appears here)",
                        sources=["upload", "clipboard"], elem_id="ref-image", height=340, format="png",
                    )  # fmt: skip
                    with gr.Row():
                        click_label = gr.Radio(
                            ["positive", "negative"], value="positive", label="A click adds a",
                            elem_id="click-label",
                        )  # fmt: skip
                        clear_btn = gr.Button("Clear clicks", size="sm", scale=0, min_width=120)
                with gr.Tab("Brush", id="ref-brush") as tab_brush:
                    brush = gr.ImageEditor(
                        type="numpy", label="Reference photo — paint over your object",
                        sources=["upload", "clipboard"], transforms=(), layers=False, height=340,
                        brush=gr.Brush(colors=[("#ff3b30", 0.6)], color_mode="fixed"),
                        elem_id="ref-brush-editor",
                    )  # fmt: skip
            methods = image_method_labels()
            info = "PerSAM is training-free; PerSAM-F also fits two mask weights (slower)."
            if CANDIDATES_LABEL in methods:
                info += " Candidates segments everything and keeps the masks most like the object."
            method = gr.Radio(list(methods), value="PerSAM", label="Method", elem_id="method", info=info)
        with gr.Column(scale=1):
            gr.Markdown("### 2. Targets: where to find it")
            targets = gr.File(file_count="multiple", label="Target photos", elem_id="targets", height=150)
            run_btn = gr.Button("Segment", variant="primary", elem_id="run-images")
            status = gr.Markdown(UPLOAD_REFERENCE, elem_id="status-images")
            gallery = gr.Gallery(
                label="Results (overlay, score; “not found” when the object is absent)", columns=3,
                height=320, object_fit="contain", elem_id="gallery", format="png",
            )  # fmt: skip
            table = gr.Markdown("", elem_id="results-table")
            with gr.Row():
                masks_zip = gr.DownloadButton("Masks (zip of PNGs)", elem_id="masks-zip", size="md")
                coco_json = gr.DownloadButton("COCO results (JSON)", elem_id="coco-json", size="md")
            with gr.Row():
                ls_json = gr.DownloadButton(
                    "Label Studio tasks (JSON)", elem_id="labelstudio-json", size="md"
                )
                cvat_zip = gr.DownloadButton("CVAT (COCO 1.0 zip)", elem_id="cvat-zip", size="md")
    example_mask = gr.File(visible=False, label="reference mask")
    example_clicks = gr.Textbox(visible=False, label="clicks [x, y, label]")
    rows = [
        [str(e.reference), None if e.mask is None else str(e.mask), e.clicks, [str(t) for t in e.targets]]
        for e in examples.images
    ]
    picker = gr.Examples(
        rows, [ref_view, example_mask, example_clicks, targets],
        label="Examples: pick one, then press Segment", example_labels=[e.label for e in examples.images],
        elem_id="image-examples", api_visibility="private",
    )  # fmt: skip
    picker.load_input_event.then(
        guarded(cb.on_image_example, (gr.update(),) * 5),
        [ref_view, example_mask, example_clicks, *settings],
        [ref_view, ref_plain, clicks, ref_mask, brush, status],
        **PRIVATE, **MODEL_QUEUE,
    )  # fmt: skip

    ref_outputs = [ref_plain, clicks, ref_mask, brush, status]
    ref_view.upload(cb.on_ref_upload, [ref_view], ref_outputs, queue=False, **PRIVATE)
    ref_view.clear(cb.on_ref_clear, None, ref_outputs, queue=False, **PRIVATE)
    ref_view.select(
        guarded(cb.on_ref_click, (gr.update(), gr.update(), gr.update())),
        [ref_plain, clicks, click_label, *settings], [ref_view, clicks, ref_mask, status],
        **PRIVATE, **MODEL_QUEUE,
    )  # fmt: skip
    clear_btn.click(cb.on_clear_clicks, [ref_plain], [ref_view, clicks, ref_mask, status], **PRIVATE)
    tab_clicks.select(lambda: "clicks", None, mask_source, queue=False, **PRIVATE)
    tab_brush.select(lambda: "brush", None, mask_source, queue=False, **PRIVATE)
    outputs = [gallery, masks_zip, coco_json, ls_json, cvat_zip, status]
    run_btn.click(
        guarded(cb.on_run_images, ([], None, None, None, None, "")),
        [ref_plain, ref_mask, brush, mask_source, method, targets, *settings],
        [gallery, masks_zip, coco_json, ls_json, cvat_zip, table, status],
        **PRIVATE, **MODEL_QUEUE,
    )  # fmt: skip
    reference = [ref_plain, ref_mask, brush, mask_source]
    return {"method": method, "targets": targets, "outputs": outputs, "reference": reference}


def _video_tab(
    cb: PageCallbacks, settings: list, examples: Examples, images: dict[str, Any]
) -> dict[str, Any]:
    v_clicks, v_frame, v_source = gr.State([]), gr.State(None), gr.State("clicks")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            gr.Markdown("### 1. Video and its objects")
            video = gr.File(label="Video (mp4, webm, avi, mov, ...)", elem_id="video-in", height=110)
            with gr.Tabs():
                with gr.Tab("Click points", id="frame-clicks") as v_tab_clicks:
                    frame_view = gr.Image(
                        type="numpy", label="First frame — click on each object", interactive=False,
                        elem_id="frame", height=300, format="png",
                    )  # fmt: skip
                    with gr.Row():
                        obj_id = gr.Dropdown(
                            list(range(1, MAX_OBJECTS + 1)), value=1, label="Object", min_width=90
                        )
                        v_click_label = gr.Radio(
                            ["positive", "negative"], value="positive", label="A click adds a"
                        )
                        v_clear = gr.Button("Clear clicks", size="sm", scale=0, min_width=120)
                with gr.Tab("Brush", id="frame-brush") as v_tab_brush:
                    colours = [(hex_colour(davis_colour(k)), 0.6) for k in range(1, MAX_OBJECTS + 1)]
                    v_brush = gr.ImageEditor(
                        type="numpy", label="First frame — paint each object in its own colour", sources=(),
                        brush=gr.Brush(colors=colours, color_mode="fixed"), transforms=(), layers=False,
                        elem_id="frame-brush-editor", height=300,
                    )  # fmt: skip
                with gr.Tab("From a photo", id="frame-photo") as v_tab_photo:
                    gr.Markdown(
                        "Track the object of the **Images** tab's reference photo (mark it there with "
                        "clicks or the brush): it is searched frame by frame, tracking starts on the "
                        "first frame where it is found, and earlier frames have no mask."
                    )
            v_method = gr.Radio(list(METHOD_LABELS), value="PerSAM", label="Method")
            v_tracker = gr.Radio(
                ["auto", "persam", "sam2"], value="auto", label="Tracker", elem_id="video-tracker",
                info="sam2: SAM 2 memory (SAM 2 models); persam: PerSAM per frame; auto: sam2 if SAM 2",
            )  # fmt: skip
        with gr.Column(scale=1):
            gr.Markdown("### 2. Track")
            v_run = gr.Button("Track", variant="primary", elem_id="run-video")
            v_status = gr.Markdown("Upload a video, or pick the example below.", elem_id="status-video")
            v_out = gr.Video(label="Overlay video", elem_id="video-out", height=300)
            v_zip = gr.DownloadButton("Per-frame masks (DAVIS format, zip)", elem_id="video-zip", size="md")
    example_clicks = gr.Textbox(visible=False, label="clicks [x, y, label, object]")
    picker = gr.Examples(
        [[str(e.video), e.clicks] for e in examples.videos], [video, example_clicks],
        label="Example: pick it, then press Track", example_labels=[e.label for e in examples.videos],
        elem_id="video-examples", api_visibility="private",
    )  # fmt: skip
    frame_outputs = [frame_view, v_frame, v_clicks, v_brush, v_status]
    picker.load_input_event.then(
        guarded(cb.on_video_example, (gr.update(),) * 4), [video, example_clicks, *settings],
        frame_outputs, **PRIVATE, **MODEL_QUEUE,
    )  # fmt: skip
    # ``upload`` rather than ``change``: picking the example sets the file too, and must not wipe
    # the clicks the example brings.
    video.upload(
        guarded(cb.on_video_upload, (None, None, [], None)), [video], frame_outputs, **PRIVATE, **MODEL_QUEUE
    )
    video.clear(cb.on_video_clear, None, frame_outputs, queue=False, **PRIVATE)
    frame_view.select(
        guarded(cb.on_frame_click, (gr.update(), gr.update())),
        [v_frame, v_clicks, obj_id, v_click_label, *settings], [frame_view, v_clicks, v_status],
        **PRIVATE, **MODEL_QUEUE,
    )  # fmt: skip
    v_clear.click(cb.on_frame_clear, [v_frame], [frame_view, v_clicks, v_status], **PRIVATE)
    v_tab_clicks.select(lambda: "clicks", None, v_source, queue=False, **PRIVATE)
    v_tab_brush.select(lambda: "brush", None, v_source, queue=False, **PRIVATE)
    v_tab_photo.select(lambda: "photo", None, v_source, queue=False, **PRIVATE)
    outputs = [v_out, v_zip, v_status]
    v_run.click(
        guarded(cb.on_run_video, (None, None)),
        [video, v_frame, v_clicks, v_brush, v_source, v_method, v_tracker, *images["reference"], *settings],
        outputs,
        **PRIVATE, **MODEL_QUEUE,
    )  # fmt: skip
    return {"method": v_method, "outputs": outputs}


def _api(cb: PageCallbacks, settings: list, images: dict[str, Any], video: dict[str, Any]) -> None:
    """Endpoints for programmatic clients, on hidden inputs that take files and clicks JSON."""
    with gr.Group(visible=False):
        api_ref = gr.File(label="reference", elem_id="api-reference")
        api_ref_mask = gr.File(label="reference_mask")
        api_clicks = gr.Textbox(label="clicks")
        api_mask_out = gr.File(label="mask")
        api_view = gr.Image(label="overlay", type="numpy", format="png")
        api_video = gr.File(label="video")
        api_first_mask = gr.File(label="first_mask")
        api_v_clicks = gr.Textbox(label="clicks")
        api_status = gr.Markdown()
        buttons = [gr.Button(visible=False) for _ in range(3)]
    buttons[0].click(
        guarded(cb.api_reference_mask, (None, None)), [api_ref, api_clicks, *settings],
        [api_view, api_mask_out, api_status], api_name="reference_mask", **MODEL_QUEUE,
    )  # fmt: skip
    buttons[1].click(
        guarded(cb.api_segment_images, ([], None, None, None, None)),
        [api_ref, api_ref_mask, api_clicks, images["method"], images["targets"], *settings],
        images["outputs"], api_name="segment_images", **MODEL_QUEUE,
    )  # fmt: skip
    buttons[2].click(
        guarded(cb.api_track_video, (None, None)),
        [api_video, api_first_mask, api_v_clicks, video["method"], *settings],
        video["outputs"], api_name="track_video", **MODEL_QUEUE,
    )  # fmt: skip


def build_blocks(
    cb: PageCallbacks, examples: Examples, defaults: ModelSettings, banner: str | None = None
) -> gr.Blocks:
    """The Gradio Blocks of the demo. ``defaults`` fill the Settings panel (and are what API clients
    get when they leave the settings out); they are checked when the model is loaded."""
    with gr.Blocks(title="persam — personalize Segment Anything", delete_cache=DELETE_CACHE) as app:
        gr.Markdown(INTRO)
        if banner:
            gr.Markdown(banner, elem_id="banner")
        settings = _settings_panel(cb, defaults, banner)
        with gr.Tabs():
            with gr.Tab("Images", id="images"):
                images = _images_tab(cb, settings, examples)
            with gr.Tab("Video", id="video"):
                video = _video_tab(cb, settings, examples, images)
        _api(cb, settings, images, video)
    return app
