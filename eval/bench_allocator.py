"""The command line with and without :func:`persam.tune_cpu_allocator`: wall time, kernel (system)
time and peak resident memory of whole ``persam`` runs, one fresh process each.

    python eval/bench_allocator.py --rounds 3
    python eval/bench_allocator.py --rounds 3 --scenarios everything

The two settings take turns (``PERSAM_MALLOC=system`` leaves glibc's allocator as it is), so a
busy machine slows both alike; medians over ``--rounds``. Inputs are made here (synthetic photos),
models are random (``--checkpoint none``): the allocator sees the same tensors as with real weights.

Scenarios:
  everything  ``persam everything`` on one 640x480 photo, tiny random MobileSAM (its mask decoder
              is MobileSAM's and SAM's own: 256 channels over 64x64 tokens), 16x16 points in
              batches of 64: the decoder dominates.
  segment     ``persam segment`` of 3 photos with the real-size MobileSAM: the encoder dominates.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SETTINGS = {"tuned": None, "system": "system"}
SCENARIOS = ("everything", "segment")


def _photos(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:480, :640]
    paths = []
    for i in range(n):
        image = np.full((480, 640, 3), 60 + 20 * i, np.uint8)
        for _ in range(6):
            cy, cx, r = rng.integers(60, 420), rng.integers(60, 580), rng.integers(20, 90)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 256, 3)
        paths.append(folder / f"photo_{i}.png")
        Image.fromarray(image).save(paths[-1])
    mask = np.zeros((480, 640), np.uint8)
    mask[(yy - 240) ** 2 + (xx - 320) ** 2 < 80**2] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return paths


def _command(scenario: str, folder: Path, photos: list[Path], out: Path) -> list[str]:
    common = ["--checkpoint", "none", "--device", "cpu", "--dtype", "float32", "-q", "-o", str(out)]
    if scenario == "everything":
        return ["everything", str(photos[0]), "--model", "tiny_random_mobile_sam", "--points-per-side", "16",
                "--points-per-batch", "64", *common]  # fmt: skip
    return ["segment", "--ref", str(photos[0]), "--ref-mask", str(folder / "mask.png"), *map(str, photos),
            "--model", "mobile_sam_vit_t", *common]  # fmt: skip


def _run(argv: list[str], setting: str | None) -> tuple[float, float, float]:
    """(wall s, system s, peak RSS MiB) of one ``persam`` process."""
    env = {k: v for k, v in os.environ.items() if k != "PERSAM_MALLOC"}
    if setting is not None:
        env["PERSAM_MALLOC"] = setting
    script = (
        "import resource, sys\n"
        "from persam.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "u = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(u.ru_stime, u.ru_maxrss / 1024, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"persam {argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    system, rss = (float(v) for v in done.stderr.strip().splitlines()[-1].split())
    return wall, system, rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--scenarios", nargs="+", default=["everything", "segment"], choices=["everything", "segment"]
    )
    args = ap.parse_args(argv)
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="persam-bench-alloc-") as tmp:
        folder = Path(tmp)
        photos = _photos(folder, 3)
        rows = []
        for scenario in args.scenarios:
            results: dict[str, list[tuple[float, float, float]]] = {s: [] for s in SETTINGS}
            for r in range(args.rounds):
                for name, value in SETTINGS.items():
                    out = folder / f"out_{scenario}_{name}_{r}"
                    results[name].append(_run(_command(scenario, folder, photos, out), value))
                    wall, system, rss = results[name][-1]
                    print(f"  {scenario} round {r + 1} {name:6}: {wall:7.1f} s, system {system:6.1f} s, "
                          f"peak {rss:6.0f} MiB", flush=True)  # fmt: skip
            med = {s: [statistics.median(v[i] for v in results[s]) for i in range(3)] for s in SETTINGS}
            rows.append((scenario, med))
    print()
    print(f"{'scenario':11} {'setting':7} {'wall s':>8} {'system s':>9} {'peak MiB':>9} {'speed-up':>9}")
    for scenario, med in rows:
        for s in SETTINGS:
            wall, system, rss = med[s]
            print(f"{scenario:11} {s:7} {wall:8.1f} {system:9.1f} {rss:9.0f} {med['system'][0] / wall:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
