"""Segmenting a concept over an image set on a Ray cluster: :func:`segment_dataset`.

The same outputs as :func:`persam.pipelines.image_set.segment_image_set` (same file names,
formats, COCO file and state file, so either engine resumes the other's run), computed by a pool
of actors that each build the model once and hold the concept. Images flow through Ray Data: read
tasks fetch the files' bytes, the actors decode, segment and write each image's files atomically,
and this process merges the COCO entries and the state in input order, so the COCO file is the one
the local engine writes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persam.allocator import tune_cpu_allocator
from persam.distributed.cluster import RayOptions, actor_pool_args, import_ray, ray_session
from persam.distributed.storage import Destination, Source, list_sources
from persam.errors import InputError
from persam.io import PathLike
from persam.outputs import COCO_FILE, DEFAULT_SAVE, STATE_FILE, ImageSetWriter, coco_entry, parse_save
from persam.personalize import Concept
from persam.pipelines.image_set import (
    ImageFailure,
    ImageSetSummary,
    concept_fingerprint,
    output_names,
    relative_names,
)

#: Fault injection for tests of actor loss: ``"N:MARKER"`` makes the first actor that has written
#: N images exit abruptly, once (the marker file records that it happened).
EXIT_AFTER_ENV = "PERSAM_RAY_EXIT_AFTER"

# Reading is I/O: a small CPU share lets read tasks run beside actors that hold most of a small node.
_READ_CPUS = 0.1
_UPLOAD_SECONDS = 10.0


@dataclass
class DatasetSummary(ImageSetSummary):
    """An :class:`ImageSetSummary` with timings: ``seconds`` of the whole call, of which
    ``startup_seconds`` went to starting or joining the cluster."""

    seconds: float = 0.0
    startup_seconds: float = 0.0

    def line(self) -> str:
        done = len(self.segmented)
        rate = done / max(self.seconds - self.startup_seconds, 1e-9)
        return (
            f"{super().line()}; {self.seconds:.1f} s ({self.startup_seconds:.1f} s cluster start-up), "
            f"{rate:.2f} images/s"
        )


def concept_bytes(concept: Concept | PathLike) -> tuple[bytes, Concept]:
    """The bytes of a concept file (written by :meth:`Concept.save`) and the concept they hold."""
    with tempfile.TemporaryDirectory(prefix="persam-concept-") as tmp:
        path = Path(tmp) / "concept.persam"
        if isinstance(concept, Concept):
            concept.save(path)
        else:
            path.write_bytes(Source(str(concept)).read_bytes())
        return path.read_bytes(), Concept.load(path)


def model_spec(model: str | os.PathLike | dict[str, Any]) -> str | dict[str, Any]:
    """A registry name as is; a config file read here, so that actors on other nodes need no copy."""
    if isinstance(model, dict):
        return model
    if str(model).lower().endswith(".json"):
        try:
            return json.loads(Path(model).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{model}: cannot read model config ({type(e).__name__}: {e})") from None
    return str(model)


def _read(row: dict[str, Any]) -> dict[str, Any]:
    try:
        row["data"], row["error"] = Source(row["label"]).read_bytes(), ""
    except InputError as e:
        row["data"], row["error"] = b"", str(e)
    return row


class SegmentActor:
    """Holds one model and the concept; segments and writes one batch of images per call."""

    def __init__(
        self,
        *,
        model: str | dict[str, Any],
        checkpoint: str,
        device: str,
        dtype: str,
        concept: bytes,
        destination: str,
        save: tuple[str, ...],
        concept_name: str,
        overlay_format: str,
        max_instances: int,
        threads: int,
        exit_after: str = "",
    ) -> None:
        import torch

        from persam.registry import build_model

        tune_cpu_allocator()
        torch.set_num_threads(threads)
        backbone = build_model(model, checkpoint=checkpoint, device=device, dtype=dtype)
        with tempfile.TemporaryDirectory(prefix="persam-concept-") as tmp:
            (Path(tmp) / "c.persam").write_bytes(concept)
            self.concept = Concept.load(Path(tmp) / "c.persam", backbone)
        staging = Path(tempfile.mkdtemp(prefix="persam-out-")) if "://" in destination else None
        self.destination = Destination(destination, staging)
        files = tuple(k for k in save if k != "coco")
        self.writer = (
            ImageSetWriter(self.destination.local_dir, files, concept_name, overlay_format) if files else None
        )
        self.coco = "coco" in save
        self.max_instances = max_instances
        self.exit_after = exit_after
        self.written = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from persam.io import load_image_bytes

        out: dict[str, list[Any]] = {"index": [], "ok": [], "message": [], "entry": [], "found": []}
        for i in range(len(batch["index"])):
            label, error = str(batch["label"][i]), str(batch["error"][i])
            entry, found = "", False
            if not error:
                try:
                    image = load_image_bytes(bytes(batch["data"][i]), label)
                    masks = self.concept.segment(image, max_instances=self.max_instances).masks
                    if self.writer is not None:
                        self.destination.publish(self.writer.write_files(str(batch["name"][i]), image, masks))
                    entry = json.dumps(coco_entry(masks)) if self.coco else ""
                    found = bool(masks.found.any())
                except (InputError, OSError) as e:
                    error = str(e) if isinstance(e, InputError) else f"{label}: {type(e).__name__}: {e}"
                self._maybe_exit()
            out["index"].append(int(batch["index"][i]))
            out["ok"].append(not error)
            out["message"].append(error)
            out["entry"].append(entry)
            out["found"].append(found)
        return out

    def _maybe_exit(self) -> None:
        self.written += 1
        if not self.exit_after:
            return
        count, _, marker = self.exit_after.partition(":")
        if self.written >= int(count):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(1)


def segment_dataset(
    concept: Concept | PathLike,
    targets: Sequence[PathLike] | PathLike,
    out_dir: PathLike,
    *,
    model: str | os.PathLike | dict[str, Any],
    checkpoint: str | os.PathLike = "auto",
    device: str = "auto",
    dtype: str = "float32",
    save: str | Sequence[str] = DEFAULT_SAVE,
    concept_name: str = "object",
    overwrite: bool = False,
    max_instances: int = 1,
    overlay_format: str = "jpg",
    ray_address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_image: Callable[[str, str], None] | None = None,
) -> DatasetSummary:
    """Segments ``concept`` in every target image on a Ray cluster and writes what
    :func:`~persam.pipelines.image_set.segment_image_set` writes.

    Args:
        concept: a learned :class:`~persam.personalize.Concept` or a concept file (path or URI); its
            bytes are sent to the actors, which load it for their own model.
        targets: image files, folders and glob patterns, as paths or URIs (``s3://``, ``gs://``,
            ``file://``: any filesystem pyarrow opens).
        out_dir: output folder, a path or a URI (files are written under it under the local
            engine's names).
        model, checkpoint, device, dtype: what each actor builds (:func:`persam.build_model`); a
            checkpoint path must be readable on every node (``"auto"`` uses each node's cache).
        ray_address: a running cluster (``"auto"`` inside ``ray job submit``); None starts a local one.
        actors, gpus_per_actor, cpus_per_actor, num_cpus: see :class:`RayOptions`.
        on_image: called with ``(label, "segmented" | "failed")`` as each image is recorded.
        Other arguments: as :func:`segment_image_set`.

    Returns:
        A :class:`DatasetSummary`. Raises :class:`InputError` when there is nothing to segment, the
        output is unusable or the cluster cannot be reached; errors of single images are collected.
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
    save = parse_save(save)
    sources = list_sources([targets] if isinstance(targets, (str, os.PathLike)) else list(targets))
    if not sources:
        raise InputError(f"{targets}: no images found")
    payload, learned = concept_bytes(concept)
    fingerprint = concept_fingerprint(learned, concept_name, max_instances)
    emit = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    staging = Path(tempfile.mkdtemp(prefix="persam-results-")) if "://" in str(out_dir) else None
    summary = DatasetSummary()
    try:
        dest = Destination(out_dir, staging)
        for name in (COCO_FILE, STATE_FILE):
            dest.download(name)
        writer = ImageSetWriter(dest.local_dir, save, concept_name, overlay_format, fingerprint)
        fs_paths = [s.fs_path() for s in sources]
        names, file_names = output_names(fs_paths), relative_names(fs_paths)
        todo = _plan(writer, dest, sources, names, file_names, overwrite, summary)
        if todo:
            run = _Run(writer, dest, sources, names, file_names, summary, emit, on_image, todo)
            try:
                with ray_session(options) as session:
                    summary.startup_seconds = time.perf_counter() - t0
                    ctor = {
                        "model": model_spec(model),
                        "checkpoint": str(checkpoint),
                        "device": device,
                        "dtype": dtype,
                        "concept": payload,
                        "destination": str(out_dir),
                        "save": save,
                        "concept_name": concept_name,
                        "overlay_format": overlay_format,
                        "max_instances": max_instances,
                        "threads": session.torch_threads,
                        "exit_after": os.environ.get(EXIT_AFTER_ENV, ""),
                    }
                    ray = import_ray()
                    rows = [{"index": i, "label": sources[i].label, "name": names[i]} for i in todo]
                    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * actors + 4))
                    ds = ds.map(_read, num_cpus=_READ_CPUS).map_batches(
                        SegmentActor,
                        batch_size=1,
                        fn_constructor_kwargs=ctor,
                        **actor_pool_args(options, session),
                    )
                    rows_out = iter(ds.iter_rows())
                    try:
                        for row in rows_out:
                            run.add(row)
                    finally:
                        # Stops the pipeline now, also on an interrupt, so that no actor outlives the call.
                        getattr(rows_out, "close", lambda: None)()
            finally:
                run.finish()
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _plan(
    writer: ImageSetWriter,
    dest: Destination,
    sources: list[Source],
    names: list[str],
    file_names: list[str],
    overwrite: bool,
    summary: DatasetSummary,
) -> list[int]:
    """Indices of the images to compute; the others go to ``summary.skipped`` (the local rule)."""
    listing = dest.existing()
    todo = []
    for i, (name, file_name) in enumerate(zip(names, file_names, strict=True)):
        if overwrite:
            exist = False
        elif listing is None:
            exist = writer.outputs_exist(name, file_name)
        else:
            rels = [dest.relative(p) for p in writer.file_paths(name).values()]
            in_coco = writer.coco is None or file_name in writer.coco
            exist = in_coco and all(r in listing for r in rels)
        if exist and writer.is_current(name):
            summary.skipped.append(_shown(sources[i]))
            continue
        if exist:
            summary.stale.append(_shown(sources[i]))
        todo.append(i)
    return todo


def _shown(source: Source) -> Any:
    return Path(source.label) if source.local else source.label


class _Run:
    """Records the actors' results in input order, so that COCO ids follow the local engine's."""

    def __init__(
        self,
        writer: ImageSetWriter,
        dest: Destination,
        sources: list[Source],
        names: list[str],
        file_names: list[str],
        summary: DatasetSummary,
        emit: Callable[[str], None],
        on_image: Callable[[str, str], None] | None,
        todo: list[int],
    ) -> None:
        self.writer, self.dest, self.sources = writer, dest, sources
        self.names, self.file_names, self.summary = names, file_names, summary
        self.emit, self.on_image = emit, on_image
        self.pending: dict[int, dict[str, Any]] = {}
        self.order = todo
        self.pos = 0
        self.uploaded_at = time.monotonic()
        self.unpublished = False

    def add(self, row: dict[str, Any]) -> None:
        self.pending[int(row["index"])] = row
        while self.pos < len(self.order) and self.order[self.pos] in self.pending:
            self._record(self.pending.pop(self.order[self.pos]))
            self.pos += 1

    def _record(self, row: dict[str, Any], notify: bool = True) -> None:
        i = int(row["index"])
        shown = _shown(self.sources[i])
        if row["ok"]:
            entry = json.loads(row["entry"]) if row["entry"] else None
            self.writer.record(self.names[i], self.file_names[i], entry)
            self.summary.segmented.append(shown)
            if not row["found"]:
                self.summary.not_found.append(shown)
            self.unpublished = True
        else:
            self.summary.failed.append(ImageFailure(shown, str(row["message"])))
            self.emit(f"failed: {row['message']}")
        if self.on_image is not None and notify:
            self.on_image(self.sources[i].label, "segmented" if row["ok"] else "failed")
        if self.dest.remote and self.unpublished and time.monotonic() - self.uploaded_at > _UPLOAD_SECONDS:
            self._publish()

    def _publish(self) -> None:
        self.writer.flush()
        kept = [self.dest.local_dir / n for n in (COCO_FILE, STATE_FILE)]
        self.dest.publish([p for p in kept if p.is_file()], keep=True)
        self.uploaded_at, self.unpublished = time.monotonic(), False

    def finish(self) -> None:
        """Records what arrived (also after an interruption: those images are complete) and saves."""
        for i in sorted(self.pending):
            self._record(self.pending.pop(i), notify=False)
        self.writer.flush()
        if self.dest.remote and self.unpublished:
            self._publish()
