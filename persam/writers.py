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
from persam.io import InputError, PathLike, check_output_dir, create_temp_beside
from persam.readers.davis import DAVIS_PALETTE
from persam.readers.video import DEFAULT_FPS
from persam.results import Masks


def save_label_png(path: PathLike, label_map: np.ndarray, palette: list[int]) -> None:
    """Writes ``label_map`` (uint8 ``[H, W]``, object ids) as a palette PNG (DAVIS format)."""
    lm = np.ascontiguousarray(label_map, dtype=np.uint8)
    im = Image.frombytes("P", (lm.shape[1], lm.shape[0]), lm.tobytes())
    im.putpalette(palette)
    im.save(path, format="PNG")


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

    def __post_init__(self) -> None:
        self._created_dirs: list[Path] = []
        self._stage: Path | None = None
        self._records: list[dict[str, Any]] = []
        self._video: cv2.VideoWriter | None = None
        self._video_tmp: Path | None = None
        self._closed = False
        if self.out_dir is not None:
            out = check_output_dir(self.out_dir)
            self._mkdirs(out)
            self._stage = Path(tempfile.mkdtemp(prefix=".persam-track-", dir=out))

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
        else:
            self.abort()

    def _open_video(self, size: tuple[int, int]) -> None:
        dst = Path(self.overlay)  # type: ignore[arg-type]
        self._mkdirs(check_output_dir(dst.parent))
        # Not mkstemp: the final video gets ordinary file permissions, not 0600.
        self._video_tmp = create_temp_beside(dst)
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
            save_label_png(self._stage / f"{name}.png", label_map, self.palette)
        if self.overlay is not None:
            if frame is None:
                raise ValueError("an overlay video needs the frames")
            if self._video is None:
                self._open_video(label_map.shape[:2])
            bgr = cv2.cvtColor(overlay_labels(frame, label_map, self.palette), cv2.COLOR_RGB2BGR)
            self._video.write(bgr)  # type: ignore[union-attr]
        if record is not None:
            self._records.append(record)

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
                if self.scores_name is not None:
                    doc = dict(self.metadata)
                    doc["frames"] = self._records
                    (self._stage / self.scores_name).write_text(json.dumps(doc, indent=1), encoding="utf-8")
                # The scores file goes last: a folder holding it is a finished run.
                for f in sorted(self._stage.iterdir(), key=lambda f: (f.name == self.scores_name, f.name)):
                    os.replace(f, out / f.name)
                self._stage.rmdir()
                self._stage = None
        except BaseException:
            self.abort()
            raise
        self._closed = True

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
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        for d in self._created_dirs:  # deepest first; only folders this run made, and only if empty
            try:
                d.rmdir()
            except OSError:
                pass
