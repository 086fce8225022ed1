"""Image-encoder / decoder latency and peak memory of the backbones (random weights).

    python eval/bench_encoder.py --models sam_vit_b mobile_sam_vit_t efficient_sam_vit_t \\
        efficient_sam_vit_s --device cpu --dtypes float32 bfloat16 --repeats 3
    python eval/bench_encoder.py --models sam2.1_hiera_t sam2.1_hiera_s sam2.1_hiera_b+ sam2.1_hiera_l

Any registry name is accepted (the SAM 2 sizes included; ``eval/bench_sam2.py`` adds the side by
side with the official SAM 2 image predictor).

Each (model, dtype) runs in a fresh subprocess so that its peak memory is its own: peak resident
memory above the interpreter + torch baseline on the CPU, ``torch.cuda.max_memory_allocated`` on
CUDA. Latencies are medians over ``--repeats`` runs after ``--warmup`` runs; the decoder time is
one prompt set (one positive point, 3 masks) on the encoded image. "enc cpu ms" is the process CPU
time of one encoder run (all threads together): on a busy machine it is steadier than wall time.
Models that cannot be built are reported as unavailable.

"GFLOP" is one encoder pass at 1024x1024 counted by ``torch.utils.flop_counter.FlopCounterMode``
(2 per multiply-add; convolutions, linear layers and attention, on the meta device, so the count
does not depend on the precision), "GFLOP/s" that count over the median encoder time, and "peak"
the float32 GEMM rate of the same process just before (best of 5 ``2048^3`` matmuls on the same
device and threads): "of peak" says how close the encoder runs to what this machine's matmul
reaches now (for int8 the float32 count is kept, so it reads as an effective rate).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoder_gflop(model: str) -> float:
    """GFLOP of one image-encoder pass at 1024x1024 (counted on the meta device: no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from persam.registry import build_module

    with torch.device("meta"):
        encoder = build_module(model).image_encoder.eval()
        x = torch.empty(1, 3, 1024, 1024)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(x)
    return counter.get_total_flops() / 1e9


def gemm_peak_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    """Best float32 rate of ``repeats`` ``n^3`` matmuls on ``device`` (GFLOP/s): a peak is what
    the machine reaches, and on a shared machine the median mixes in other processes' load."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def worker(model: str, dtype: str, device: str, repeats: int, warmup: int, threads: int | None) -> dict:
    """Measures one configuration in this process and returns the numbers."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline = _rss_peak_mib()
    try:
        from persam.registry import build_model

        backbone = build_model(model, checkpoint=None, device=device, dtype=dtype)
    except Exception as e:  # any failure to build means "not available here"
        return {"model": model, "dtype": dtype, "error": f"{type(e).__name__}: {e}".splitlines()[0]}

    params = sum(p.numel() for p in backbone.model.parameters())
    try:
        gflop = encoder_gflop(model)
    except Exception:  # a model that cannot run on meta still gets its latency
        gflop = float("nan")
    with torch.no_grad():
        peak = gemm_peak_gflops(device)
    image = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    encoder_s, encoder_cpu_s = [], []
    for i in range(warmup + repeats):
        backbone.reset_image()  # the same image again would reuse its embedding
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        backbone.set_image(image)
        _sync(device)
        if i >= warmup:
            encoder_s.append(time.perf_counter() - t)
            encoder_cpu_s.append(time.process_time() - c)

    point = torch.tensor([[[512.0, 384.0]]])
    label = torch.tensor([[1]])
    decoder_s = []
    for i in range(warmup + max(repeats, 5)):
        _sync(device)
        t = time.perf_counter()
        backbone.decode(point, label, multimask_output=True)
        _sync(device)
        if i >= warmup:
            decoder_s.append(time.perf_counter() - t)

    if device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
        peak_kind = "cuda_max_allocated"
    else:
        peak_mib = _rss_peak_mib() - baseline
        peak_kind = "rss_above_baseline"
    encoder_median = statistics.median(encoder_s)
    return {
        "model": model,
        "dtype": dtype,
        "params_m": params / 1e6,
        "encoder_ms": 1000 * encoder_median,
        "encoder_cpu_ms": 1000 * statistics.median(encoder_cpu_s),
        "decoder_ms": 1000 * statistics.median(decoder_s),
        "peak_mib": peak_mib,
        "peak_kind": peak_kind,
        "gflop": gflop,
        "gflops": gflop / encoder_median,
        "gemm_peak_gflops": peak,
        "threads": torch.get_num_threads(),
    }


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
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": model, "dtype": dtype, "error": f"worker failed: {err}"}
    return json.loads(lines[-1])


def _cpu_name() -> str | None:
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    return get().get("cpu_name") if get is not None else None


def _table(rows: list[dict]) -> str:
    head = (
        f"{'model':<22} {'dtype':<9} {'params M':>9} {'encoder ms':>11} {'enc cpu ms':>11} "
        f"{'decoder ms':>11} {'peak MiB':>9} {'GFLOP':>7} {'GFLOP/s':>8} {'peak':>7} {'of peak':>8}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            out.append(f"{r['model']:<22} {r['dtype']:<9} unavailable ({r['error']})")
        else:
            out.append(
                f"{r['model']:<22} {r['dtype']:<9} {r['params_m']:>9.1f} {r['encoder_ms']:>11.1f} "
                f"{r['encoder_cpu_ms']:>11.1f} {r['decoder_ms']:>11.2f} {r['peak_mib']:>9.0f} "
                f"{r['gflop']:>7.1f} {r['gflops']:>8.1f} {r['gemm_peak_gflops']:>7.1f} "
                f"{r['gflops'] / r['gemm_peak_gflops']:>8.0%}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["mobile_sam_vit_t", "efficient_sam_vit_t"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")

    if args.worker:
        print(
            json.dumps(
                worker(args.models[0], args.dtypes[0], args.device, args.repeats, args.warmup, args.threads)
            )
        )
        return 0

    rows = []
    for model in args.models:
        for dtype in args.dtypes:
            row = _run_isolated(args, model, dtype)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if not args.json:
        import platform

        print(
            f"device {args.device} ({_cpu_name() or platform.machine()}), image 768x1024, median of "
            f"{args.repeats} (after {args.warmup} warm-up); peak = float32 2048^3 GEMM in the same process"
        )
        print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
