"""Image-set throughput of ``--engine local`` against ``--engine ray`` with 1 and 2 actors.

    python eval/bench_distributed.py --images 40
    python eval/bench_distributed.py --images 300 --model mobile_sam_vit_t --cpus 2

Generates ``--images`` small random photos (``--size``, default 160x120) with a red disc, learns a
PerSAM concept on the first with a real-size model of random weights (default MobileSAM, the
encoder still runs at 1024x1024 whatever the photo size) and segments all of them, writing masks
and overlays, with the local engine (all torch threads) and on one local Ray cluster
(``--cpus`` CPUs) with 1 and 2 actors. The cluster's start-up is reported on its own line; each Ray
row's wall time includes its actors' start-up (process, imports, model build) and excludes the
cluster's. A busy machine (check ``uptime``) slows every row alike; compare rows of one run.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
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
        f"CPU: {cpu_name()} ({torch.get_num_threads()} torch threads); {args.images} images {w}x{h}; "
        f"model {args.model} (random weights)"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="persam-bench-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        ref, mask = make_photos(photos, args.images, (w, h))
        model = persam.build_model(args.model, checkpoint="none")
        concept = persam.learn(model, ref, mask, method="persam", name="disc")

        t0 = time.perf_counter()
        s = segment_image_set(concept, photos, Path(tmp) / "local", progress=False)
        rows.append(("local", time.perf_counter() - t0, len(s.segmented)))

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, object_store_memory=300 * 1024**2, include_dashboard=False)
        startup = time.perf_counter() - t0
        try:
            for n in args.actors:
                t0 = time.perf_counter()
                s = segment_dataset(
                    concept,
                    photos,
                    Path(tmp) / f"ray{n}",
                    model=args.model,
                    checkpoint="none",
                    device="cpu",
                    actors=n,
                    progress=False,
                )
                rows.append((f"ray, {n} actor(s)", time.perf_counter() - t0, len(s.segmented)))
        finally:
            ray.shutdown()
    print(f"Ray local cluster start-up ({args.cpus} CPUs): {startup:.1f} s")
    print(f"{'engine':<20}{'images':>8}{'wall s':>10}{'images/s':>10}")
    for name, sec, n in rows:
        print(f"{name:<20}{n:>8}{sec:>10.1f}{n / sec:>10.2f}")


if __name__ == "__main__":
    main()
