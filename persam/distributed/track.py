"""Tracking many videos on a Ray cluster: :func:`track_dataset`.

One video is one task: an actor holding the model tracks it from its first-frame mask to the end,
in order, with :func:`persam.pipelines.video.track_to_folder`, so every output folder is exactly
what ``persam track`` writes for that video (DAVIS label maps and ``scores.json``, which appears
last). Finished folders are skipped, so an interrupted job resumes with the same call.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persam.distributed.cluster import RayOptions, actor_pool_args, import_ray, ray_session
from persam.distributed.segment import model_spec
from persam.distributed.storage import Destination, exists, fetch, is_uri, join_uri, split_uri
from persam.errors import InputError
from persam.pipelines.image_set import output_names
from persam.writers import LabelMapWriter


@dataclass(frozen=True, kw_only=True)
class VideoJob:
    """One video: its file or frame folder, its first-frame mask(s) and its output folder (paths or
    URIs)."""

    video: str
    masks: tuple[str, ...]
    out: str


@dataclass(kw_only=True)
class TrackDatasetSummary:
    """What :func:`track_dataset` did: videos tracked / skipped (finished before) / failed (with
    one-line reasons), frames written, seconds in all and of cluster start-up."""

    tracked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0

    def line(self) -> str:
        rate = self.frames / max(self.seconds - self.startup_seconds, 1e-9)
        skipped = f", {len(self.skipped)} skipped (finished before)" if self.skipped else ""
        return (
            f"{len(self.tracked)} video(s) tracked{skipped}, {len(self.failed)} failed; {self.frames} "
            f"frame(s) in {self.seconds:.1f} s ({self.startup_seconds:.1f} s cluster start-up), "
            f"{rate:.2f} frames/s"
        )


def video_names(videos: Sequence[str]) -> list[str]:
    """The output sub-folder of each video: its path below the deepest folder holding all of them,
    without suffix (``JPEGImages/480p/bear`` -> ``bear``; ``a/clip.mp4``, ``b/clip.mp4`` -> ``a/clip``,
    ``b/clip``), as image outputs are named."""
    return output_names([split_uri(v)[1] if is_uri(v) else v for v in videos])


def video_jobs(
    videos: Sequence[str | os.PathLike], masks: Sequence[Any], out_dir: str | os.PathLike
) -> list[VideoJob]:
    """One job per video with output ``OUT/<video name>``; ``masks[i]``: a mask or a list of masks."""
    if len(videos) != len(masks):
        raise InputError(f"{len(videos)} videos but {len(masks)} first-frame masks")
    names = video_names([str(v) for v in videos])
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InputError(f"two videos are named {dup!r}: their outputs would share a folder")
    return [
        VideoJob(
            video=str(v),
            masks=tuple(str(x) for x in (m if isinstance(m, (list, tuple)) else [m])),
            out=join_uri(str(out_dir), n) if is_uri(out_dir) else str(Path(out_dir) / n),
        )
        for v, m, n in zip(videos, masks, names, strict=True)
    ]


class TrackActor:
    """Holds one model; tracks one video per row and writes its folder."""

    def __init__(
        self,
        *,
        model: str | dict[str, Any],
        checkpoint: str,
        device: str,
        dtype: str,
        threads: int,
        options: dict[str, Any],
    ) -> None:
        import torch

        from persam.registry import build_model

        torch.set_num_threads(threads)
        self.model = build_model(model, checkpoint=checkpoint, device=device, dtype=dtype)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"index": [], "message": [], "frames": []}
        for i in range(len(batch["index"])):
            job = VideoJob(**json.loads(str(batch["job"][i])))
            try:
                frames, message = self._track(job), ""
            except (InputError, OSError) as e:
                frames, message = 0, (str(e) if isinstance(e, InputError) else f"{job.video}: {e}")
            out["index"].append(int(batch["index"][i]))
            out["message"].append(message)
            out["frames"].append(frames)
        return out

    def _track(self, job: VideoJob) -> int:
        from persam.pipelines.video_folder import track_to_folder
        from persam.readers import load_first_mask

        with tempfile.TemporaryDirectory(prefix="persam-video-") as tmp:
            inputs = Path(tmp) / "in"
            inputs.mkdir()
            video = fetch(job.video, inputs)
            masks = [fetch(m, inputs) for m in job.masks]
            first = load_first_mask(masks[0] if len(masks) == 1 else masks)
            meta = {"video": job.video, "mask": list(job.masks), "method": self.options["method"]}
            meta.update(compat=self.options["compat"], model=self.model.name)
            dest = Destination(job.out, Path(tmp) / "out")
            summary = track_to_folder(self.model, video, first, dest.local_dir, metadata=meta, **self.options)
            if dest.remote:
                files = sorted(
                    dest.local_dir.iterdir(), key=lambda f: (f.name == LabelMapWriter.scores_name, f.name)
                )
                dest.publish(files)  # the scores file last, as locally
            return summary.frames


def track_dataset(
    jobs: Sequence[VideoJob],
    *,
    model: str | os.PathLike | dict[str, Any],
    checkpoint: str | os.PathLike = "auto",
    device: str = "auto",
    dtype: str = "float32",
    method: str = "persam",
    compat: str = "fixed",
    start: int = 0,
    stride: int = 1,
    topk: int = 2,
    box_margin: int = 10,
    overwrite: bool = False,
    ray_address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrackDatasetSummary:
    """Tracks every video of ``jobs`` (see :func:`video_jobs`) on a Ray cluster, one video per task.

    A job whose output folder holds ``scores.json`` (a finished run) is skipped unless
    ``overwrite``; a video that fails is reported and the others go on. Options: as
    :func:`persam.pipelines.video.track_to_folder` and :func:`persam.distributed.segment_dataset`.
    """
    t0 = time.perf_counter()
    options = RayOptions(
        address=ray_address,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
        num_cpus=num_cpus,
        progress=progress,
    )
    emit = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    summary = TrackDatasetSummary()
    todo = []
    for i, job in enumerate(jobs):
        if not overwrite and exists(join_uri(job.out, LabelMapWriter.scores_name)):
            summary.skipped.append(job.video)
        else:
            todo.append(i)
    if todo:
        with ray_session(options) as session:
            summary.startup_seconds = time.perf_counter() - t0
            ray = import_ray()
            track_options = {"method": method, "compat": compat, "start": start, "stride": stride}
            track_options.update(topk=topk, box_margin=box_margin)
            ctor = {
                "model": model_spec(model),
                "checkpoint": str(checkpoint),
                "device": device,
                "dtype": dtype,
                "threads": session.torch_threads,
                "options": track_options,
            }
            rows = [{"index": i, "job": json.dumps(jobs[i].__dict__)} for i in todo]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                TrackActor, batch_size=1, fn_constructor_kwargs=ctor, **actor_pool_args(options, session)
            )
            rows_out = iter(ds.iter_rows())
            try:
                results = {int(r["index"]): r for r in rows_out}
            finally:
                # Stops the pipeline now, also on an interrupt, so that no actor outlives the call.
                getattr(rows_out, "close", lambda: None)()
        for i in todo:
            row = results[i]
            if row["message"]:
                summary.failed.append((jobs[i].video, str(row["message"])))
                emit(f"failed: {row['message']}")
            else:
                summary.tracked.append(jobs[i].video)
                summary.frames += int(row["frames"])
    summary.seconds = time.perf_counter() - t0
    return summary
