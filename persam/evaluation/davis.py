"""DAVIS 2017 semi-supervised evaluation (J, F, J&F) with per-sequence parallelism.

Numbers are those of the DAVIS 2017 benchmark code on valid input:

* The first and the last annotated frame of every sequence are not evaluated; prediction files for
  them are never opened.
* The objects of a sequence are ids ``1 .. K`` with ``K`` the largest id in the first ground-truth
  frame (void 255 counts as background); ids below ``K`` that are absent from frame 0 are evaluated,
  larger ids that appear later are ignored. A prediction that lacks an object scores J = F = 0 where
  the object is present (and 1 where it is absent too).
* Only label values matter (palettes are ignored); void (255) in the ground truth is background.
* Per object: J and F per evaluated frame, then Mean / Recall / Decay
  (:func:`persam.evaluation.metrics.sequence_statistics`). Global numbers are plain means over all
  objects of all sequences; ``J&F-Mean = (J-Mean + F-Mean) / 2``. With no object at all (every
  sequence's first frame empty) they are NaN, as in the benchmark.
* Decay uses the benchmark's ``uint8`` bin edges, which wrap for more than 256 evaluated frames (the
  decay is then usually NaN); this is kept so that numbers stay comparable.

Where the benchmark code exits silently with status 0, crashes with an unrelated exception or
reads past the data, :func:`evaluate_davis` raises :class:`DavisEvaluationError` naming the sequence
and file instead:

* a prediction id larger than the sequence's object count (including 255) or any id in a sequence
  without objects;
* a missing, unreadable or RGB prediction PNG, or one whose size differs from the ground truth;
* a sequence with fewer than three annotated frames (nothing left to evaluate), with no JPEG frames,
  or with more JPEG frames than annotations; a missing sequence folder or sequence list.

The benchmark also caches its CSVs in the results folder and re-reads them on later runs; this module
always recomputes. A sequence list with blank lines is accepted (they are skipped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from persam.evaluation.davis_results import (
    GLOBAL_COLUMNS,
    PER_OBJECT_COLUMNS,
    PER_SEQUENCE_COLUMNS,
    DavisObjectResult,
    DavisResult,
    DavisSequenceResult,
    format_tables,
    save_full_precision_csvs,
    save_official_csvs,
    write_global_csv,
    write_per_object_statistics_csv,
    write_per_sequence_csv,
)
from persam.evaluation.metrics import (
    DEFAULT_BOUND_TH,
    boundary_f,
    boundary_tolerance,
    jaccard_from_counts,
    sequence_statistics,
)
from persam.io import InputError

# Results and their CSV reports live in persam.evaluation.davis_results; they are re-exported here.
__all__ = [
    "GLOBAL_COLUMNS",
    "PER_OBJECT_COLUMNS",
    "PER_SEQUENCE_COLUMNS",
    "DavisEvaluationError",
    "DavisObjectResult",
    "DavisResult",
    "DavisSequenceResult",
    "evaluate_davis",
    "evaluate_sequence",
    "format_tables",
    "read_sequence_list",
    "save_full_precision_csvs",
    "save_official_csvs",
    "write_global_csv",
    "write_per_object_statistics_csv",
    "write_per_sequence_csv",
]

# Pillow modes that hold one integer label per pixel.
_LABEL_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")

PathLike = str | os.PathLike


class DavisEvaluationError(InputError):
    """Invalid DAVIS ground truth or results; the one-line message names the sequence and file."""


@dataclass
class _SequenceTask:
    """Everything a worker needs to evaluate one sequence (picklable)."""

    name: str
    gt_paths: list[Path]
    pred_dir: Path
    bound_th: float


# ---------------------------------------------------------------------------------------------------
# Reading


def _read_labels(path: Path, sequence: str, kind: str) -> np.ndarray:
    """A label PNG as an integer ``[H, W]`` array (palette indices or gray values)."""
    if not path.is_file():
        what = "prediction" if kind == "prediction" else "annotation"
        if kind == "prediction" and not path.parent.is_dir():
            raise DavisEvaluationError(
                f"{sequence}: prediction frame {path.stem} not found (there is no folder {path.parent}; "
                "to score only some sequences, name them with --sequences)"
            )
        raise DavisEvaluationError(f"{sequence}: {what} frame {path.stem} not found ({path})")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            a = np.array(im)
    except UnidentifiedImageError:
        raise DavisEvaluationError(f"{sequence}: {kind} {path} is not a readable image file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DavisEvaluationError(
            f"{sequence}: cannot read {kind} {path} ({type(e).__name__}: {e})"
        ) from None
    if mode not in _LABEL_MODES:
        raise DavisEvaluationError(
            f"{sequence}: {kind} {path} is a {mode} image; expected an indexed (palette) or single-channel "
            "PNG holding object ids"
        )
    if a.dtype == bool:
        a = a.astype(np.uint8)
    return a


def _check_shape(a: np.ndarray, expected: tuple[int, ...], path: Path, sequence: str, kind: str) -> None:
    if a.shape != expected:
        raise DavisEvaluationError(
            f"{sequence}: {kind} {path} is {a.shape[1]}×{a.shape[0]} (W×H) but the first annotation "
            f"frame is {expected[1]}×{expected[0]}"
        )


def evaluate_sequence(task: _SequenceTask) -> DavisSequenceResult:
    """J and F of every object of one sequence over its evaluated frames (runs in a worker process)."""
    seq = task.name
    gt0 = _read_labels(task.gt_paths[0], seq, "annotation")
    shape = gt0.shape
    n_objects = int(np.where(gt0 == 255, 0, gt0).max())
    evaluated = task.gt_paths[1:-1]
    frame_ids = [p.stem for p in evaluated]
    n_frames = len(evaluated)
    bound_pix = boundary_tolerance(shape[0], shape[1], task.bound_th)

    j = np.zeros((n_objects, n_frames))
    f = np.zeros((n_objects, n_frames))
    n_pred_read = 0
    for t, (gt_path, fid) in enumerate(zip(evaluated, frame_ids, strict=True)):
        gt = _read_labels(gt_path, seq, "annotation")
        _check_shape(gt, shape, gt_path, seq, "annotation")
        pred_path = task.pred_dir / f"{fid}.png"
        pred = _read_labels(pred_path, seq, "prediction")
        _check_shape(pred, shape, pred_path, seq, "prediction")
        top = int(pred.max())
        if top > n_objects:
            raise DavisEvaluationError(
                f"{seq}: prediction {pred_path} contains object id {top} but the sequence has "
                f"{n_objects} object(s) (largest id in its first annotation frame)"
            )
        n_pred_read = max(n_pred_read, top)
        for k in range(1, n_objects + 1):
            g = gt == k
            p = pred == k
            inter = int(np.count_nonzero(g & p))
            union = int(np.count_nonzero(g)) + int(np.count_nonzero(p)) - inter
            j[k - 1, t] = jaccard_from_counts(inter, union)
            f[k - 1, t] = boundary_f(g, p, task.bound_th)

    objects = []
    for k in range(1, n_objects + 1):
        jm, jr, jd = sequence_statistics(j[k - 1])
        fm, fr, fd = sequence_statistics(f[k - 1])
        objects.append(DavisObjectResult(seq, k, j[k - 1], f[k - 1], jm, jr, jd, fm, fr, fd))
    return DavisSequenceResult(
        name=seq,
        frame_ids=frame_ids,
        n_annotation_frames=len(task.gt_paths),
        height=int(shape[0]),
        width=int(shape[1]),
        bound_pix=bound_pix,
        n_gt_objects=n_objects,
        n_pred_objects_read=n_pred_read,
        objects=objects,
    )


def read_sequence_list(davis_root: PathLike, gt_set: str = "val", year: str = "2017") -> list[str]:
    """Sequence names of ``<davis_root>/ImageSets/<year>/<gt_set>.txt`` in file order (duplicates and
    blank lines dropped)."""
    path = Path(davis_root) / "ImageSets" / year / f"{gt_set}.txt"
    if not path.is_file():
        raise DavisEvaluationError(f"{path}: sequence list for set '{gt_set}' not found")
    names = [line.strip() for line in path.read_text().splitlines()]
    return list(dict.fromkeys(n for n in names if n))


def _sequence_task(
    davis_root: Path, results_path: Path, seq: str, resolution: str, bound_th: float
) -> _SequenceTask:
    ann_dir = davis_root / "Annotations" / resolution / seq
    img_dir = davis_root / "JPEGImages" / resolution / seq
    if not ann_dir.is_dir():
        raise DavisEvaluationError(f"{seq}: annotation folder {ann_dir} not found")
    gt_paths = sorted(p for p in ann_dir.glob("*.png") if p.is_file())
    n_images = len(list(img_dir.glob("*.jpg"))) if img_dir.is_dir() else 0
    if n_images == 0:
        raise DavisEvaluationError(f"{seq}: no .jpg frames in {img_dir}")
    if n_images > len(gt_paths):
        raise DavisEvaluationError(
            f"{seq}: {len(gt_paths)} annotation PNGs in {ann_dir} but {n_images} JPEG frames; "
            "every frame needs an annotation"
        )
    if len(gt_paths) < 3:
        raise DavisEvaluationError(
            f"{seq}: {len(gt_paths)} annotation frame(s) in {ann_dir}; at least 3 are needed because the "
            "first and the last frame are not evaluated"
        )
    return _SequenceTask(seq, gt_paths, results_path / seq, bound_th)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def evaluate_davis(
    davis_root: PathLike,
    results_path: PathLike,
    gt_set: str = "val",
    workers: int | None = None,
    sequences: Sequence[str] | str | None = None,
    resolution: str = "480p",
    bound_th: float = DEFAULT_BOUND_TH,
) -> DavisResult:
    """Evaluates semi-supervised DAVIS 2017 results.

    Args:
        davis_root: dataset root with ``Annotations/<resolution>/<seq>/NNNNN.png``,
            ``JPEGImages/<resolution>/<seq>/*.jpg`` and ``ImageSets/2017/<gt_set>.txt``.
        results_path: folder with ``<seq>/NNNNN.png`` label maps (indexed or 8/16-bit grayscale PNGs
            holding object ids) for every evaluated frame.
        gt_set: name of the sequence list (``val``, ``train``, ...); ignored when ``sequences`` is given.
        workers: processes evaluating sequences in parallel (spawned, so safe on every platform;
            as with any spawned pool, a calling script needs an ``if __name__ == "__main__":``
            guard); ``1`` evaluates in this process; ``None`` uses every available CPU.
        sequences: evaluate these sequences, in this order, instead of the set's list.
        resolution: annotation resolution folder.
        bound_th: boundary tolerance of F, as a fraction of the image diagonal (or pixels if >= 1).

    Returns:
        :class:`DavisResult` with per-frame J / F per object, per-object statistics and global numbers.

    Raises:
        DavisEvaluationError: invalid dataset or results (see the module docstring).
    """
    root = Path(davis_root)
    res = Path(results_path)
    if not root.is_dir():
        raise DavisEvaluationError(f"{root}: DAVIS root folder not found")
    if not (root / "Annotations" / resolution).is_dir():
        raise DavisEvaluationError(f"{root / 'Annotations' / resolution}: annotation folder not found")
    if not res.is_dir():
        raise DavisEvaluationError(f"{res}: results folder not found")
    if sequences is None:
        names = read_sequence_list(root, gt_set)
    else:
        names = list(dict.fromkeys([sequences] if isinstance(sequences, str) else sequences))
    if not names:
        raise DavisEvaluationError(f"no sequences to evaluate (set '{gt_set}' of {root})")
    tasks = [_sequence_task(root, res, s, resolution, bound_th) for s in names]

    n_workers = _default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise DavisEvaluationError(f"workers must be >= 1, got {workers}")
    n_workers = min(n_workers, len(tasks))
    if n_workers == 1:
        results = [evaluate_sequence(t) for t in tasks]
    else:
        results = _evaluate_parallel(tasks, n_workers)
    return DavisResult(davis_root=root, results_path=res, gt_set=gt_set, sequences=results)


def _evaluate_parallel(tasks: list[_SequenceTask], n_workers: int) -> list[DavisSequenceResult]:
    # Longest sequences first keeps the workers busy until the end; results go back to list order.
    order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i].gt_paths))
    out: list[DavisSequenceResult | None] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
        futures = {i: pool.submit(evaluate_sequence, tasks[i]) for i in order}
        try:
            # Collect in list order so that the error of the earliest bad sequence is the one raised.
            for i in range(len(tasks)):
                out[i] = futures[i].result()
        except BaseException:
            for fut in futures.values():
                fut.cancel()
            raise
    return [r for r in out if r is not None]
