"""How close bfloat16 / float16 autocast stays to float32: embedding cosine and mask IoU.

    python eval/bf16_accuracy.py                                  # tiny golden model + its prompts
    python eval/bf16_accuracy.py --model sam_vit_b --checkpoint auto --images a.jpg b.jpg

With the golden fixtures beside the checkout (``../shared/fixtures/sam``) the default run uses the
tiny reference model, its 4 images and its 10 prompt sets per image; otherwise give ``--model`` and
images. For every image it prints the cosine similarity of the low-precision image embedding to the
float32 one, the max |difference| of the low-res logits and the IoU of the thresholded masks of every
prompt set (only the image encoder runs in low precision; the decoder stays float32).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from persam.io import load_image
from persam.registry import build_model

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "sam"


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=None, help="registry name or JSON config (default: the tiny golden model)"
    )
    ap.add_argument("--checkpoint", default=None, help="checkpoint path, 'auto' or 'none'")
    ap.add_argument("--images", nargs="*", default=[])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float16"])
    args = ap.parse_args(argv)

    if args.model is None:
        if not (FIXTURES / "tiny_config.json").is_file():
            ap.error("no golden fixtures found: pass --model and --images")
        args.model, args.checkpoint = str(FIXTURES / "tiny_config.json"), str(FIXTURES / "tiny_state_dict.pt")
        cases = _fixture_cases()
    else:
        if not args.images:
            ap.error("--images is required with --model")
        cases = _image_cases(args.images)

    torch.manual_seed(0)
    ref = build_model(args.model, checkpoint=args.checkpoint, device=args.device, dtype="float32")
    print(f"model {ref.name}  device {args.device}")
    print(f"{'dtype':9} {'image':24} {'emb cosine':>11} {'max|dlogit|':>12} {'mask IoU min':>13} {'mean':>7}")
    for dtype in args.dtypes:
        low = build_model(args.model, checkpoint=args.checkpoint, device=args.device, dtype=dtype)
        cosines, ious_all = [], []
        for name, image, prompts in cases:
            ref.set_image(image)
            low.set_image(image)
            cos = torch.nn.functional.cosine_similarity(
                ref.features.flatten(), low.features.flatten(), dim=0
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
                f"{dtype:9} {name:24} {cos:11.6f} {dmax:12.3e} {min(ious):13.4f} {statistics.mean(ious):7.4f}"
            )
        print(
            f"{dtype:9} {'ALL':24} {min(cosines):11.6f} {'':12} "
            f"{min(ious_all):13.4f} {statistics.mean(ious_all):7.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
