"""How close bfloat16 / float16 autocast and int8 quantization stay to float32: embedding cosine,
low-res logit difference, mask IoU, and the encoder time relative to float32.

    python eval/precision_accuracy.py                     # tiny models of every family
    python eval/precision_accuracy.py --models mobile_sam_vit_t efficient_sam_vit_t sam_vit_b
    python eval/precision_accuracy.py --models sam_vit_b --checkpoint auto --images a.jpg b.jpg

Without ``--models`` it runs the tiny golden SAM model (its 4 images and 10 prompt sets per image,
when the fixtures ``../shared/fixtures/sam`` are beside the checkout) and the small random MobileSAM,
EfficientSAM and SAM 2 models. Without ``--images`` it uses the fixture images, else synthetic ones.
With random weights (``--checkpoint none``, the default for registry names) the numbers are a proxy
of numerical fidelity, not of segmentation quality on real weights: pass ``--checkpoint auto`` (or a
path) and real photos for that. Only the image encoder changes precision; the decoder stays float32.

Each model also gets an ``f32 +-1`` row, its noise floor: float32 on the image moved by +-1 grey
level. Random weights leave many logits near the mask threshold, so masks change under such a
perturbation too, and an IoU against float32 means little below that floor.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from persam.io import load_image
from persam.registry import build_model

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "sam"
SMALL_MODELS = ["tiny_random_mobile_sam", "tiny_random_efficient_sam", "tiny_random_sam2"]
FLOOR = "f32 +-1"


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def _fixture_cases() -> list[tuple[str, np.ndarray, list[dict]]]:
    vectors = torch.load(FIXTURES / "tiny_vectors.pt", weights_only=True)
    cases = []
    for im in vectors["images"]:
        prompts = []
        for call in im["calls"]:
            if call["uses_mask_input"]:
                continue
            prompts.append(
                {
                    "points": None if call["point_coords"] is None else call["point_coords"].numpy(),
                    "labels": None if call["point_labels"] is None else call["point_labels"].numpy(),
                    "box": None if call["box"] is None else call["box"].numpy(),
                    "multimask": bool(call["multimask_output"]),
                }
            )
        cases.append((im["name"], im["image"].numpy(), prompts))
    return cases


def _image_cases(paths: list[str]) -> list[tuple[str, np.ndarray, list[dict]]]:
    cases = []
    for p in paths:
        image = load_image(p)
        h, w = image.shape[:2]
        prompts = [
            {"points": np.array([[w / 2, h / 2]]), "labels": np.array([1]), "box": None, "multimask": True},
            {
                "points": None,
                "labels": None,
                "box": np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4]),
                "multimask": False,
            },
        ]
        cases.append((Path(p).name, image, prompts))
    return cases


def _synthetic_cases(n: int = 3) -> list[tuple[str, np.ndarray, list[dict]]]:
    """Smooth random images (blobs on gradients, so the encoder sees structure) with centre prompts."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        h, w = 480 + 64 * i, 640
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        image = np.stack([np.sin(6 * xx + i) + np.cos(5 * yy), xx - yy, np.sin(9 * xx * yy)], -1)
        for _ in range(4):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            image += 0.8 * ((yy - cy * h / max(h, w)) ** 2 + (xx - cx) ** 2 < r**2)[..., None]
        image = ((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
        cases.append((f"synthetic_{i}", image, _image_cases_prompts(h, w)))
    return cases


def _image_cases_prompts(h: int, w: int) -> list[dict]:
    return [
        {"points": np.array([[w / 2, h / 2]]), "labels": np.array([1]), "box": None, "multimask": True},
        {
            "points": np.array([[w / 3, h / 3], [2 * w / 3, 2 * h / 3]]),
            "labels": np.array([1, 0]),
            "box": None,
            "multimask": True,
        },
        {
            "points": None,
            "labels": None,
            "box": np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4]),
            "multimask": False,
        },
    ]


def _encode_seconds(model, image: np.ndarray) -> float:
    model.reset_image()
    t = time.perf_counter()
    model.set_image(image)
    return time.perf_counter() - t


def _jittered(image: np.ndarray) -> np.ndarray:
    """``image`` with every value moved by -1, 0 or +1 grey level (fixed seed)."""
    step = np.random.default_rng(0).integers(-1, 2, image.shape)
    return np.clip(image.astype(np.int16) + step, 0, 255).astype(np.uint8)


def compare(model_name: str, checkpoint: str | None, cases, dtypes: list[str], device: str, repeats: int):
    """Prints one row per (dtype, image) and a summary row per dtype; returns the summaries.

    The ``f32 +-1`` rows are the noise floor: float32 on the image moved by +-1 grey level. With
    random weights the logits sit close to the mask threshold, so masks flip at such changes too;
    a precision whose IoU is near that floor is as close to float32 as the proxy can tell.
    """
    torch.manual_seed(0)
    ref = build_model(model_name, checkpoint=checkpoint, device=device, dtype="float32")
    others = {d: build_model(model_name, checkpoint=checkpoint, device=device, dtype=d) for d in dtypes}
    image0 = cases[0][1]
    for m in (ref, *others.values()):
        _encode_seconds(m, image0)  # warm-up
    times = {d: [] for d in ["float32", *dtypes]}
    for _ in range(repeats):  # interleaved, so a busy machine slows every precision alike
        times["float32"].append(_encode_seconds(ref, image0))
        for d, m in others.items():
            times[d].append(_encode_seconds(m, image0))
    t32 = statistics.median(times["float32"])
    others[FLOOR] = build_model(model_name, checkpoint=checkpoint, device=device, dtype="float32")
    summaries = []
    for dtype, low in others.items():
        cosines, ious_all = [], []
        for name, image, prompts in cases:
            ref.set_image(image)
            low.set_image(_jittered(image) if dtype == FLOOR else image)
            cos = torch.nn.functional.cosine_similarity(
                ref.features.flatten().double(), low.features.flatten().double(), dim=0
            ).item()
            ious, dmax = [], 0.0
            for p in prompts:
                a = ref.predict(p["points"], p["labels"], p["box"], multimask_output=p["multimask"])
                b = low.predict(p["points"], p["labels"], p["box"], multimask_output=p["multimask"])
                dmax = max(dmax, float(np.abs(a[2] - b[2]).max()))
                ious += [
                    _mask_iou(torch.from_numpy(x), torch.from_numpy(y))
                    for x, y in zip(a[0], b[0], strict=True)
                ]
            cosines.append(cos)
            ious_all += ious
            print(
                f"{ref.name[:22]:22} {dtype:9} {name[:22]:22} {cos:11.6f} {dmax:12.3e} "
                f"{min(ious):9.4f} {statistics.mean(ious):7.4f}"
            )
        speed = t32 / statistics.median(times[dtype]) if dtype in times else float("nan")
        summaries.append((ref.name, dtype, min(cosines), min(ious_all), statistics.mean(ious_all), speed))
    return summaries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=None, help="registry names or JSON configs")
    ap.add_argument("--checkpoint", default=None, help="checkpoint path, 'auto' or 'none' (default none)")
    ap.add_argument("--images", nargs="*", default=[])
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dtypes",
        nargs="+",
        default=["bfloat16", "float16", "int8"],
        choices=["bfloat16", "float16", "int8"],
    )
    ap.add_argument("--repeats", type=int, default=3, help="encoder timings per precision (median)")
    args = ap.parse_args(argv)

    runs: list[tuple[str, str | None, list]] = []
    fixture_model = (FIXTURES / "tiny_config.json").is_file()
    if args.images:
        cases = _image_cases(args.images)
    elif fixture_model:
        cases = _fixture_cases()
    else:
        cases = _synthetic_cases()
    if args.models is None:
        if fixture_model:
            runs.append((str(FIXTURES / "tiny_config.json"), str(FIXTURES / "tiny_state_dict.pt"), cases))
        runs += [(m, None, cases) for m in SMALL_MODELS]
    else:
        runs += [(m, args.checkpoint, cases) for m in args.models]

    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'model':22} {'dtype':9} {'image':22} {'emb cosine':>11} {'max|dlogit|':>12} "
        f"{'IoU min':>9} {'mean':>7}"
    )
    summaries = []
    for model, checkpoint, model_cases in runs:
        summaries += compare(model, checkpoint, model_cases, args.dtypes, args.device, args.repeats)
    print()
    print(f"{'model':22} {'dtype':9} {'cosine min':>11} {'IoU min':>9} {'IoU mean':>9} {'speed vs f32':>13}")
    for name, dtype, cos, iou_min, iou_mean, speed in summaries:
        timing = "-" if speed != speed else f"{speed:.2f}x"  # NaN: the floor is not timed
        print(f"{name[:22]:22} {dtype:9} {cos:11.6f} {iou_min:9.4f} {iou_mean:9.4f} {timing:>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
