"""DAVIS 2017 evaluation results (per object, per sequence, global) and their reports: the
benchmark's CSV files and human-readable tables."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persam.io import atomic_path

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
PER_OBJECT_COLUMNS = ("Sequence", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")

PathLike = str | os.PathLike


@dataclass
class DavisObjectResult:
    """Measures of one object of one sequence."""

    sequence: str
    object_id: int  # 1-based
    J: np.ndarray  # [T] region similarity per evaluated frame
    F: np.ndarray  # [T] boundary F-measure per evaluated frame
    J_mean: float
    J_recall: float
    J_decay: float
    F_mean: float
    F_recall: float
    F_decay: float

    @property
    def name(self) -> str:
        """``<sequence>_<id>``, the row name of the benchmark's per-sequence table."""
        return f"{self.sequence}_{self.object_id}"

    def statistics(self) -> dict[str, float]:
        return {
            "J-Mean": self.J_mean,
            "J-Recall": self.J_recall,
            "J-Decay": self.J_decay,
            "F-Mean": self.F_mean,
            "F-Recall": self.F_recall,
            "F-Decay": self.F_decay,
        }


@dataclass
class DavisSequenceResult:
    """Measures of one sequence: one :class:`DavisObjectResult` per object id ``1..K``."""

    name: str
    frame_ids: list[str]  # evaluated frames (all annotated frames but the first and the last)
    n_annotation_frames: int
    height: int
    width: int
    bound_pix: float  # boundary matching radius used by F
    n_gt_objects: int
    n_pred_objects_read: int  # largest id found in the evaluated prediction frames
    objects: list[DavisObjectResult] = field(default_factory=list)


@dataclass
class DavisResult:
    """Result of :func:`evaluate_davis`."""

    davis_root: Path
    results_path: Path
    gt_set: str
    sequences: list[DavisSequenceResult]

    @property
    def objects(self) -> list[DavisObjectResult]:
        """All objects, in sequence-list order then by id."""
        return [o for s in self.sequences for o in s.objects]

    @property
    def global_results(self) -> dict[str, float]:
        """The seven global numbers (NaN when no sequence has objects)."""
        objs = self.objects
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mean of no objects is NaN
            j = [np.mean([o.J_mean for o in objs]), np.mean([o.J_recall for o in objs])]
            j.append(np.mean([o.J_decay for o in objs]))
            f = [np.mean([o.F_mean for o in objs]), np.mean([o.F_recall for o in objs])]
            f.append(np.mean([o.F_decay for o in objs]))
        values = [(j[0] + f[0]) / 2.0, *j, *f]
        return dict(zip(GLOBAL_COLUMNS, (float(v) for v in values), strict=True))


# ---------------------------------------------------------------------------------------------------
# Writing


def _fmt(value: float, precision: int | None) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""  # as pandas writes NaN
    if precision is None:
        return repr(float(value))
    return f"{value:.{precision}f}"


def _write_csv(path: PathLike, header: Iterable[str], rows: Iterable[Iterable[str]]) -> Path:
    dst = Path(path)
    with atomic_path(dst) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(list(header))
            writer.writerows([list(r) for r in rows])
    return dst


def write_global_csv(result: DavisResult, path: PathLike, precision: int | None = 3) -> Path:
    """``J&F-Mean,J-Mean,...,F-Decay`` and one row; ``precision`` decimals (``None``: full precision)."""
    g = result.global_results
    return _write_csv(path, GLOBAL_COLUMNS, [[_fmt(g[c], precision) for c in GLOBAL_COLUMNS]])


def write_per_sequence_csv(result: DavisResult, path: PathLike, precision: int | None = 3) -> Path:
    """``Sequence,J-Mean,F-Mean``, one row per object named ``<seq>_<id>``."""
    rows = [[o.name, _fmt(o.J_mean, precision), _fmt(o.F_mean, precision)] for o in result.objects]
    return _write_csv(path, PER_SEQUENCE_COLUMNS, rows)


def write_per_object_statistics_csv(
    result: DavisResult, path: PathLike, precision: int | None = None
) -> Path:
    """``Sequence`` and the six statistics of every object."""
    rows = []
    for o in result.objects:
        stats = o.statistics()
        rows.append([o.name, *(_fmt(stats[c], precision) for c in PER_OBJECT_COLUMNS[1:])])
    return _write_csv(path, PER_OBJECT_COLUMNS, rows)


def save_official_csvs(result: DavisResult, output_dir: PathLike) -> list[Path]:
    """Writes ``global_results-<set>.csv`` and ``per-sequence_results-<set>.csv`` (3 decimals), as the
    benchmark script does."""
    out = Path(output_dir)
    return [
        write_global_csv(result, out / f"global_results-{result.gt_set}.csv", 3),
        write_per_sequence_csv(result, out / f"per-sequence_results-{result.gt_set}.csv", 3),
    ]


def save_full_precision_csvs(result: DavisResult, output_dir: PathLike) -> list[Path]:
    """Writes ``global_results.csv``, ``per-sequence_results.csv`` and ``per-object_statistics.csv``
    with every float as its shortest round-tripping repr."""
    out = Path(output_dir)
    return [
        write_global_csv(result, out / "global_results.csv", None),
        write_per_sequence_csv(result, out / "per-sequence_results.csv", None),
        write_per_object_statistics_csv(result, out / "per-object_statistics.csv", None),
    ]


def format_tables(result: DavisResult) -> str:
    """Human-readable global and per-object tables (6 decimals)."""
    g = result.global_results
    lines = [f"--------------------------- Global results for {result.gt_set} ---------------------------"]
    widths = [max(len(c), 9) for c in GLOBAL_COLUMNS]
    lines.append(" ".join(c.rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths, strict=True)))
    lines.append(" ".join(f"{g[c]:.6f}".rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths, strict=True)))
    lines.append("")
    lines.append(f"---------- Per sequence results for {result.gt_set} ----------")
    objs = result.objects
    name_w = max([len("Sequence"), *(len(o.name) for o in objs)])
    lines.append(f"{'Sequence'.rjust(name_w)}   J-Mean   F-Mean")
    for o in objs:
        lines.append(f"{o.name.rjust(name_w)} {o.J_mean:8.6f} {o.F_mean:8.6f}")
    return "\n".join(lines)
