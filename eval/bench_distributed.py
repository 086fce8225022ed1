"""Image-set throughput of ``--engine local`` against ``--engine ray`` with 1 and 2 actors.

    python eval/bench_distributed.py --images 40
    python eval/bench_distributed.py --images 240 --rounds 3 --model mobile_sam_vit_t --cpus 2

Generates ``--images`` small random photos (``--size``, default 160x120) with a red disc, learns a
PerSAM concept on the first with a real-size model of random weights (default MobileSAM, the
encoder still runs at 1024x1024 whatever the photo size) and segments them, writing masks and
overlays, with the local engine (all torch threads) and on one local Ray cluster (``--cpus`` CPUs)
with 1 and 2 actors. The photos are split into ``--rounds`` chunks and the engines take turns on
each chunk, so that a change of machine load during the run slows every engine alike.

Per engine it prints the wall time (for Ray: the actors' start-up — process, imports, model build —
included, the cluster's excluded) and the steady-state rate: images per second between the first
and the last mask written in each chunk, i.e. without any start-up. The overhead of Ray on one
machine is the steady-state rate of 2 actors (one torch thread each) against the local engine
(two threads). The cluster's own start-up is reported on its own line.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    ref = mask = None
    for i in range(n):
        img = rng.integers(0, 100, (h, w, 3), dtype=np.uint8)
        m = (yy - rng.integers(h // 4, 3 * h // 4)) ** 2 + (xx - rng.integers(w // 4, 3 * w // 4)) ** 2 < (
            h // 6
        ) ** 2
        img[m] = (220, 40, 40)
        Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=90)
        if i == 0:
            ref, mask = img, m
    return ref, mask


def steady_rate(out_dir: Path) -> tuple[int, float]:
    """(masks written, seconds between the first and the last mask's modification times)."""
    times = sorted(p.stat().st_mtime for p in (out_dir / "masks").glob("*.png"))
    return len(times), (times[-1] - times[0]) if len(times) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="chunks the engines take turns on (default 2)")
    parser.add_argument("--size", default="160x120", help="photo size WxH (default 160x120)")
    parser.add_argument("--model", default="mobile_sam_vit_t")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import ray
    import torch

    import persam
    from persam.distributed import segment_dataset
    from persam.pipelines.image_set import segment_image_set

    w, h = (int(v) for v in args.size.lower().split("x"))
    print(
        f"CPU: {cpu_name()} ({torch.get_num_threads()} torch threads); {args.images} images {w}x{h} in "
        f"{args.rounds} rounds; model {args.model} (random weights); load average {os.getloadavg()}"
    )
    engines = ["local", *(f"ray, {n} actor(s)" for n in args.actors)]
    wall = dict.fromkeys(engines, 0.0)
    steady = {e: [0, 0.0] for e in engines}  # (intervals between masks, seconds)
    done = dict.fromkeys(engines, 0)
    with tempfile.TemporaryDirectory(prefix="persam-bench-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        ref, mask = make_photos(photos, args.images, (w, h))
        files = sorted(photos.iterdir())
        model = persam.build_model(args.model, checkpoint="none")
        concept = persam.learn(model, ref, mask, method="persam", name="disc")

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, object_store_memory=300 * 1024**2, include_dashboard=False)
        startup = time.perf_counter() - t0
        try:
            for r in range(args.rounds):
                chunk = files[r :: args.rounds]
                for k, engine in enumerate(engines):
                    out = Path(tmp) / f"r{r}-e{k}"
                    t0 = time.perf_counter()
                    if engine == "local":
                        s = segment_image_set(concept, chunk, out, progress=False)
                    else:
                        s = segment_dataset(
                            concept,
                            [str(f) for f in chunk],
                            out,
                            model=args.model,
                            checkpoint="none",
                            device="cpu",
                            actors=args.actors[k - 1],
                            progress=False,
                        )
                    wall[engine] += time.perf_counter() - t0
                    done[engine] += len(s.segmented)
                    n, sec = steady_rate(out)
                    steady[engine][0] += max(n - 1, 0)
                    steady[engine][1] += sec
                    sec_all = time.perf_counter() - t0
                    print(f"round {r + 1}: {engine:<18} {len(s.segmented)} images, {sec_all:.1f} s")
        finally:
            ray.shutdown()
    print(f"Ray local cluster start-up ({args.cpus} CPUs): {startup:.1f} s; load average {os.getloadavg()}")
    print(f"{'engine':<20}{'images':>8}{'wall s':>10}{'images/s':>10}{'steady images/s':>18}")
    rates = {e: steady[e][0] / max(steady[e][1], 1e-9) for e in engines}
    for e in engines:
        print(f"{e:<20}{done[e]:>8}{wall[e]:>10.1f}{done[e] / wall[e]:>10.2f}{rates[e]:>18.3f}")
    for e in engines[1:]:
        print(f"{e}: steady-state rate {rates[e] / rates['local']:.2f}x the local engine's")


if __name__ == "__main__":
    main()
