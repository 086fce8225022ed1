"""One prepared speed check for a CUDA machine: random weights, no downloads, a few minutes.

    python eval/gpu_check.py                                   # everything, one table
    python eval/gpu_check.py --official /tmp/official --sam-reference /tmp/ref --quick

Measures, on ``cuda``:

* image-encoder latency in float32 and bfloat16 for sam_vit_h, sam_vit_b, mobile_sam_vit_t,
  efficient_sam_vit_t and every registered SAM 2 name (``persam.list_models()``), and the official
  module in float32 where its files are given (``--official``: a folder with
  ``mobile_sam/modeling/tiny_vit_sam.py`` / ``efficient_sam/efficient_sam_encoder.py``;
  ``--sam-reference``: an unpacked ``segment_anything``), same weights;
* PerSAM and PerSAM-F per image (learn once, then segment), default precision;
* video frames/s with 1 and 3 objects, batched against one decoder call per object
  (``persam.track(..., batch_objects=False)``).

Without CUDA it prints why and exits with status 0, so it can sit in any script.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENCODER_MODELS = ["sam_vit_h", "sam_vit_b", "mobile_sam_vit_t", "efficient_sam_vit_t"]
PIPELINE_MODELS = ["sam_vit_b", "mobile_sam_vit_t", "efficient_sam_vit_t"]


def _cuda_timer(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of ``fn`` (synchronised before and after every run)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _scene(h: int = 480, w: int = 854, objects: int = 1, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame with ``objects`` discs (moved right by ``shift``) and their label map."""
    rng = np.random.default_rng(0)
    image = rng.integers(40, 120, (h, w, 3), dtype=np.uint8)
    labels = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(objects):
        cy, cx = h // 2, (i + 1) * w // (objects + 1) + shift
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (h // 8) ** 2
        image[disc] = (200, 60 + 60 * i, 40)
        labels[disc] = i + 1
    return image, labels


def encoder_rows(models: list[str], args: argparse.Namespace) -> list[tuple[str, str, float]]:
    import torch

    from persam.registry import build_model

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_small_encoders import official_encoder  # noqa: E402 (sibling script)

    x = torch.randn(1, 3, 1024, 1024, device="cuda")
    rows = []
    for name in models:
        model = build_model(name, checkpoint=None, device="cuda", dtype="float32")
        encoder = model.model.image_encoder
        for dtype in (torch.float32, torch.bfloat16):
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                sec = _cuda_timer(lambda m=encoder: m(x), args.repeats)
            rows.append((name, f"ours {str(dtype)[6:]}", sec))
        official = _reference(name, encoder, args, official_encoder)
        if official is not None:
            with torch.no_grad():
                sec = _cuda_timer(lambda m=official: m(x), args.repeats)
            rows.append((name, "official float32", sec))
        model = encoder = official = None  # free this model's memory before the next
        torch.cuda.empty_cache()
    return rows


def _reference(name: str, ours, args: argparse.Namespace, official_encoder):
    """The official encoder with our weights on cuda, or None when its files are not given."""
    module = None
    if name.startswith("sam_vit") and args.sam_reference is not None:
        from bench_vs_reference import load_reference_modeling, reference_encoder

        module = reference_encoder(load_reference_modeling(args.sam_reference), ours.cpu())
        ours.cuda()
    elif name in ("mobile_sam_vit_t", "efficient_sam_vit_t"):
        module = official_encoder(name, args.official)
        if module is not None:
            module.load_state_dict(ours.state_dict(), strict=False)
    return None if module is None else module.cuda().eval()


def persam_rows(models: list[str]) -> list[tuple[str, str, float]]:
    import persam

    ref, ref_labels = _scene()
    target, _ = _scene(shift=40)
    rows = []
    for name in models:
        model = persam.build_model(name, checkpoint=None, device="cuda")
        for method in ("persam", "persam_f"):

            def run(method: str = method, model=model) -> None:
                model.reset_image()
                persam.learn(model, ref, ref_labels > 0, method=method).segment(target)

            rows.append((name, f"{method} per image", _cuda_timer(run, repeats=3, warmup=1)))
    return rows


def video_rows(models: list[str], frames: int) -> list[tuple[str, str, float]]:
    import persam

    rows = []
    for name in models:
        model = persam.build_model(name, checkpoint=None, device="cuda")
        for objects in (1, 3):
            video = np.stack([_scene(objects=objects, shift=4 * t)[0] for t in range(frames)])
            first = _scene(objects=objects)[1]
            for batched in (True, False):
                if objects == 1 and not batched:
                    continue  # one object: both modes are the same call
                list(persam.track(model, video[:2], first, batch_objects=batched))  # warm-up
                t = time.perf_counter()
                n = sum(1 for _ in persam.track(model, video, first, batch_objects=batched))
                fps = n / (time.perf_counter() - t)
                mode = "batched" if batched else "per-object"
                rows.append((name, f"video {objects} obj {mode} (frames/s)", fps))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", type=Path, default=None, help="folder with official module files")
    p.add_argument("--sam-reference", type=Path, default=None, help="folder with segment_anything/")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--quick", action="store_true", help="fewer repeats and frames (about 2 minutes)")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA device"
        print(f"gpu_check: CUDA is not available here ({build}); nothing to measure.")
        return 0
    if args.quick:
        args.repeats, args.frames = 3, 8
    import persam

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 in this table
    sam2 = [m for m in persam.list_models() if m.startswith("sam2")]
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, random weights")
    start = time.perf_counter()
    rows = encoder_rows(ENCODER_MODELS + sam2, args)
    rows += persam_rows(PIPELINE_MODELS + sam2[:1])
    rows += video_rows(PIPELINE_MODELS + sam2[:1], args.frames)
    print(f"{'model':<24} {'measure':<36} {'value':>12}")
    print("-" * 74)
    for model, what, value in rows:
        unit = "" if "frames/s" in what else " ms"
        shown = value if "frames/s" in what else 1000 * value
        print(f"{model:<24} {what:<36} {shown:>9.1f}{unit:3}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
