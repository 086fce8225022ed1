"""Tracking many videos on a Ray cluster: :func:`track_dataset`.

One video is one task: an actor holding the model tracks it from its first-frame mask (or from
concepts learned from photos) to the end, in order, with
:func:`persam.pipelines.video_folder.track_to_folder`, so every output folder is exactly what
``persam track`` writes for that video (DAVIS label maps, an optional overlay video and
``scores.json``, which appears last). Finished folders are skipped, so an interrupted job resumes
with the same call.
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

from persam.allocator import tune_cpu_allocator
from persam.distributed.cluster import RayOptions, actor_pool_args, import_ray, ray_session
from persam.distributed.segment import concept_bytes, model_spec
from persam.distributed.storage import Destination, exists, fetch, is_uri, join_uri, split_uri
from persam.errors import InputError
from persam.personalize import Concept
from persam.pipelines.find import FIND_THRESHOLD
from persam.pipelines.image_set import output_names
from persam.writers import LabelMapWriter


@dataclass(frozen=True, kw_only=True)
class VideoJob:
    """One video: its file or frame folder, its first-frame mask(s) (none when the objects are
    given as concepts), its output folder and optional overlay video (paths or URIs)."""

    video: str
    masks: tuple[str, ...]
    out: str
    overlay: str | None = None


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


def _below(folder: str | os.PathLike, name: str) -> str:
    return join_uri(str(folder), name) if is_uri(folder) else str(Path(folder) / name)


def video_jobs(
    videos: Sequence[str | os.PathLike],
    masks: Sequence[Any] | None,
    out_dir: str | os.PathLike,
    *,
    overlay_dir: str | os.PathLike | None = None,
    overlay_suffix: str = ".mp4",
) -> list[VideoJob]:
    """One job per video with output ``OUT/<video name>``; ``masks[i]``: a mask or a list of masks
    (``masks=None``: objects given as concepts to :func:`track_dataset`); with ``overlay_dir``, the
    overlay video of each ``<video name>`` is ``overlay_dir/<video name><overlay_suffix>``."""
    if masks is not None and len(videos) != len(masks):
        raise InputError(f"{len(videos)} videos but {len(masks)} first-frame masks")
    names = video_names([str(v) for v in videos])
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InputError(f"two videos are named {dup!r}: their outputs would share a folder")
    return [
        VideoJob(
            video=str(v),
            masks=() if m is None else tuple(str(x) for x in (m if isinstance(m, (list, tuple)) else [m])),
            out=_below(out_dir, n),
            overlay=None if overlay_dir is None else _below(overlay_dir, n + overlay_suffix),
        )
        for v, m, n in zip(videos, masks if masks is not None else [None] * len(videos), names, strict=True)
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
        concepts: Sequence[bytes] = (),
        redetect_after: int | None = None,
    ) -> None:
        import torch

        from persam.personalize import Concept
        from persam.registry import build_model
        from persam.tracking import Redetector

        tune_cpu_allocator()
        torch.set_num_threads(threads)
        self.model = build_model(model, checkpoint=checkpoint, device=device, dtype=dtype)
        self.options = dict(options)
        self.options["redetect"] = None if redetect_after is None else Redetector(after=redetect_after)
        self.concepts = None
        if concepts:
            with tempfile.TemporaryDirectory(prefix="persam-concept-") as tmp:
                paths = [Path(tmp) / f"{k}.persam" for k in range(len(concepts))]
                for path, data in zip(paths, concepts, strict=True):
                    path.write_bytes(data)
                self.concepts = [Concept.load(path, self.model) for path in paths]

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
            first = load_first_mask(masks[0] if len(masks) == 1 else masks) if masks else None
            meta = {"video": job.video, "mask": list(job.masks), "tracker": self.options["tracker"]}
            meta.update(method=self.options["method"], compat=self.options["compat"], model=self.model.name)
            dest = Destination(job.out, Path(tmp) / "out")
            overlay, overlay_dest = self._overlay_target(job, Path(tmp) / "overlay")
            summary = track_to_folder(
                self.model,
                video,
                first,
                dest.local_dir,
                concepts=self.concepts,
                overlay=overlay,
                metadata=meta,
                **self.options,
            )
            if overlay_dest is not None and overlay is not None:
                overlay_dest.publish([overlay])  # before the scores file that marks a finished run
            if dest.remote:
                files = sorted(
                    dest.local_dir.iterdir(), key=lambda f: (f.name == LabelMapWriter.scores_name, f.name)
                )
                dest.publish(files)  # the scores file last, as locally
            return summary.frames

    @staticmethod
    def _overlay_target(job: VideoJob, staging: Path) -> tuple[Path | None, Destination | None]:
        """Where the overlay video is written: its own path when local, else a staged file that
        the returned destination publishes."""
        if job.overlay is None:
            return None, None
        if not is_uri(job.overlay):
            Path(job.overlay).parent.mkdir(parents=True, exist_ok=True)
            return Path(job.overlay), None
        folder, name = job.overlay.rsplit("/", 1)
        staging.mkdir()
        return staging / name, Destination(folder, staging)


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
    tracker: str = "auto",
    redetect_after: int | None = None,
    concepts: Sequence[Concept | str | os.PathLike] | None = None,
    find_threshold: float = FIND_THRESHOLD,
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
    ``overwrite``; a video that fails is reported and the others go on. With ``concepts`` (learned
    concepts or concept files, one object each) the jobs carry no masks: each video is tracked from
    where PerSAM first finds the objects. ``redetect_after``: SAM 2 re-detection of an object lost
    for that many frames (see :class:`persam.tracking.Redetector`). Other options: as
    :func:`persam.pipelines.video_folder.track_to_folder` and
    :func:`persam.distributed.segment_dataset`.
    """
    if concepts and any(job.masks for job in jobs):
        raise InputError("give first-frame masks or concepts, not both")
    if not concepts and any(not job.masks for job in jobs):
        raise InputError("a video has no first-frame mask and no concepts were given")
    payloads = [concept_bytes(c)[0] for c in concepts or ()]
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
            track_options.update(
                topk=topk, box_margin=box_margin, tracker=tracker, find_threshold=find_threshold
            )
            track_options["overwrite"] = overwrite
            ctor = {
                "model": model_spec(model),
                "checkpoint": str(checkpoint),
                "device": device,
                "dtype": dtype,
                "threads": session.torch_threads,
                "options": track_options,
                "concepts": payloads,
                "redetect_after": redetect_after,
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
