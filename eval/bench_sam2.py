"""SAM 2 / 2.1 image-encoder latency and peak memory per size (random weights).

    python eval/bench_sam2.py --models sam2.1_hiera_t sam2.1_hiera_s --device cpu \\
        --dtypes float32 bfloat16 --repeats 3 [--reference]

Each (model, dtype) runs in a fresh subprocess so that its peak memory is its own: peak resident
memory above the interpreter + torch baseline on the CPU, ``torch.cuda.max_memory_allocated`` on
CUDA. Latencies are medians over ``--repeats`` runs after ``--warmup`` runs of
:meth:`Sam2Backbone.set_image` on a 768x1024 image (preprocessing + Hiera + FPN + high-res
projections) and of one decoder call (one positive point, 3 masks). ``tiny`` is the small random
test model (:func:`persam.models.sam2.tiny_sam2_config`).

``--reference`` adds, for float32, a side-by-side with the official ``sam2`` package's
``SAM2ImagePredictor`` with the same weights (our state dict loads into it unchanged): the full
image path of both (``set_image`` + one ``predict``, one positive point, 3 masks), timed
interleaved (alternating which goes first) over ``--repeats`` rounds, their ratio, and the largest
differences of the image embeddings and of the low-res logits. It is skipped, with a line saying
why, when ``import sam2`` (or its hydra / torchvision dependencies) fails, and for ``tiny`` (the
package has no config for it); ``sam2`` is never a dependency of persam.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MODELS = ["tiny", "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"]
_DTYPES = ("float32", "bfloat16", "float16")


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, warmup: int, repeats: int) -> float:
    """Median wall time in ms of ``fn()`` after ``warmup`` calls."""
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _reference(model, image, device: str, warmup: int, repeats: int, ours) -> dict:
    """The official predictor with our weights, side by side with ``ours`` on the full image path
    (``set_image`` + one ``predict``): median ms of both, timed interleaved, and max |differences|."""
    import numpy as np
    import torch

    try:
        import sam2  # noqa: F401
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor
    except Exception as e:  # not installed, or hydra / torchvision missing or broken
        return {"reference": f"skipped: import sam2 failed ({type(e).__name__}: {e})".splitlines()[0]}
    # Built from the package's own config (with its builder's defaults); the weights are ours.
    folder = "sam2.1" if model.startswith("sam2.1") else "sam2"
    official = build_sam2(f"configs/{folder}/{model}.yaml", ckpt_path=None, device=device)
    official.load_state_dict(ours.model.state_dict(), strict=True)
    official.eval()
    predictor = SAM2ImagePredictor(official)
    h, w = image.shape[:2]
    coords, labels = np.array([[w / 2, h / 2]]), np.array([1])

    def run_ours():
        ours.reset_image()  # the same image again would reuse its embedding
        ours.set_image(image)
        return ours.predict(point_coords=coords, point_labels=labels, multimask_output=True)

    def run_official():
        predictor.set_image(image)
        return predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)

    for _ in range(warmup):
        run_ours(), run_official()
    times: dict[str, list[float]] = {"ours": [], "official": []}
    last = {}
    for i in range(repeats):
        order = [("ours", run_ours), ("official", run_official)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            _sync(device)
            t = time.perf_counter()
            last[name] = fn()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    ours_ms = 1000 * statistics.median(times["ours"])
    official_ms = 1000 * statistics.median(times["official"])
    emb = (predictor._features["image_embed"].float().cpu() - ours.features.cpu()).abs().max().item()
    low_res = torch.as_tensor(np.asarray(last["official"][2])) - torch.as_tensor(last["ours"][2]).cpu()
    return {
        "full_path_ms": ours_ms,
        "reference_full_path_ms": official_ms,
        "reference_ratio": official_ms / ours_ms,
        "reference_max_abs_diff": emb,
        "reference_max_abs_diff_low_res": low_res.abs().max().item(),
    }


def worker(model: str, dtype: str, device: str, repeats: int, warmup: int, threads: int | None, ref: bool):
    """Measures one configuration in this process and returns the numbers."""
    import numpy as np
    import torch

    from persam.backbones.sam2 import Sam2Backbone
    from persam.models.sam2 import official_config, sam2_from_config, tiny_sam2_config

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline = _rss_peak_mib()
    cfg = tiny_sam2_config() if model == "tiny" else official_config(model)
    module = sam2_from_config(cfg).to(device)
    backbone = Sam2Backbone(module, name=model, checkpoint_id="random", dtype=getattr(torch, dtype))
    params = sum(p.numel() for p in module.image_encoder.parameters())
    image = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def encode():
        backbone.reset_image()  # the same image again would reuse its embedding
        backbone.set_image(image)

    encoder_ms = _timed(encode, device, warmup, repeats)
    point, label = torch.tensor([[[512.0, 384.0]]]), torch.tensor([[1]])
    decoder_ms = _timed(lambda: backbone.decode(point, label, multimask_output=True), device, warmup, repeats)
    if device.startswith("cuda"):
        peak, peak_kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    else:
        peak, peak_kind = _rss_peak_mib() - baseline, "rss_above_baseline"
    row = {
        "model": model,
        "dtype": dtype,
        "encoder_params_m": params / 1e6,
        "encoder_ms": encoder_ms,
        "decoder_ms": decoder_ms,
        "peak_mib": peak,
        "peak_kind": peak_kind,
        "threads": torch.get_num_threads(),
    }
    if ref and dtype == "float32":
        if model == "tiny":
            row["reference"] = "skipped: the sam2 package has no config for the tiny test model"
        else:
            row.update(_reference(model, image, device, warmup, repeats, backbone))
    return row


def _run_isolated(args: argparse.Namespace, model: str, dtype: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--models",
        model,
        "--dtypes",
        dtype,
        "--device",
        args.device,
    ]
    cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.reference:
        cmd.append("--reference")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": model, "dtype": dtype, "error": f"worker failed: {err}"}
    return json.loads(lines[-1])


def _table(rows: list[dict]) -> str:
    head = (
        f"{'model':<16} {'dtype':<9} {'enc params M':>12} {'encoder ms':>11} {'decoder ms':>11} "
        f"{'peak MiB':>9}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            out.append(f"{r['model']:<16} {r['dtype']:<9} unavailable ({r['error']})")
            continue
        out.append(
            f"{r['model']:<16} {r['dtype']:<9} {r['encoder_params_m']:>12.1f} {r['encoder_ms']:>11.1f} "
            f"{r['decoder_ms']:>11.2f} {r['peak_mib']:>9.0f}"
        )
        if "reference_full_path_ms" in r:
            out.append(
                f"{'':<16} set_image + predict: ours {r['full_path_ms']:.1f} ms, official "
                f"{r['reference_full_path_ms']:.1f} ms (official / ours {r['reference_ratio']:.2f}x); "
                f"max |d| embedding {r['reference_max_abs_diff']:.2e}, "
                f"low-res logits {r['reference_max_abs_diff_low_res']:.2e}"
            )
        if "reference" in r:
            out.append(f"{'':<16} official predictor: {r['reference']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS, help="official config names or 'tiny'")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(_DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--reference", action="store_true", help="side-by-side with the official sam2 image predictor"
    )
    p.add_argument("--json", action="store_true", help="print one JSON line per row instead of a table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        row = worker(
            args.models[0],
            args.dtypes[0],
            args.device,
            args.repeats,
            args.warmup,
            args.threads,
            args.reference,
        )
        print(json.dumps(row))
        return 0
    rows = [_run_isolated(args, m, d) for m in args.models for d in args.dtypes]
    print("\n".join(json.dumps(r) for r in rows) if args.json else _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
