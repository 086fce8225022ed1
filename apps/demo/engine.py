"""Everything the page computes, as plain methods over arrays and files: each one a call into the
library (:mod:`persam.personalize`, :mod:`persam.pipelines`), with its errors turned into
:class:`DemoError` sentences. The Gradio layer (:mod:`apps.demo.callbacks`) only wires them up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from apps.demo.models import ModelCache, one_line
from apps.demo.settings import DemoError, ModelSettings, method_title
from apps.demo.workdir import WorkDir
from persam.integrations.cvat_coco import write_coco_zip
from persam.integrations.labelstudio import tasks_from_coco, write_tasks
from persam.io import InputError
from persam.outputs import COCO_FILE, MASK_DIR, OVERLAY_DIR
from persam.personalize import check_prompts, learn, mask_from_prompts
from persam.pipelines.find import FIND_THRESHOLD
from persam.pipelines.image_set import output_names, segment_image_set
from persam.pipelines.video_folder import track_to_folder
from persam.readers import open_video
from persam.tracking import TRACKER_CHOICES

Progress = Callable[[float, str], None]


@dataclass
class TargetResult:
    """One segmented target: its overlay (the library's drawing of the mask), score and whether the
    object was found."""

    name: str
    overlay: Path
    score: float
    found: bool

    @property
    def caption(self) -> str:
        return caption(self.name, self.score, self.found)


def caption(name: str, score: float, found: bool) -> str:
    """``"a.png — score 0.912"``, with ``" (not found)"`` when the object was not found."""
    text = f"{name} — score {score:.3f}" if np.isfinite(score) else f"{name} — no score"
    return text if found else text + " (not found)"


@dataclass
class ImagesResult:
    """Output of :meth:`DemoEngine.segment_images`."""

    targets: list[TargetResult]
    zip_path: Path  # binary mask PNGs (0 / 255), one per segmented target
    coco_path: Path  # COCO results (RLE masks with scores) of every segmented target
    summary: str
    labelstudio_path: Path | None = None  # Label Studio tasks, the masks as brush pre-annotations
    cvat_path: Path | None = None  # CVAT "COCO 1.0" zip of the same results
    failed: list[str] = field(default_factory=list)  # "name (reason)" per target that was not segmented


@dataclass
class VideoResult:
    """Output of :meth:`DemoEngine.track_video`."""

    video_path: Path  # WebM (VP8) overlay video, one frame per tracked frame
    zip_path: Path  # DAVIS palette PNGs ``<video>/<frame>.png`` and ``scores.json``
    frames: int
    summary: str


def zip_folder(folder: Path, dest: Path, prefix: str = "", pattern: str = "*") -> Path:
    """Zips the files under ``folder`` matching ``pattern`` (relative names, under ``prefix/``)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob(pattern)):
            if f.is_file():
                zf.write(f, (Path(prefix) / f.relative_to(folder)).as_posix())
    return dest


def _learn_options(method: str) -> dict[str, Any]:
    # The page answers while the user waits: a 16x16 point grid asks the decoder for a quarter of
    # the default 32x32 grid's masks and still covers objects of a reference photo's scale.
    return {"method_options": {"points_per_side": 16}} if method == "candidates" else {}


def annotation_tool_files(coco_path: Path, method: str) -> tuple[Path, Path]:
    """The results of ``coco_path`` for annotation tools, beside it: Label Studio tasks (brush
    pre-annotations of each image, by file name) and a CVAT "COCO 1.0" zip."""
    coco = json.loads(coco_path.read_text(encoding="utf-8"))
    ls_path = coco_path.with_name("label_studio_tasks.json")
    write_tasks(ls_path, tasks_from_coco(coco, model_version=f"persam-{method}"))
    cvat_path = write_coco_zip(coco, coco_path.with_name("cvat_coco.zip"))
    return ls_path, cvat_path


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def too_large(path: Path) -> str | None:
    """Why an image file must not be decoded (a decompression bomb: far more pixels than its file
    size suggests), or None. Reads the header only."""
    try:
        with Image.open(path):
            return None
    except Image.DecompressionBombError:
        # Pillow raises this from the header alone, before any pixel is decoded.
        return "too large to read safely"
    except Exception:
        return None  # any other problem is reported by the reader itself


def stage_targets(paths: Sequence[str], folder: Path) -> list[Path]:
    """Links (or copies) uploads into one ``folder`` under unique names, so that outputs are named
    after the uploaded file names (uploads live in one folder each, and two may share a name)."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    for path in paths:
        src = Path(path)
        stem, suffix = src.stem, src.suffix
        dst, k = folder / src.name, 1
        while dst.exists():
            k += 1
            dst = folder / f"{stem}_{k}{suffix}"
        try:
            os.link(src, dst)
        except OSError:  # another file system, or no hard links there
            shutil.copyfile(src, dst)
        staged.append(dst)
    return staged


class DemoEngine:
    """The demo's work, one request at a time on the model (it holds one encoded image).

    Args:
        cache: the model cache.
        work_dir: where examples and results are written (a :class:`WorkDir`, a folder, or None for a
            fresh temporary folder removed at exit).
        max_concepts: learned concepts kept for reuse (keyed by reference image, mask, method, model).
    """

    def __init__(
        self, cache: ModelCache, work_dir: WorkDir | Path | None = None, max_concepts: int = 4
    ) -> None:
        self.cache = cache
        self.work = work_dir if isinstance(work_dir, WorkDir) else WorkDir(work_dir)
        self.work_dir = self.work.path
        self.lock = threading.RLock()
        self.max_concepts = max_concepts
        self._concepts: OrderedDict[str, Any] = OrderedDict()
        self.concepts_learned = 0  # how many times a concept was learned (the rest were reused)

    def new_result_dir(self) -> Path:
        """A fresh folder for one request's files."""
        return self.work.new_run()

    # ------------------------------------------------------------------ reference mask
    def mask_from_clicks(
        self, settings: ModelSettings, image: np.ndarray, clicks: Sequence[tuple]
    ) -> np.ndarray:
        """``bool [H, W]``: the backbone's mask for positive / negative clicks ``(x, y, label)``."""
        if not any(c[2] == 1 for c in clicks):
            raise DemoError("Click on the object (a positive point) in the reference photo first.")
        try:
            pts, labels, _ = check_prompts(
                [c[:2] for c in clicks], [c[2] for c in clicks], None, image.shape[:2]
            )
        except InputError as e:
            raise DemoError(f"Cannot use the clicks: {one_line(e)}.") from None
        with self.lock:
            model = self.cache.get(settings)
            try:
                # The backbone keeps the photo encoded between clicks: only the decoder runs again.
                return np.asarray(mask_from_prompts(model, image, pts, labels), bool)
            except (InputError, ValueError) as e:
                raise DemoError(f"Cannot segment the clicks: {one_line(e)}") from None

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

    # ------------------------------------------------------------------ images
    def concept(self, settings: ModelSettings, image: np.ndarray, mask: np.ndarray, method: str) -> Any:
        """The concept learned from this reference, computed once and reused while it is kept."""
        key = _digest(image, mask.astype(bool)) + method + repr(self.cache.key(settings))
        with self.lock:
            model = self.cache.get(settings)
            if key in self._concepts:
                self._concepts.move_to_end(key)
                return self._concepts[key]
            try:
                concept = learn(model, image, mask, method=method, **_learn_options(method))
            except (InputError, ValueError) as e:
                raise DemoError(f"Cannot learn from the reference: {one_line(e)}") from None
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
        progress: Progress | None = None,
    ) -> ImagesResult:
        """Learns the concept (once) and segments every target file with
        :func:`persam.pipelines.image_set.segment_image_set` (masks, overlays, COCO results).

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
        staged = stage_targets(targets, out_dir / "targets")
        failed: dict[Path, str] = {}
        for path in staged:
            reason = too_large(path)
            if reason is not None:
                failed[path] = f"{path.name} ({reason})"
        readable = [p for p in staged if p not in failed]
        results: list[Any] = []

        def segment(image: np.ndarray) -> Any:
            if progress is not None:
                progress(
                    len(results) / len(readable), f"segmenting image {len(results) + 1} of {len(readable)}"
                )
            result = concept.segment(image)
            results.append(result)
            return result

        summary = None
        if readable:
            with self.lock:
                summary = segment_image_set(
                    segment, readable, out_dir, save=("mask", "overlay", "coco"), progress=False,
                    log=lambda _: None,
                )  # fmt: skip
            for failure in summary.failed:
                failed[failure.path] = f"{failure.path.name} (not a readable image)"
        reasons = [failed[p] for p in staged if p in failed]
        if summary is None or not summary.segmented:
            raise DemoError("No target could be read as an image: " + "; ".join(reasons) + ".")
        names = dict(zip(readable, output_names(readable), strict=True))
        # Results come in the order of the images segmented; a write failure after segmenting would
        # break that pairing, so scores are then left out rather than shown against the wrong image.
        paired = len(results) == len(summary.segmented)
        items = []
        for k, path in enumerate(summary.segmented):
            res = results[k] if paired else None
            score = float(res.score) if res is not None else float("nan")
            found = bool(res.found) if res is not None else path not in summary.not_found
            items.append(TargetResult(path.name, out_dir / OVERLAY_DIR / f"{names[path]}.jpg", score, found))
        text = f"Segmented {len(items)} image(s) with {method_title(method)}."
        if reasons:
            text += " Skipped: " + "; ".join(reasons) + "."
        zip_path = zip_folder(out_dir / MASK_DIR, out_dir / "masks.zip")
        ls_path, cvat_path = annotation_tool_files(out_dir / COCO_FILE, method)
        if progress is not None:
            progress(1.0, "done")
        return ImagesResult(
            items, zip_path, out_dir / COCO_FILE, text,
            failed=reasons, labelstudio_path=ls_path, cvat_path=cvat_path,
        )  # fmt: skip

    # ------------------------------------------------------------------ video
    def first_frame(self, video_path: str) -> np.ndarray:
        """Frame 0 of a video, ``uint8 [H, W, 3]`` (:class:`DemoError` when it cannot be decoded)."""
        try:
            with open_video(video_path) as source:
                for _, frame in source.frames():
                    return frame
        except InputError as e:
            raise DemoError(f"Cannot read the video: {one_line(e, video_path)}") from None
        raise DemoError("Cannot read the video: it holds no frame that can be decoded.")

    def track_video(
        self,
        settings: ModelSettings,
        video_path: str,
        first_labels: np.ndarray | None,
        method: str,
        progress: Progress | None = None,
        *,
        tracker: str = "auto",
        reference: tuple[np.ndarray, np.ndarray] | None = None,
        find_threshold: float = FIND_THRESHOLD,
    ) -> VideoResult:
        """Tracks objects through the video with :func:`persam.pipelines.video.track_to_folder`:
        those of the first-frame label map ``uint8 [H, W]``, or, without one, the object of a
        ``reference`` photo and mask (found on the first frame where PerSAM sees it).

        ``tracker``: ``"auto"``, ``"persam"`` or ``"sam2"`` (:data:`persam.tracking.TRACKER_CHOICES`).
        """
        if tracker not in TRACKER_CHOICES:
            raise DemoError(f"Unknown tracker {tracker!r}: choose one of {', '.join(TRACKER_CHOICES)}.")
        marked = first_labels is not None and bool(first_labels.any())
        if not marked and reference is None:
            raise DemoError(
                "Mark at least one object on the first frame, or give a reference photo and mask."
            )
        concepts = None
        if not marked:
            ref_image, ref_mask = reference
            if ref_mask.shape != ref_image.shape[:2] or not ref_mask.any():
                raise DemoError("The reference mask is empty or not the size of the photo: mark the object.")
            if progress is not None:
                progress(0.0, "learning the object from the photo")
            concepts = [self.concept(settings, ref_image, ref_mask, method)]
        out_dir = self.new_result_dir()
        stem = Path(video_path).stem or "video"
        video_out = out_dir / f"{stem}_overlay.webm"
        try:
            source = open_video(video_path)
        except InputError as e:
            raise DemoError(f"Cannot read the video: {one_line(e, video_path)}") from None
        total = source.info.num_frames
        done = [0]
        found: list[int] = []

        def on_frame(result: Any) -> None:
            done[0] += 1
            if result.is_reference:
                found.append(done[0] - 1)
            if progress is not None:
                share = done[0] / total if total else 0.0
                progress(min(share, 1.0), f"frame {done[0]}" + (f" of {total}" if total else ""))

        try:
            with self.lock, source:
                model = self.cache.get(settings)
                summary = track_to_folder(
                    model, source, first_labels if marked else None, out_dir / "masks", overlay=video_out,
                    concepts=concepts, find_threshold=find_threshold, tracker=tracker, method=method,
                    on_frame=on_frame,
                )  # fmt: skip
        except InputError as e:
            raise DemoError(f"Tracking stopped: {one_line(e, video_path)}") from None
        if summary.frames == 0:
            raise DemoError("Cannot read the video: it holds no frame that can be decoded.")
        zip_path = zip_folder(out_dir / "masks", out_dir / f"{stem}_masks_davis.zip", prefix=stem)
        text = f"Tracked {len(summary.object_ids)} object(s) over {summary.frames} frame(s)."
        if concepts is not None:
            text += (
                f" The object was found on frame {found[0]}; earlier frames have no mask."
                if found
                else " The object from the photo was not found on any frame."
            )
        return VideoResult(video_out, zip_path, summary.frames, text)
