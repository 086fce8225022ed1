"""Speed of the DAVIS evaluation: parallel workers vs. in-process, and vs. a plain full-frame loop.

Runs on the DAVIS fixture (a 4-sequence mini DAVIS with six result sets) and prints wall times:

* ``full-frame loop``: a straightforward single-process evaluation that computes every boundary map
  and disk dilation on the whole 854x480 frame (how the benchmark code does it);
* ``persam workers=1``: :func:`persam.evaluation.evaluate_davis` in this process (F on object crops);
* ``persam workers=N``: the same with N spawned worker processes, one sequence per task.

All three must give the same global numbers (checked). ``--copies K`` lists every fixture sequence K
times (symlinked under new names) to show how the parallel evaluation scales past the process start-up
cost.

    python eval/bench_davis_eval.py --workers 2 --copies 1 4

Each parallel call pays the start-up of its worker processes (printed first), so on the small fixture
and on a busy machine the in-process run can be the faster one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from persam.evaluation.davis import GLOBAL_COLUMNS, evaluate_davis, read_sequence_list
from persam.evaluation.metrics import boundary_map, boundary_tolerance, disk_kernel, sequence_statistics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURE = Path(os.environ.get("PERSAM_SHARED", ROOT.parent / "shared")) / "fixtures" / "davis"
METHODS = ("perfect", "dilated", "eroded_shifted", "dropped", "swapped", "noisy")


def _f_full_frame(gt: np.ndarray, pred: np.ndarray) -> float:
    from skimage.morphology import disk  # here, so that spawned workers do not import it

    se = disk(boundary_tolerance(*gt.shape)).astype(np.uint8)
    gb, pb = boundary_map(gt), boundary_map(pred)
    n_g, n_p = int(gb.sum()), int(pb.sum())
    if n_g == 0 and n_p == 0:
        return 1.0
    if n_g == 0 or n_p == 0:
        return 0.0
    precision = float((pb * cv2.dilate(gb.astype(np.uint8), se)).sum()) / n_p
    recall = float((gb * cv2.dilate(pb.astype(np.uint8), se)).sum()) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def full_frame_loop(davis_root: Path, results: Path) -> dict[str, float]:
    """Single-process evaluation without any shortcut; returns the global numbers."""
    stats: dict[str, list[float]] = {k: [] for k in ("JM", "JR", "JD", "FM", "FR", "FD")}
    for seq in read_sequence_list(davis_root, "val"):
        gt_paths = sorted((davis_root / "Annotations" / "480p" / seq).glob("*.png"))
        gt = np.stack([np.array(Image.open(p)) for p in gt_paths]).astype(np.int64)
        gt[gt == 255] = 0
        n_obj = int(gt[0].max())
        labels = gt[1:-1]
        pred = np.stack([np.array(Image.open(results / seq / p.name)) for p in gt_paths[1:-1]])
        for k in range(1, n_obj + 1):
            j = np.zeros(len(pred))
            f = np.zeros(len(pred))
            for t in range(len(pred)):
                g, p = labels[t] == k, pred[t] == k
                union = int((g | p).sum())
                j[t] = 1.0 if union == 0 else int((g & p).sum()) / union
                f[t] = _f_full_frame(g, p)
            for name, series in (("J", j), ("F", f)):
                m, r, d = sequence_statistics(series)
                stats[f"{name}M"].append(m)
                stats[f"{name}R"].append(r)
                stats[f"{name}D"].append(d)
    jm, fm = np.mean(stats["JM"]), np.mean(stats["FM"])
    values = [(jm + fm) / 2, jm, np.mean(stats["JR"]), np.mean(stats["JD"]), fm]
    values += [np.mean(stats["FR"]), np.mean(stats["FD"])]
    return dict(zip(GLOBAL_COLUMNS, (float(v) for v in values), strict=True))


def replicated_fixture(fixture: Path, copies: int, tmp: Path) -> tuple[Path, Path]:
    """A DAVIS root and results folder listing every fixture sequence ``copies`` times (symlinks)."""
    if copies == 1:
        return fixture / "DAVIS", fixture / "results"
    src = fixture / "DAVIS"
    root, res = tmp / f"x{copies}" / "DAVIS", tmp / f"x{copies}" / "results"
    names = []
    for seq in read_sequence_list(src, "val"):
        for c in range(copies):
            name = f"{seq}-{c}"
            names.append(name)
            for sub in ("Annotations/480p", "JPEGImages/480p"):
                (root / sub).mkdir(parents=True, exist_ok=True)
                (root / sub / name).symlink_to(src / sub / seq)
            for method in METHODS:
                (res / method).mkdir(parents=True, exist_ok=True)
                (res / method / name).symlink_to(fixture / "results" / method / seq)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root, res


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def pool_startup(workers: int) -> float:
    """Seconds to start ``workers`` spawned processes that import the evaluation code, do nothing."""
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(disk_kernel, [1.0] * workers))
    return time.perf_counter() - t0


def _global(root: Path, results: Path, workers: int) -> dict[str, float]:
    return evaluate_davis(root, results, workers=workers).global_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE, help="DAVIS fixture folder")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the parallel run")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4], help="sequence list multipliers")
    parser.add_argument("--skip-full-frame", action="store_true", help="do not time the full-frame loop")
    args = parser.parse_args()
    if not (args.fixture / "DAVIS").is_dir():
        raise SystemExit(f"{args.fixture}: DAVIS fixture not found")

    parallel = f"persam workers={args.workers}"
    print(f"CPUs: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    print(f"start-up of a {args.workers}-process spawn pool (fixed cost per parallel call): ", end="")
    print(f"{pool_startup(args.workers):.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for copies in args.copies:
            root, res = replicated_fixture(args.fixture, copies, Path(tmp))
            n_seq = len(read_sequence_list(root, "val"))
            totals = {"persam workers=1": 0.0, parallel: 0.0}
            if not args.skip_full_frame:
                totals["full-frame loop"] = 0.0
            for method in METHODS:
                t1, r1 = _timed(_global, root, res / method, 1)
                tn, rn = _timed(_global, root, res / method, args.workers)
                assert r1 == rn, f"{method}: parallel and in-process results differ"
                totals["persam workers=1"] += t1
                totals[parallel] += tn
                if not args.skip_full_frame:
                    tf, rf = _timed(full_frame_loop, root, res / method)
                    assert all(abs(rf[k] - r1[k]) < 1e-12 for k in GLOBAL_COLUMNS), f"{method}: loop differs"
                    totals["full-frame loop"] += tf
            print(f"\n{n_seq} sequences x {len(METHODS)} result sets (copies={copies}), total wall time:")
            base = totals["persam workers=1"]
            for name, t in totals.items():
                print(f"  {name:22s} {t:7.2f} s   ({base / t:4.2f}x the speed of workers=1)")


if __name__ == "__main__":
    main()
