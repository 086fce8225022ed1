"""Tracking a video into a folder: DAVIS label maps, a scores file and an overlay video, written
atomically, resumable after a crash, and never mixed with the frames of another run."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persam.backbones.base import Backbone
from persam.errors import InputError
from persam.personalize import Concept
from persam.pipelines.find import FIND_THRESHOLD
from persam.pipelines.video import FirstMaskLike, FramesLike, track
from persam.readers import DAVIS_PALETTE, FirstMask, FrameSource, frame_size, load_first_mask, open_video
from persam.tracking import FrameResult, Redetector, Tracker
from persam.writers import LabelMapWriter


@dataclass(kw_only=True)
class TrackSummary:
    """What :func:`track_to_folder` did.

    Attributes:
        frames: frames written (0 when skipped), those of a resumed run included.
        object_ids: the tracked objects.
        skipped: the folder held a finished run already (``skip_done``); nothing was computed.
        resumed: frames a killed earlier run had committed, kept rather than computed again.
        seconds: wall time of the tracking and writing.
    """

    frames: int = 0
    object_ids: list[int] = field(default_factory=list)
    skipped: bool = False
    resumed: int = 0
    seconds: float = 0.0


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _run_parameters(
    model: Backbone,
    info: Any,
    first: FirstMask | None,
    concepts: Sequence[Concept] | None,
    tracker: str | Tracker,
    **options: Any,
) -> dict[str, Any] | None:
    """What decides a run's label maps; a run can only resume or extend one with equal parameters
    (None: a tracker object, which has no recorded identity)."""
    if not isinstance(tracker, str):
        return None
    objects: dict[str, Any]
    if first is not None:
        objects = {
            "first_mask": _digest(first.label_map.astype(np.uint8)),
            "object_ids": list(first.object_ids),
        }
    else:
        feats = [_digest(c.target_feat.detach().float().cpu().numpy()) for c in concepts or ()]
        objects = {"concepts": feats, "object_ids": list(range(1, len(feats) + 1))}
    return {
        "video": None if info.backend == "arrays" else os.path.realpath(info.source),
        "frames": info.num_frames,
        **objects,
        "tracker": tracker,
        "model": model.name,
        "checkpoint": model.checkpoint_id,
        **options,
    }


def _finished_run(out: Path) -> dict[str, Any] | None:
    """The ``scores.json`` of the run that finished in ``out``, or None."""
    scores = out / LabelMapWriter.scores_name
    try:
        doc = json.loads(scores.read_text(encoding="utf-8")) if scores.is_file() else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check_overlay_target(out_dir: str | os.PathLike, overlay: str | os.PathLike, overwrite: bool) -> None:
    """Raises :class:`InputError` when ``overlay`` exists but is not the overlay video of the run
    that finished in ``out_dir`` (someone's file, which only ``overwrite`` may replace)."""
    if overwrite or not Path(overlay).exists():
        return
    doc = _finished_run(Path(out_dir))
    if doc is None or doc.get("overlay") != os.path.realpath(overlay):
        raise InputError(
            f"--overlay {overlay}: exists and is not an overlay of an earlier run into {out_dir}; "
            "pass --overwrite to replace it"
        )


def _check_folder_reuse(out: Path, run: dict[str, Any] | None, overwrite: bool) -> list[str]:
    """Refuses to mix this run's frames with another run's, or to write among PNG files no run
    wrote, unless ``overwrite``; returns the frame files of an earlier run (replaced at commit)."""
    doc = _finished_run(out)
    old_frames = [f.get("name") for f in doc.get("frames") or [] if isinstance(f, dict)] if doc else []
    old_frames = [f"{n}.png" for n in old_frames if isinstance(n, str)]
    if overwrite or not out.is_dir():
        return old_frames
    if doc is None:
        if next(out.glob("*.png"), None) is not None:
            raise InputError(
                f"{out}: holds PNG files that no persam track run wrote; pass --overwrite to write "
                "among them, or choose another folder"
            )
        return []
    before = doc.get("run")
    if run is None or before != run:
        diff = [k for k in (run or {}) if not isinstance(before, dict) or before.get(k) != run[k]]
        what = f" (its {', '.join(diff[:3])} differ{'s' * (len(diff) == 1)})" if diff else ""
        raise InputError(
            f"{out}: holds the frames of another track run{what}; pass --overwrite to replace them, "
            "or choose another folder"
        )
    return old_frames


def track_to_folder(
    model: Backbone,
    frames: FramesLike,
    first_mask: FirstMaskLike | None,
    out_dir: str | os.PathLike,
    *,
    concepts: Sequence[Concept] | None = None,
    find_threshold: float = FIND_THRESHOLD,
    overlay: str | os.PathLike | None = None,
    skip_done: bool = False,
    overwrite: bool = False,
    tracker: str | Tracker = "auto",
    method: str = "persam",
    compat: str = "fixed",
    start: int = 0,
    stride: int = 1,
    topk: int = 2,
    box_margin: int = 10,
    redetect: bool | Redetector | None = False,
    metadata: dict[str, Any] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> TrackSummary:
    """Tracks a video and writes ``OUT/<frame>.png`` (DAVIS palette PNGs: the first mask's palette,
    else the DAVIS one), ``OUT/scores.json`` (per frame and object: score, presence, box, and the
    run's parameters) and, with ``overlay``, an overlay video (``.mp4``, ``.avi`` or ``.webm``).

    Nothing appears unless the whole video was processed: the files are staged and moved into
    place at the end, the scores file last, so a folder holding ``scores.json`` is a finished run.
    The staged label maps are the state of the run: a run from a first mask killed part way (even
    by SIGKILL) is resumed by the next run with the same parameters, the tracker starting again
    from the last label map written (frames it had written are not computed again; the overlay is
    redrawn). A run from ``concepts`` (tracking from a photo) starts again from its first frame.

    Args:
        first_mask: the annotation of frame ``start``, or None with ``concepts``.
        out_dir: output folder (created). Frames of an earlier run with other parameters, or PNG
            files no run wrote, are an :class:`InputError` unless ``overwrite`` (then the earlier
            run's frames are replaced).
        overlay: path of the overlay video, or None; an existing file that is not an overlay of
            an earlier run into ``out_dir`` needs ``overwrite``.
        skip_done: leave a folder that holds a finished run alone (so an interrupted batch of
            videos resumes where it stopped).
        metadata: extra entries for ``scores.json``.
        on_frame: called with every frame's result once it is written (e.g. progress).
        Other arguments: see :func:`track`.

    Raises:
        InputError: as :func:`track`, or an unusable output path.
    """
    out = Path(out_dir)
    if skip_done and (out / LabelMapWriter.scores_name).is_file():
        return TrackSummary(skipped=True)
    t0 = time.perf_counter()
    source = frames if isinstance(frames, FrameSource) else open_video(frames)
    try:
        info = source.info
        first = None
        if first_mask is not None:
            first = first_mask if isinstance(first_mask, FirstMask) else load_first_mask(first_mask)
            size = info.size if info.size is not None else frame_size(source, start)
            if first.size != tuple(size):
                raise InputError(
                    f"{first.source}: mask is {first.size[1]}×{first.size[0]} (W×H) but the video frames "
                    f"are {size[1]}×{size[0]}"
                )
            object_ids = list(first.object_ids)
        else:
            object_ids = list(range(1, len(concepts or ()) + 1))
        options = {"method": method, "compat": compat, "start": start, "stride": stride}
        run = _run_parameters(
            model, info, first, concepts, tracker, topk=topk, box_margin=box_margin, **options
        )
        old_frames = _check_folder_reuse(out, run, overwrite)
        meta = {"object_ids": object_ids, "fps": info.fps, "start": start, "stride": stride}
        meta.update(metadata or {})
        meta.update(run=run, overlay=None if overlay is None else os.path.realpath(overlay))
        palette = (first.palette if first is not None else None) or list(DAVIS_PALETTE)
        writer = LabelMapWriter(
            out, palette=palette, overlay=overlay, fps=info.fps / stride, metadata=meta, run=run
        )
        with writer:
            if first is not None:
                begin, init = _resume_point(writer, source, first, start, stride)
            else:
                writer.forget_resumed()
                begin, init = start, None
            results = track(
                model,
                source,
                init,
                concepts=concepts if init is None else None,
                find_threshold=find_threshold,
                tracker=tracker,
                redetect=redetect,
                method=method,
                compat=compat,
                start=begin,
                stride=stride,
                topk=topk,
                box_margin=box_margin,
                keep_images=overlay is not None,
            )
            for res in results:
                name = info.frame_name(res.index)
                if init is not first and res.index == begin:  # the resumed frame: already written
                    if overlay is not None:
                        writer.write_overlay_frame(res.image, res.masks.label_map())
                    continue
                writer.write(name, res.masks, res.image, dict(res.to_record(), name=name))
                if on_frame is not None:
                    on_frame(res)
            writer.replaced = old_frames
        n = len(writer.records)
    finally:
        if source is not frames:
            source.close()
    return TrackSummary(
        frames=n, object_ids=object_ids, resumed=len(writer.resumed), seconds=time.perf_counter() - t0
    )


def _resume_point(
    writer: LabelMapWriter, source: FrameSource, first: FirstMask, start: int, stride: int
) -> tuple[int, FirstMask]:
    """Where tracking starts: ``start`` with ``first``, or, resuming, the last frame a killed run
    wrote, with its label map (frames before it are only drawn into the overlay)."""
    done = writer.resumed
    if len(done) < 2:
        writer.forget_resumed()
        return start, first
    last = done[-1]
    label_map = writer.resumed_label_map(last["name"])
    if not set(first.object_ids) <= set(np.unique(label_map).tolist()):
        writer.forget_resumed()  # an object is lost there: it cannot be learned again from it
        return start, first
    if writer.overlay is not None:
        names = {r["index"]: r["name"] for r in done[:-1]}
        frames = source.frames(start, stride)
        try:
            for index, frame in frames:
                if index >= last["index"]:
                    break
                writer.write_overlay_frame(frame, writer.resumed_label_map(names[index]))
        finally:
            frames.close()  # before tracking opens the source again
    init = load_first_mask(label_map)
    init.palette, init.source = first.palette, f"{last['name']}.png (resumed)"
    return int(last["index"]), init
