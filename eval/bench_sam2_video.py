"""SAM 2 memory tracker: throughput and peak memory against the video length.

    python eval/bench_sam2_video.py                              # 100 / 300 / 1000 frames, both modes
    python eval/bench_sam2_video.py --lengths 100 300 --objects 3 --image-size 1024

A synthetic video of small frames (a few textured blocks moving over a textured background) is
generated frame by frame, never held in memory, and tracked from first-frame masks with a small
random SAM 2.1 model (``tiny_sam2_config``; the masks mean nothing, the work per frame is real).
Two modes per length:

* ``bounded``: :func:`persam.tracking.sam2.track`, each object keeping only what the memory
  attention can still read (conditioning frame, last 6 memories, last 15 pointers);
* ``history``: the same with ``keep_history=True``, every frame's output kept as the official
  predictor does.

Each configuration runs in a fresh subprocess so that its peak memory is its own (resident memory
above the interpreter + model baseline on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA).
Reported: frames per second (wall and process CPU time, after a warm-up frame), peak memory, and
the stored items per object at the end (memories / pointers).

On a busy 2-core CPU (defaults: input 256², 1 object, 1 thread), ~40 ms of CPU per frame at every
length; ``bounded`` peaks at 32 MiB above the baseline for 100, 300 and 1000 frames (7 memories,
16 pointers per object), ``history`` at 31 / 40 / 164 MiB (one memory and pointer per frame).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

HEIGHT, WIDTH = 96, 128


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def synthetic_video(n_frames: int, n_objects: int, seed: int = 0) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """A frame generator and the first frame's label map (ids 1..n_objects)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    blocks = [rng.integers(0, 256, (24, 20, 3), dtype=np.uint8) for _ in range(n_objects)]
    starts = [(10, 10), (60, 90), (35, 50)][:n_objects]
    velocities = [(1, 2), (-1, -1), (2, -1)][:n_objects]

    def boxes(i: int) -> list[tuple[int, int]]:
        out = []
        for (y, x), (vy, vx) in zip(starts, velocities, strict=True):
            # Bounce inside the frame so that every object stays visible.
            y0 = abs((y + vy * i) % (2 * (HEIGHT - 24)) - (HEIGHT - 24))
            x0 = abs((x + vx * i) % (2 * (WIDTH - 20)) - (WIDTH - 20))
            out.append((y0, x0))
        return out

    def frames() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            img = background.copy()
            for (y0, x0), tex in zip(boxes(i), blocks, strict=True):
                img[y0 : y0 + 24, x0 : x0 + 20] = tex
            yield img

    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    for k, (y0, x0) in enumerate(boxes(0)):
        labels[y0 : y0 + 24, x0 : x0 + 20] = k + 1
    return frames(), labels


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from persam.models.sam2 import sam2_from_config, tiny_sam2_config
    from persam.tracking.sam2 import open_session

    torch.set_num_threads(args.threads)
    cfg = tiny_sam2_config()
    cfg["model"]["image_size"] = args.image_size
    torch.manual_seed(0)
    model = sam2_from_config(cfg).eval().to(args.device)
    cuda = args.device.startswith("cuda")
    frames, labels = synthetic_video(args.frames, args.objects)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_peak_mib()
    # What track() does, through the session so that its state can be inspected at the end.
    session = open_session(model, frames, num_frames=args.frames, keep_history=args.mode == "history")
    for k in range(1, args.objects + 1):
        session.add_mask(0, k, labels == k)
    seen = 0
    t_wall = t_cpu = 0.0
    for _, _, logits in session.propagate():
        seen += 1
        if seen == 2:  # the first frame (masks given) and one tracked frame are warm-up
            if cuda:
                torch.cuda.synchronize()
            t_wall, t_cpu = time.perf_counter(), time.process_time()
        del logits
    sizes = session.state_size()
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    n = max(seen - 2, 1)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_peak_mib() - base_rss
    return {
        "frames": seen,
        "fps": n / wall,
        "cpu_ms_per_frame": 1000 * cpu / n,
        "peak_mib": peak,
        "memories_per_object": sizes.get("memories", 0) / args.objects,
        "pointers_per_object": sizes.get("pointers", 0) / args.objects,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000])
    p.add_argument("--modes", nargs="+", default=["bounded", "history"], choices=["bounded", "history"])
    p.add_argument("--objects", type=int, default=1, choices=[1, 2, 3])
    p.add_argument("--image-size", type=int, default=256, help="model input side (1024 for the real models)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="bounded", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return

    print(
        f"SAM 2 tracker, tiny random model, input {args.image_size}², {WIDTH}x{HEIGHT} frames, "
        f"{args.objects} object(s), {args.device}"
    )
    header = ("frames", "mode", "fps", "cpu ms/fr", "peak MiB", "mem/obj", "ptr/obj")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (7, 8, 7, 10, 9, 8, 8), strict=True)))
    for length in args.lengths:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", "--frames", str(length), "--mode", mode]
            cmd += ["--objects", str(args.objects), "--image-size", str(args.image_size)]
            cmd += ["--device", args.device, "--threads", str(args.threads)]
            r = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            )
            print(
                f"{r['frames']:>7} {mode:>8} {r['fps']:>7.1f} {r['cpu_ms_per_frame']:>10.1f} "
                f"{r['peak_mib']:>9.1f} {r['memories_per_object']:>8.0f} {r['pointers_per_object']:>8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
