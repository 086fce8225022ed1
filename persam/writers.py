"""Data out for videos: DAVIS-format label PNGs, an overlay video and per-frame scores, written
atomically by :class:`LabelMapWriter` (nothing appears unless the whole run succeeded)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from persam.drawing import overlay_labels
from persam.errors import OutputPathError
from persam.io import InputError, PathLike, check_output_dir, create_temp_beside
from persam.locks import FileLock, held_by_other
from persam.readers.davis import DAVIS_PALETTE
from persam.readers.video import DEFAULT_FPS
from persam.results import Masks

STAGE_PREFIX = ".persam-track-"
# The stage of a resumable run has a fixed name, so that the next run with the same parameters
# finds it; it holds the run record, the label maps done so far and their scores, one JSON a line.
RESUME_STAGE = STAGE_PREFIX + "resume"
_LOCK = ".lock"
_RUN = "run.json"
_RECORDS = "frames.jsonl"


def save_label_png(path: PathLike, label_map: np.ndarray, palette: list[int]) -> None:
    """Writes ``label_map`` (uint8 ``[H, W]``, object ids) as a palette PNG (DAVIS format)."""
    lm = np.ascontiguousarray(label_map, dtype=np.uint8)
    im = Image.frombytes("P", (lm.shape[1], lm.shape[0]), lm.tobytes())
    im.putpalette(palette)
    im.save(path, format="PNG")


def remove_stale_stages(out: Path, keep: Path | None = None) -> None:
    """Removes staging folders (and their half-written overlay videos) of runs that died: those
    whose lock no live process holds. A live run's stage is never touched."""
    for d in out.glob(STAGE_PREFIX + "*"):
        if not d.is_dir() or d == keep or held_by_other(d / _LOCK):
            continue
        _remove_overlay_part(d)
        shutil.rmtree(d, ignore_errors=True)


def _remove_overlay_part(stage: Path) -> None:
    try:
        part = json.loads((stage / _RUN).read_text(encoding="utf-8")).get("overlay_part")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(part, str) and Path(part).name.startswith("."):
        Path(part).unlink(missing_ok=True)


@dataclass
class LabelMapWriter:
    """Writes tracking results; nothing appears at the destinations unless :meth:`commit` runs.

    Label PNGs and the scores JSON are staged in a hidden folder inside ``out_dir`` and moved into
    place by :meth:`commit`; the overlay video is written to a temporary file beside its
    destination. :meth:`abort` (called on any exception when used as a context manager) removes
    everything this writer created, including ``out_dir`` itself when it did not exist before.

    Args:
        out_dir: folder for ``<frame name>.png`` label maps and ``scores.json`` (None: no PNGs).
        palette: flat ``[r, g, b] * 256`` palette of the PNGs and overlay colours.
        overlay: path of the overlay video (``.mp4``, ``.avi`` or ``.webm``), or None.
        fps: frame rate of the overlay video.
        scores_name: file name of the per-frame scores inside ``out_dir`` (None: not written).
    """

    out_dir: PathLike | None
    _: KW_ONLY
    palette: list[int] = field(default_factory=lambda: list(DAVIS_PALETTE))
    overlay: PathLike | None = None
    fps: float = DEFAULT_FPS
    scores_name: str | None = "scores.json"
    metadata: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._created_dirs: list[Path] = []
        self._stage: Path | None = None
        self._lock: FileLock | None = None
        self._records: list[dict[str, Any]] = []
        self._resumed: list[dict[str, Any]] = []
        self._journal: Any = None
        self._video: cv2.VideoWriter | None = None
        self._video_tmp: Path | None = None
        self._closed = False
        # File names in ``out_dir`` of an earlier run's frames, removed at commit unless rewritten.
        self.replaced: list[str] = []
        if self.out_dir is not None:
            out = check_output_dir(self.out_dir)
            self._mkdirs(out)
            if self.run is None:
                self._stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
                self._lock = FileLock(self._stage / _LOCK)
                self._lock.acquire()
            else:
                self._open_resumable(out)
            remove_stale_stages(out, keep=self._stage)

    # ------------------------------------------------------------------ resuming
    def _open_resumable(self, out: Path) -> None:
        """Takes the fixed stage of ``out``: resumes its frames when they come from a run with the
        same parameters (``run``), else empties it."""
        stage = out / RESUME_STAGE
        stage.mkdir(exist_ok=True)
        lock = FileLock(stage / _LOCK)
        if not lock.acquire(blocking=False):
            raise OutputPathError(f"{out}: another persam track run is writing into this folder")
        self._stage, self._lock = stage, lock
        try:
            previous = json.loads((stage / _RUN).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict) and previous.get("run") == self.run:
            self._records = self._read_records(stage)
        self._resumed = list(self._records)
        _remove_overlay_part(stage)
        keep = {_LOCK, _RUN, _RECORDS} | {f"{r['name']}.png" for r in self._records}
        for f in stage.iterdir():
            if f.name not in keep:
                f.unlink(missing_ok=True)
        self._save_run(None)
        with open(stage / _RECORDS, "w", encoding="utf-8") as fh:  # without a torn last line
            fh.writelines(json.dumps(r) + "\n" for r in self._records)
        self._journal = open(stage / _RECORDS, "a", encoding="utf-8")  # noqa: SIM115 - closed at commit

    @staticmethod
    def _read_records(stage: Path) -> list[dict[str, Any]]:
        """The records of the frames committed to ``stage``, in order, up to the first gap."""
        records = []
        try:
            lines = (stage / _RECORDS).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                break  # the line being written when the run was killed
            if not isinstance(rec, dict) or not (stage / f"{rec.get('name')}.png").is_file():
                break
            records.append(rec)
        return records

    def _save_run(self, overlay_part: Path | None) -> None:
        doc = {"run": self.run, "overlay_part": None if overlay_part is None else str(overlay_part)}
        tmp = self._stage / f"{_RUN}.tmp"  # type: ignore[operator]
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, self._stage / _RUN)  # type: ignore[operator]

    @property
    def records(self) -> list[dict[str, Any]]:
        """The scores records of every frame written (resumed ones first)."""
        return list(self._records)

    def forget_resumed(self) -> None:
        """Drops the resumed frames: the run starts from its first frame after all."""
        if not self._resumed:
            return
        for r in self._resumed:
            (self._stage / f"{r['name']}.png").unlink(missing_ok=True)  # type: ignore[operator]
        self._resumed, self._records = [], []
        if self._journal is not None:
            self._journal.truncate(0)

    @property
    def resumed(self) -> list[dict[str, Any]]:
        """The records of the frames an earlier, killed run with the same parameters committed."""
        return list(self._resumed)

    def resumed_label_map(self, name: str) -> np.ndarray:
        """The label map of a resumed frame."""
        with Image.open(self._stage / f"{name}.png") as im:  # type: ignore[operator]
            return np.asarray(im).copy()

    def write_overlay_frame(self, frame: np.ndarray, label_map: np.ndarray) -> None:
        """Adds a frame to the overlay video only (a resumed frame: its label map exists)."""
        if self.overlay is None:
            return
        if self._video is None:
            self._open_video(label_map.shape[:2])
        bgr = cv2.cvtColor(overlay_labels(frame, label_map, self.palette), cv2.COLOR_RGB2BGR)
        self._video.write(bgr)  # type: ignore[union-attr]

    def _mkdirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        path.mkdir(parents=True, exist_ok=True)
        self._created_dirs.extend(missing)  # deepest first

    def __enter__(self) -> LabelMapWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        elif exc_type is KeyboardInterrupt and self._journal is not None:
            self.suspend()
        else:
            self.abort()

    def _open_video(self, size: tuple[int, int]) -> None:
        dst = Path(self.overlay)  # type: ignore[arg-type]
        self._mkdirs(check_output_dir(dst.parent))
        # Not mkstemp: the final video gets ordinary file permissions, not 0600.
        self._video_tmp = create_temp_beside(dst)
        if self._journal is not None:  # a killed run's next run must find and remove it
            self._save_run(self._video_tmp)
        codec = {".avi": "MJPG", ".webm": "VP80"}.get(dst.suffix.lower(), "mp4v")
        fourcc = cv2.VideoWriter_fourcc(*codec)
        self._video = cv2.VideoWriter(str(self._video_tmp), fourcc, float(self.fps), (size[1], size[0]))
        if not self._video.isOpened():
            raise InputError(f"{dst}: cannot write a video here (OpenCV has no encoder for {dst.suffix})")

    def write(
        self,
        name: str,
        masks: Masks | np.ndarray,
        frame: np.ndarray | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Adds one frame: its label PNG ``<name>.png``, its overlay frame and its scores record.

        Args:
            masks: the frame's objects, as :class:`~persam.results.Masks` or a uint8 ``[H, W]``
                label map (0 background, else object ids).
            frame: ``uint8 [H, W, 3]`` RGB, needed for the overlay video.
        """
        label_map = masks.label_map() if isinstance(masks, Masks) else np.asarray(masks)
        if self._stage is not None:
            dst = self._stage / f"{name}.png"
            tmp = dst.with_name(f".{dst.name}.part")
            save_label_png(tmp, label_map, self.palette)
            os.replace(tmp, dst)  # whole or absent: a killed run's frames are all readable
        if self.overlay is not None:
            if frame is None:
                raise ValueError("an overlay video needs the frames")
            self.write_overlay_frame(frame, label_map)
        if record is None and self._journal is None:
            return
        record = dict(record if record is not None else {}, name=name)
        self._records.append(record)
        if self._journal is not None:
            self._journal.write(json.dumps(record) + "\n")
            self._journal.flush()

    def commit(self) -> None:
        """Finishes the overlay video and moves every staged file to its destination."""
        if self._closed:
            return
        try:
            if self._video is not None:
                self._video.release()
                self._video = None
                os.replace(self._video_tmp, Path(self.overlay))  # type: ignore[arg-type]
                self._video_tmp = None
            if self._stage is not None:
                out = Path(self.out_dir)  # type: ignore[arg-type]
                self._close_journal()
                for f in (_RUN, _RECORDS):
                    (self._stage / f).unlink(missing_ok=True)
                if self.scores_name is not None:
                    doc = dict(self.metadata)
                    doc["frames"] = self._records
                    (self._stage / self.scores_name).write_text(json.dumps(doc, indent=1), encoding="utf-8")
                # The scores file goes last: a folder holding it is a finished run.
                files = [f for f in self._stage.iterdir() if f.name != _LOCK]
                new = {f.name for f in files}
                for name in self.replaced:  # frames of the earlier run this one replaces
                    if name not in new and name != self.scores_name:
                        (out / name).unlink(missing_ok=True)
                for f in sorted(files, key=lambda f: (f.name == self.scores_name, f.name)):
                    os.replace(f, out / f.name)
                self._remove_stage()
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def suspend(self) -> None:
        """Stops without committing but keeps the frames done so far, for the next run to resume
        (the overlay video is dropped: it is rebuilt from the label maps)."""
        if self._closed:
            return
        self._closed = True
        self._close_journal()
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._video_tmp is not None:
            self._video_tmp.unlink(missing_ok=True)
            self._video_tmp = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _remove_stage(self) -> None:
        self._close_journal()
        shutil.rmtree(self._stage, ignore_errors=True)  # type: ignore[arg-type]
        self._stage = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def abort(self) -> None:
        """Removes everything this writer created."""
        if self._closed:
            return
        self._closed = True
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._video_tmp is not None:
            self._video_tmp.unlink(missing_ok=True)
            self._video_tmp = None
        if self._stage is not None:
            self._remove_stage()
        for d in self._created_dirs:  # deepest first; only folders this run made, and only if empty
            try:
                d.rmdir()
            except OSError:
                pass
