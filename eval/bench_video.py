"""Video tracking throughput and peak memory: batched objects vs one decoder call per object.

    python eval/bench_video.py --models mobile_sam_vit_t efficient_sam_vit_t --objects 1 3 --frames 6
    python eval/bench_video.py --models sam_vit_b --objects 3 --frames 3

A synthetic 480x854 (DAVIS 480p) video with 1 or 3 textured objects moving over a textured
background is generated frame by frame (never held in memory) and tracked with random weights.
Two modes per (model, objects):

* ``ours``: one image-encoder pass per frame, all objects in one decoder batch per step;
* ``naive``: the same algorithm with one decoder call per object and step, and the first frame
  encoded once per object, as the reference PerSAM video script does.

Each configuration runs in a fresh subprocess so that its peak memory is its own (resident memory
above the interpreter + model baseline on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA).
Throughput is tracked frames per second over the frames after the first tracked one (warm-up),
from wall time and from the process's CPU time (``cpu ms/frame``; the fair comparison on a busy
machine), and the CPU time outside the image encoder (``non-enc cpu ms``: similarity, prompts,
decoder calls, post-processing, merging, frame decoding); the first-frame setup (target features)
is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

HEIGHT, WIDTH = 480, 854


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def synthetic_video(n_frames: int, n_objects: int, seed: int = 0) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """A frame generator and the first frame's label map (ids 1..n_objects)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    sizes = [(120, 100), (90, 140), (110, 110)][:n_objects]
    textures = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    starts = [(60, 80), (250, 500), (140, 300)][:n_objects]
    velocities = [(3, 6), (-2, -5), (4, -3)][:n_objects]

    def layout(i: int) -> list[tuple[int, int, int, int]]:
        out = []
        for (h, w), (y, x), (vy, vx) in zip(sizes, starts, velocities, strict=True):
            y0 = int(np.clip(y + vy * i, 0, HEIGHT - h))
            x0 = int(np.clip(x + vx * i, 0, WIDTH - w))
            out.append((y0, x0, h, w))
        return out

    # Background and noise are drawn once, so that making a frame costs little next to tracking it.
    background = 120 + 40 * np.sin(xx / 13.0)[..., None] * np.cos(yy / 17.0)[..., None]
    noise = [rng.normal(0, 6, (HEIGHT, WIDTH, 3)) for _ in range(2)]
    base = [np.clip(background + n, 0, 255).astype(np.uint8) for n in noise]

    def frames() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            frame = base[i % 2].copy()
            for tex, (y0, x0, h, w) in zip(textures, layout(i), strict=True):
                frame[y0 : y0 + h, x0 : x0 + w] = tex
            yield frame

    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    for k, (y0, x0, h, w) in enumerate(layout(0)):
        labels[y0 : y0 + h, x0 : x0 + w] = k + 1
    return frames(), labels


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(
    model_name: str, mode: str, n_objects: int, n_frames: int, device: str, threads: int | None
) -> dict:
    """Tracks one synthetic video in this process and returns the numbers."""
    import torch

    from persam.pipelines.video import track
    from persam.registry import build_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    try:
        model = build_model(model_name, checkpoint=None, device=device)
    except Exception as e:  # any failure to build means "not available here"
        return {"model": model_name, "mode": mode, "objects": n_objects, "error": f"{type(e).__name__}: {e}"}
    baseline = _rss_peak_mib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    frames, labels = synthetic_video(n_frames, n_objects)
    naive = mode == "naive"

    # CPU time inside the image encoder (every set_image call), to report the rest separately.
    encoder_cpu = [0.0]
    set_image = model.set_image

    def timed_set_image(image: np.ndarray) -> None:
        c0 = time.process_time()
        set_image(image)
        encoder_cpu[0] += time.process_time() - c0

    model.set_image = timed_set_image

    def timed_frames() -> Iterator[np.ndarray]:
        for i, f in enumerate(frames):
            if naive and i == 0:
                for _ in range(n_objects - 1):  # the reference encodes the first frame once per object
                    model.set_image(f)
                    model.reset_image()  # so that the next pass (the tracker's included) encodes again
            yield f

    times: list[float] = []
    cpu: list[float] = []
    other_cpu: list[float] = []
    _sync(device)
    t, c, e = time.perf_counter(), time.process_time(), encoder_cpu[0]
    for _ in track(model, timed_frames(), labels, batch_objects=not naive, prefetch=2):
        _sync(device)
        now, cnow, enow = time.perf_counter(), time.process_time(), encoder_cpu[0]
        times.append(now - t)
        cpu.append(cnow - c)
        other_cpu.append((cnow - c) - (enow - e))
        t, c, e = now, cnow, enow
    tracked = times[2:]  # times[0]: first frame (setup), times[1]: warm-up
    tracked_cpu = cpu[2:]
    tracked_other = other_cpu[2:]
    if device.startswith("cuda"):
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    else:
        peak, kind = _rss_peak_mib() - baseline, "rss_above_baseline"
    return {
        "model": model_name,
        "mode": mode,
        "objects": n_objects,
        "frames": len(times),
        "setup_s": times[0],
        "fps": len(tracked) / sum(tracked) if tracked else float("nan"),
        "ms_per_frame": 1000 * sum(tracked) / len(tracked) if tracked else float("nan"),
        "cpu_ms_per_frame": 1000 * sum(tracked_cpu) / len(tracked_cpu) if tracked_cpu else float("nan"),
        "other_cpu_ms_per_frame": 1000 * sum(tracked_other) / len(tracked_other)
        if tracked_other
        else float("nan"),
        "peak_mib": peak,
        "peak_kind": kind,
        "threads": torch.get_num_threads(),
        "device": device,
    }


def _run_isolated(args: argparse.Namespace, model: str, mode: str, n_objects: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--models", model, "--modes", mode]
    cmd += ["--objects", str(n_objects), "--frames", str(args.frames), "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": model, "mode": mode, "objects": n_objects, "error": f"worker failed: {err}"}
    return json.loads(lines[-1])


def _label(model: str) -> str:
    """A registry name as it is; a JSON config by its file name."""
    return os.path.basename(model) if model.endswith(".json") else model


def _table(rows: list[dict]) -> str:
    head = (
        f"{'model':<20} {'objects':>7} {'mode':<6} {'frames/s':>9} {'ms/frame':>9} {'cpu ms/frame':>12} "
        f"{'non-enc cpu ms':>14} {'setup s':>8} {'peak MiB':>9} {'speed-up':>8} {'cpu speed-up':>12}"
    )
    out = [head, "-" * len(head)]
    naive = {(r["model"], r["objects"]): r for r in rows if r.get("mode") == "naive" and "error" not in r}
    for r in rows:
        if "error" in r:
            out.append(
                f"{_label(r['model']):<20} {r['objects']:>7} {r['mode']:<6} unavailable ({r['error']})"
            )
            continue
        base = naive.get((r["model"], r["objects"]))
        ours = base is not None and r["mode"] == "ours"
        speed = f"{r['fps'] / base['fps']:.2f}x" if ours else ""
        cpu_speed = f"{base['cpu_ms_per_frame'] / r['cpu_ms_per_frame']:.2f}x" if ours else ""
        out.append(
            f"{_label(r['model']):<20} {r['objects']:>7} {r['mode']:<6} {r['fps']:>9.3f} "
            f"{r['ms_per_frame']:>9.0f} {r['cpu_ms_per_frame']:>12.0f} {r['other_cpu_ms_per_frame']:>14.0f} "
            f"{r['setup_s']:>8.2f} {r['peak_mib']:>9.0f} {speed:>8} {cpu_speed:>12}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["mobile_sam_vit_t", "efficient_sam_vit_t"])
    p.add_argument("--modes", nargs="+", default=["naive", "ours"], choices=["naive", "ours"])
    p.add_argument("--objects", nargs="+", type=int, default=[1, 3])
    p.add_argument(
        "--frames", type=int, default=6, help="frames per run, the first (setup) and a warm-up included"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.frames < 3:
        p.error("--frames must be >= 3 (setup, warm-up, then measured frames)")
    if args.worker:
        print(
            json.dumps(
                worker(args.models[0], args.modes[0], args.objects[0], args.frames, args.device, args.threads)
            )
        )
        return 0
    rows = []
    for model in args.models:
        for n in args.objects:
            for mode in args.modes:
                row = _run_isolated(args, model, mode, n)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
