"""PerSAM / PerSAM-F latency on the CPU with random weights.

Prints, for one synthetic reference/test pair of ``--size`` x ``--size`` pixels:

* the image-encoder time (one ``set_image``),
* per-image PerSAM and PerSAM-F latency (encoder pass + similarity, prompts and decoder cascade),
* the PerSAM-F fit time of each optimisation engine (``fast``: closed-form loss on the reused
  decoder output; ``autograd``: autograd on the reused decoder output; ``naive`` with ``--naive``:
  decoder + post-processing every step, as the reference implementation), side by side with the
  speed-up over the naive loop and the largest difference of the learned weights.

Examples::

    python eval/bench_persam.py                       # tiny fixture config, else tiny_random_sam
    python eval/bench_persam.py --naive --steps 1000
    python eval/bench_persam.py --model sam_vit_b --steps 200 --naive
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from persam.personalize import learn, segment_current_image
from persam.personalize.finetune import fit_mask_weights, naive_logits_fn, reference_training_logits
from persam.registry import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY_FIXTURE = ROOT.parent / "shared" / "fixtures" / "sam" / "tiny_config.json"


def synthetic_pair(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured scene with an elliptic object, the object mask, and a second scene with the
    object moved."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size

    def scene(cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
        bg = np.stack(
            [120 + 60 * np.sin(6 * xx), 110 + 50 * np.cos(5 * yy), 90 + 40 * np.sin(4 * (xx + yy))], -1
        )
        img = bg + rng.normal(0, 8, bg.shape)
        mask = ((xx - cx) / 0.18) ** 2 + ((yy - cy) / 0.12) ** 2 <= 1
        stripes = 200 + 40 * np.sin(40 * xx)
        img[mask] = np.stack([stripes, 60 + 0 * xx, 40 + 0 * xx], -1)[mask]
        return np.clip(img, 0, 255).astype(np.uint8), mask

    ref, ref_mask = scene(0.4, 0.45)
    test, _ = scene(0.6, 0.55)
    return ref, ref_mask, test


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        default=None,
        help="registry name or JSON config (default: the tiny fixture config, else tiny_random_sam)",
    )
    ap.add_argument("--size", type=int, default=640, help="side of the square synthetic images")
    ap.add_argument("--steps", type=int, default=1000, help="PerSAM-F optimisation steps")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the per-image timings (best is kept)")
    ap.add_argument("--naive", action="store_true", help="also time the naive loop (decoder every step)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Without the fixture config, the (smaller) built-in random test model.
    source = args.model or (str(TINY_FIXTURE) if TINY_FIXTURE.is_file() else "tiny_random_sam")
    model = build_model(source, checkpoint="none")
    size = f"{args.size}x{args.size}"
    print(f"model: {source} ({model.name}, random weights), image {size}, {args.threads} thread(s)")

    ref, ref_mask, test = synthetic_pair(args.size)
    concept = learn(model, ref, ref_mask, method="persam")
    concept_f = learn(model, ref, ref_mask, method="persam_f", steps=args.steps)

    # The PerSAM-F fit, engine by engine, on the same reference decoder output (the reference is
    # still the current image after `learn`).
    prompt = reference_training_logits(model, concept_f.target_feat)
    mask_t = torch.from_numpy(ref_mask)
    fits = {}
    for engine in ("fast", "autograd") + (("naive",) if args.naive else ()):
        source_logits = (
            naive_logits_fn(model, prompt.points, prompt.labels)
            if engine == "naive"
            else [prompt.high_res_logits]
        )
        fits[engine] = fit_mask_weights(source_logits, [mask_t], steps=args.steps, engine=engine)

    # Per-image latency = one encoder pass + similarity, prompts and the decoder cascade.
    # reset_image: the same image again would reuse its embedding.
    t_enc, _ = timed(lambda: (model.reset_image(), model.set_image(test)), args.repeats)
    print(f"image encoder (set_image): {t_enc * 1e3:9.1f} ms")
    for c in (concept, concept_f):
        t_dec, _ = timed(lambda c=c: segment_current_image(model, [c]), args.repeats)
        total = (t_enc + t_dec) * 1e3
        print(f"{c.method:9s} per image: {total:9.1f} ms (similarity + decoder cascade {t_dec * 1e3:.1f} ms)")

    base = fits.get("naive")
    print(f"\nPerSAM-F fit, {args.steps} steps ({args.size * args.size} pixels):")
    print(
        f"{'engine':10s} {'seconds':>9s} {'ms/step':>9s} {'speed-up':>9s} {'max |dw| vs naive':>19s}  weights"
    )
    for engine, fit in fits.items():
        speed = f"{base.seconds / fit.seconds:8.1f}x" if base is not None else "        -"
        dw = f"{(fit.weights - base.weights).abs().max().item():19.2e}" if base is not None else " " * 19
        w = ", ".join(f"{v:+.6f}" for v in fit.weights.tolist())
        print(f"{engine:10s} {fit.seconds:9.2f} {fit.seconds / args.steps * 1e3:9.2f} {speed} {dw}  [{w}]")
    if base is not None:
        same = torch.equal(fits["autograd"].weights, base.weights) and np.array_equal(
            fits["autograd"].loss_total, base.loss_total
        )
        print(f"autograd (reused decoder output) bit-identical to naive: {same}")
        ok = (fits["fast"].weights - base.weights).abs().max().item() <= 1e-5
        print(f"fast weights equal to naive within 1e-5: {ok}")
        return 0 if same and ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
