"""persam web demo: personalize Segment Anything from one photo, in the browser.

Launch::

    python -m apps.demo --model sam_vit_b --checkpoint auto      # http://127.0.0.1:7860
    python -m apps.demo --random-model                           # tests only: masks are meaningless

Images tab: upload a reference photo, mark the object by clicking (positive / negative points; the
backbone segments it live) or by brushing over it, choose PerSAM or PerSAM-F, upload target photos,
and get a gallery of overlays with scores plus a zip of the binary masks. Video tab: upload a video,
mark one or more objects on its first frame, and get the overlay video plus a zip of DAVIS-format
per-frame masks.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from persam.io import InputError, as_image, load_image

# A deliberately small random SAM, for tests and UI development only.
RANDOM_MODEL_CONFIG: dict[str, Any] = {
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
        "window_size": 14,
        "global_attn_indexes": [1],
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
    "name": "random_demo_model",
}

RANDOM_BANNER = (
    "**Test mode: a small random model is loaded. Its masks are meaningless.** "
    "Start the demo with `--model NAME --checkpoint PATH|auto` for real results."
)

MODEL_CHOICES = [
    "sam_vit_b",
    "sam_vit_l",
    "sam_vit_h",
    "mobile_sam_vit_t",
    "efficient_sam_vit_t",
    "efficient_sam_vit_s",
]

# Distinct colours for objects 1..N in overlays (RGB).
OBJECT_COLOURS = np.array(
    [[255, 64, 64], [64, 160, 255], [80, 220, 100], [255, 200, 40], [200, 90, 255], [40, 220, 220]],
    dtype=np.uint8,
)


class DemoError(Exception):
    """A problem to show to the user in the page (one readable sentence)."""


# --------------------------------------------------------------------------- model handling
@dataclass
class ModelSettings:
    model: str
    checkpoint: str
    device: str


@dataclass
class ModelCache:
    """Keeps the last loaded backbone so that repeated requests do not reload it."""

    random_model: bool = False
    _key: tuple[str, str, str] | None = None
    _model: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, settings: ModelSettings) -> Any:
        from persam.models.build import build_model

        if self.random_model:
            key = ("random", "none", "cpu")
        else:
            key = (settings.model, settings.checkpoint.strip() or "auto", settings.device)
        with self._lock:
            if key != self._key:
                try:
                    if self.random_model:
                        import torch

                        torch.manual_seed(0)
                        model = build_model(RANDOM_MODEL_CONFIG, checkpoint=None, device="cpu")
                    else:
                        model = build_model(key[0], checkpoint=key[1], device=_resolve_device(key[2]))
                except FileNotFoundError as e:
                    raise DemoError(f"Checkpoint not found: {e}. {_how_to_get(key[0])}") from None
                except Exception as e:  # weights errors are already one readable line
                    raise DemoError(f"Cannot load model {key[0]}: {e}. {_how_to_get(key[0])}") from None
                self._key, self._model = key, model
            return self._model


def _how_to_get(name: str) -> str:
    return (
        f"Download it with `persam weights download {name}` (or by hand) and give its path in "
        "Settings → Checkpoint, or leave the field empty to use the cache."
    )


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# --------------------------------------------------------------------------- drawing helpers
def overlay(
    image: np.ndarray, labels: np.ndarray, points: list[tuple[float, float, int]] | None = None
) -> np.ndarray:
    """Tints ``image`` ``uint8 [H, W, 3]`` with a label map ``[H, W]`` (0 background) and draws points."""
    out = image.astype(np.float32).copy()
    for obj in np.unique(labels):
        if obj == 0:
            continue
        colour = OBJECT_COLOURS[(int(obj) - 1) % len(OBJECT_COLOURS)].astype(np.float32)
        m = labels == obj
        out[m] = 0.45 * out[m] + 0.55 * colour
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour.tolist(), max(1, image.shape[0] // 300))
    out = np.clip(out, 0, 255).astype(np.uint8)
    radius = max(4, min(image.shape[:2]) // 80)
    for x, y, label in points or []:
        colour = (40, 220, 60) if label == 1 else (230, 40, 40)
        cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1)
        cv2.circle(out, (int(round(x)), int(round(y))), radius, (255, 255, 255), max(1, radius // 3))
    return out


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png_bytes(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    if palette is not None:
        im = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
        im.putpalette(palette)
    else:
        im = Image.fromarray(array)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def davis_palette() -> list[int]:
    """The DAVIS colour palette (PASCAL VOC bit-interleaving), 256 RGB entries."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def brush_mask(editor_value: Any) -> np.ndarray | None:
    """The painted region of a ``gr.ImageEditor`` value (any layer pixel with alpha > 0), or None."""
    if not editor_value:
        return None
    layers = editor_value.get("layers") or []
    mask = None
    for layer in layers:
        if layer is None:
            continue
        a = np.asarray(layer)
        m = a[..., 3] > 0 if a.ndim == 3 and a.shape[2] == 4 else np.asarray(a).astype(bool)
        if m.ndim == 3:
            m = m.any(axis=2)
        mask = m if mask is None else (mask | m)
    if mask is None or not mask.any():
        return None
    return mask


def editor_background(editor_value: Any) -> np.ndarray | None:
    if not editor_value:
        return None
    bg = editor_value.get("background")
    if bg is None:
        bg = editor_value.get("composite")
    return None if bg is None else as_image(np.asarray(bg), "reference photo")


# --------------------------------------------------------------------------- demo logic
class DemoEngine:
    """Everything the page does, as plain methods (the Gradio layer only wires them up)."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache
        self._concepts: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- reference mask
    def mask_from_clicks(
        self, settings: ModelSettings, image: np.ndarray, clicks: list[tuple[float, float, int]]
    ) -> np.ndarray:
        from persam.personalize import mask_from_prompts

        if not clicks:
            raise DemoError("Click on the object in the reference photo first.")
        model = self.cache.get(settings)
        pts = np.array([[x, y] for x, y, _ in clicks], dtype=np.float32)
        labels = np.array([lab for _, _, lab in clicks], dtype=np.int64)
        return mask_from_prompts(model, image, points=pts, labels=labels)

    def concept(self, settings: ModelSettings, image: np.ndarray, mask: np.ndarray, method: str) -> Any:
        """The learned concept for this reference, computed once and reused."""
        from persam.personalize import learn

        model = self.cache.get(settings)
        key = _digest(image, mask) + method + str(self.cache._key)
        with self._lock:
            if key not in self._concepts:
                try:
                    self._concepts = {key: learn(model, image, mask, method=method)}
                except (InputError, ValueError) as e:
                    raise DemoError(str(e)) from None
            return self._concepts[key]

    def segment_images(
        self,
        settings: ModelSettings,
        ref_image: np.ndarray,
        ref_mask: np.ndarray,
        method: str,
        targets: list[str],
        progress: Callable[[float, str], None] | None = None,
    ) -> tuple[list[tuple[np.ndarray, str]], bytes, str]:
        """Returns (gallery of (overlay, caption), zip of binary mask PNGs, summary)."""
        if not targets:
            raise DemoError("Upload at least one target image.")
        concept = self.concept(settings, ref_image, ref_mask, method)
        gallery: list[tuple[np.ndarray, str]] = []
        files: dict[str, bytes] = {}
        failed: list[str] = []
        used: set[str] = set()
        for i, path in enumerate(targets):
            name = Path(path).name
            if progress is not None:
                progress(i / len(targets), f"segmenting {name}")
            try:
                image = load_image(path)
            except InputError as e:
                failed.append(f"{name}: {e}")
                continue
            result = concept.segment(image)
            pts = [
                (float(x), float(y), int(lab))
                for (x, y), lab in zip(result.points, result.point_labels, strict=True)
            ]
            gallery.append(
                (
                    overlay(image, result.mask.astype(np.uint8), pts),
                    f"{name} — score {result.score:.3f}" + ("" if result.found else " (not found)"),
                )
            )
            stem = Path(name).stem
            out_name = f"{stem}.png"
            k = 1
            while out_name in used:
                k += 1
                out_name = f"{stem}_{k}.png"
            used.add(out_name)
            files[out_name] = _png_bytes(result.mask.astype(np.uint8) * 255)
        if not gallery:
            raise DemoError("No target image could be read: " + "; ".join(failed))
        summary = f"Segmented {len(gallery)} image(s) with {method.replace('_', '-')}."
        if failed:
            summary += " Skipped: " + "; ".join(failed)
        return gallery, _zip_bytes(files), summary

    def track_video(
        self,
        settings: ModelSettings,
        video_path: str,
        first_labels: np.ndarray,
        method: str,
        out_dir: Path,
        progress: Callable[[float, str], None] | None = None,
    ) -> tuple[Path, bytes, str]:
        """Tracks the marked objects; returns (overlay video path, zip of DAVIS PNGs, summary)."""
        from persam.pipelines.video import track
        from persam.video_io import open_video

        if first_labels.max(initial=0) == 0:
            raise DemoError("Mark at least one object on the first frame.")
        model = self.cache.get(settings)
        try:
            reader = open_video(video_path)
        except (InputError, ValueError) as e:
            raise DemoError(f"Cannot read the video: {e}") from None
        fps = float(getattr(reader, "fps", 0) or 25.0)
        n = int(len(reader)) if hasattr(reader, "__len__") else 0
        palette = davis_palette()
        files: dict[str, bytes] = {}
        out_video = out_dir / "overlay.webm"
        writer = None
        try:
            for res in track(model, video_path, first_labels, method=method):
                frame = res.frame if getattr(res, "frame", None) is not None else reader[res.index]
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(out_video), cv2.VideoWriter_fourcc(*"VP80"), fps, (w, h))
                writer.write(cv2.cvtColor(overlay(frame, res.label_map), cv2.COLOR_RGB2BGR))
                files[f"{res.index:05d}.png"] = _png_bytes(res.label_map.astype(np.uint8), palette)
                if progress is not None and n:
                    progress(min(1.0, (res.index + 1) / n), f"frame {res.index + 1}/{n}")
        except (InputError, ValueError) as e:
            raise DemoError(f"Tracking failed: {e}") from None
        finally:
            if writer is not None:
                writer.release()
        if not files:
            raise DemoError("The video has no frames that could be decoded.")
        summary = f"Tracked {int(first_labels.max())} object(s) over {len(files)} frame(s)."
        return out_video, _zip_bytes(files), summary


def first_frame(video_path: str) -> np.ndarray:
    from persam.video_io import open_video

    try:
        reader = open_video(video_path)
        return reader[0]
    except (InputError, ValueError, IndexError) as e:
        raise DemoError(f"Cannot read the video: {e}") from None


# --------------------------------------------------------------------------- gradio layer
def build_app(
    engine: DemoEngine,
    *,
    banner: str | None = None,
    default_model: str = "sam_vit_b",
    default_checkpoint: str = "",
    default_device: str = "auto",
) -> Any:
    import gradio as gr

    tmp_root = Path(tempfile.mkdtemp(prefix="persam-demo-"))

    def settings_of(model: str, checkpoint: str, device: str) -> ModelSettings:
        return ModelSettings(model=model, checkpoint=checkpoint or "", device=device)

    def message(text: str, ok: bool = True) -> str:
        return text if ok else f"⚠️ {text}"

    def write_zip(data: bytes, name: str) -> str:
        d = Path(tempfile.mkdtemp(dir=tmp_root))
        p = d / name
        p.write_bytes(data)
        return str(p)

    # ---- callbacks: images tab
    def on_ref_upload(image):
        if image is None:
            return None, [], None, ""
        img = as_image(np.asarray(image), "reference photo")
        return img, [], None, "Click on your object (positive points) or brush over it."

    def on_ref_click(image, clicks, click_label, model, checkpoint, device, evt: gr.SelectData):
        if image is None:
            return gr.update(), clicks, None, message("Upload a reference photo first.", False)
        x, y = evt.index[0], evt.index[1]
        clicks = list(clicks or []) + [(float(x), float(y), 1 if click_label == "positive" else 0)]
        img = as_image(np.asarray(image), "reference photo")
        try:
            mask = engine.mask_from_clicks(settings_of(model, checkpoint, device), img, clicks)
        except DemoError as e:
            return (
                overlay(img, np.zeros(img.shape[:2], np.uint8), clicks),
                clicks,
                None,
                message(str(e), False),
            )
        return (
            overlay(img, mask.astype(np.uint8), clicks),
            clicks,
            mask,
            f"Reference mask: {int(mask.sum())} pixels from {len(clicks)} click(s).",
        )

    def on_clear(image):
        return (None if image is None else image), [], None, "Clicks cleared."

    def on_run_images(
        ref_plain,
        ref_mask,
        brush_value,
        mask_source,
        method,
        targets,
        model,
        checkpoint,
        device,
        progress=gr.Progress(),  # noqa: B008 (Gradio injects the tracker)
    ):
        try:
            if mask_source == "brush":
                img = editor_background(brush_value)
                mask = brush_mask(brush_value)
                if img is None:
                    raise DemoError("Upload a reference photo in the brush editor first.")
                if mask is None:
                    raise DemoError("Brush over your object in the reference photo first.")
            else:
                if ref_plain is None:
                    raise DemoError("Upload a reference photo first.")
                img = as_image(np.asarray(ref_plain), "reference photo")
                if ref_mask is None:
                    raise DemoError("No reference mask: click on your object in the reference photo first.")
                mask = np.asarray(ref_mask).astype(bool)
            paths = [getattr(t, "name", t) for t in (targets or [])]
            gallery, zip_data, summary = engine.segment_images(
                settings_of(model, checkpoint, device),
                img,
                mask,
                "persam_f" if method == "PerSAM-F" else "persam",
                paths,
                progress=lambda f, d: progress(f, desc=d),
            )
        except DemoError as e:
            return [], None, message(str(e), False)
        except InputError as e:
            return [], None, message(str(e), False)
        return gallery, write_zip(zip_data, "masks.zip"), summary

    # ---- callbacks: video tab
    def on_video_upload(video):
        if not video:
            return None, None, [], "Upload a video."
        try:
            frame = first_frame(video)
        except DemoError as e:
            return None, None, [], message(str(e), False)
        return frame, frame, [], "Pick an object number, then click on it in the first frame."

    def on_frame_click(
        frame, clicks, obj_id, click_label, video, model, checkpoint, device, evt: gr.SelectData
    ):
        if frame is None:
            return gr.update(), clicks, message("Upload a video first.", False)
        x, y = evt.index[0], evt.index[1]
        clicks = list(clicks or []) + [
            (float(x), float(y), 1 if click_label == "positive" else 0, int(obj_id))
        ]
        labels = np.zeros(frame.shape[:2], np.uint8)
        try:
            labels = clicks_to_labels(engine, settings_of(model, checkpoint, device), frame, clicks)
        except DemoError as e:
            return overlay(frame, labels, [c[:3] for c in clicks]), clicks, message(str(e), False)
        return (
            overlay(frame, labels, [c[:3] for c in clicks]),
            clicks,
            f"{len(np.unique(labels)) - 1} object(s) marked.",
        )

    def on_frame_clear(frame):
        return frame, [], "Clicks cleared."

    def on_run_video(video, frame, clicks, method, model, checkpoint, device, progress=gr.Progress()):  # noqa: B008
        try:
            if not video:
                raise DemoError("Upload a video first.")
            if frame is None:
                raise DemoError("The video could not be decoded.")
            settings = settings_of(model, checkpoint, device)
            labels = clicks_to_labels(engine, settings, frame, clicks or [])
            out_dir = Path(tempfile.mkdtemp(dir=tmp_root))
            video_out, zip_data, summary = engine.track_video(
                settings,
                video,
                labels,
                "persam_f" if method == "PerSAM-F" else "persam",
                out_dir,
                progress=lambda f, d: progress(f, desc=d),
            )
        except DemoError as e:
            return None, None, message(str(e), False)
        return str(video_out), write_zip(zip_data, "masks_davis.zip"), summary

    with gr.Blocks(title="persam — personalize Segment Anything") as app:
        gr.Markdown("# persam\nSegment *your* object everywhere from one example photo.")
        if banner:
            gr.Markdown(banner, elem_id="random-model-banner")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                model = gr.Dropdown(MODEL_CHOICES, value=default_model, label="Model")
                checkpoint = gr.Textbox(
                    value=default_checkpoint, label="Checkpoint path (empty: the cache)", placeholder="auto"
                )
                device = gr.Dropdown(["auto", "cpu", "cuda", "mps"], value=default_device, label="Device")
        with gr.Tabs():
            with gr.Tab("Images"):
                clicks = gr.State([])
                ref_plain = gr.State(None)
                ref_mask = gr.State(None)
                with gr.Row():
                    with gr.Column():
                        mask_source = gr.Radio(
                            ["clicks", "brush"], value="clicks", label="Mark the object by"
                        )
                        with gr.Group():
                            ref_view = gr.Image(
                                type="numpy",
                                label="Reference photo (click on your object)",
                                elem_id="ref-image",
                            )
                            with gr.Row():
                                click_label = gr.Radio(
                                    ["positive", "negative"], value="positive", label="Click adds"
                                )
                                clear_btn = gr.Button("Clear clicks", size="sm")
                        brush = gr.ImageEditor(
                            type="numpy", label="…or brush over it", elem_id="ref-brush", layers=False
                        )
                        method = gr.Radio(["PerSAM", "PerSAM-F"], value="PerSAM", label="Method")
                    with gr.Column():
                        targets = gr.File(
                            file_count="multiple",
                            file_types=["image"],
                            label="Target photos",
                            elem_id="targets",
                        )
                        run_btn = gr.Button("Segment", variant="primary", elem_id="run-images")
                        status = gr.Markdown("", elem_id="images-status")
                        gallery = gr.Gallery(label="Results", columns=3, elem_id="gallery")
                        masks_zip = gr.File(label="Binary masks (zip)", elem_id="masks-zip")
                ref_view.upload(on_ref_upload, [ref_view], [ref_plain, clicks, ref_mask, status])
                ref_view.select(
                    on_ref_click,
                    [ref_plain, clicks, click_label, model, checkpoint, device],
                    [ref_view, clicks, ref_mask, status],
                )
                clear_btn.click(on_clear, [ref_plain], [ref_view, clicks, ref_mask, status])
                run_btn.click(
                    on_run_images,
                    [ref_plain, ref_mask, brush, mask_source, method, targets, model, checkpoint, device],
                    [gallery, masks_zip, status],
                    api_name="segment_images",
                )
            with gr.Tab("Video"):
                v_clicks = gr.State([])
                v_frame = gr.State(None)
                with gr.Row():
                    with gr.Column():
                        video = gr.Video(label="Video", elem_id="video-in")
                        frame_view = gr.Image(
                            type="numpy", label="First frame (click on objects)", elem_id="frame"
                        )
                        with gr.Row():
                            obj_id = gr.Dropdown([1, 2, 3, 4, 5, 6], value=1, label="Object")
                            v_click_label = gr.Radio(
                                ["positive", "negative"], value="positive", label="Click adds"
                            )
                            v_clear = gr.Button("Clear clicks", size="sm")
                        v_method = gr.Radio(["PerSAM", "PerSAM-F"], value="PerSAM", label="Method")
                    with gr.Column():
                        v_run = gr.Button("Track", variant="primary", elem_id="run-video")
                        v_status = gr.Markdown("", elem_id="video-status")
                        v_out = gr.Video(label="Overlay", elem_id="video-out")
                        v_zip = gr.File(label="Per-frame masks, DAVIS format (zip)", elem_id="video-zip")
                video.change(on_video_upload, [video], [frame_view, v_frame, v_clicks, v_status])
                frame_view.select(
                    on_frame_click,
                    [v_frame, v_clicks, obj_id, v_click_label, video, model, checkpoint, device],
                    [frame_view, v_clicks, v_status],
                )
                v_clear.click(on_frame_clear, [v_frame], [frame_view, v_clicks, v_status])
                v_run.click(
                    on_run_video,
                    [video, v_frame, v_clicks, v_method, model, checkpoint, device],
                    [v_out, v_zip, v_status],
                    api_name="track_video",
                )
    return app


def clicks_to_labels(
    engine: DemoEngine,
    settings: ModelSettings,
    frame: np.ndarray,
    clicks: list[tuple[float, float, int, int]],
) -> np.ndarray:
    """One mask per object id from its clicks, merged into a label map (later ids on top)."""
    labels = np.zeros(frame.shape[:2], np.uint8)
    for obj in sorted({c[3] for c in clicks}):
        pts = [(x, y, lab) for x, y, lab, o in clicks if o == obj]
        if not any(lab == 1 for _, _, lab in pts):
            continue
        mask = engine.mask_from_clicks(settings, frame, pts)
        labels[mask] = obj
    if labels.max() == 0:
        raise DemoError("Mark at least one object on the first frame (a positive click on it).")
    return labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument("--model", default="sam_vit_b", choices=MODEL_CHOICES)
    p.add_argument("--checkpoint", default="", help="checkpoint file (default: the weights cache)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--random-model",
        action="store_true",
        help="TESTS ONLY: run a small random model (masks are meaningless; a banner says so)",
    )
    args = p.parse_args(argv)
    engine = DemoEngine(ModelCache(random_model=args.random_model))
    app = build_app(
        engine,
        banner=RANDOM_BANNER if args.random_model else None,
        default_model=args.model,
        default_checkpoint=args.checkpoint,
        default_device=args.device,
    )
    app.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
