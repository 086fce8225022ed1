"""Automatic mask generation: ours against the official ``SamAutomaticMaskGenerator``, same CPU,
same weights, same image, same options; checks that both return the same records.

    pip install segment-anything   # the official package (not a dependency of persam)
    python eval/bench_everything.py --repeats 3 --threads 2

Three runs per setting, each timed as the median of ``--repeats``: the official generator with the
official modules, the official generator with *our* modules inside the official ``Sam`` (so that
only the generator differs; its records must equal ours exactly), and ours. The model is the tiny
random SAM of the golden fixtures (``$PERSAM_SHARED/fixtures/sam``), whose masks are noise spread
over the whole image, so thresholds are lowered for masks to survive. The official package needs
torchvision for NMS and resizing; the stand-in of ``tests/official_amg.py`` replaces it.

Then the two mask sources side by side, in images/s (encoder pass included): the point grid (SAM's
generator, ``--points-per-side`` points a side, multimask) and detector boxes (MobileSAMv2-style,
one box one mask, one batched decoder call), the boxes being those of the grid's own masks, so
that both find the same objects. ``--sources-only`` skips the comparison with the official package.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from official_amg import install_torchvision_stand_in  # noqa: E402

from persam.backbones.sam import SamBackbone  # noqa: E402
from persam.everything import BoxMaskGenerator, generate_masks  # noqa: E402
from persam.models.sam import sam_from_config  # noqa: E402

PIXEL = dict(pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
BASE = dict(pred_iou_thresh=0.05, stability_score_thresh=0.4, stability_score_offset=0.01)
SETTINGS = {
    "grid 12, nms 0.7": dict(points_per_side=12),
    "grid 12, keep all": dict(points_per_side=12, box_nms_thresh=1.0),
    "grid 6 + 1 crop layer, regions 100": dict(
        points_per_side=6, crop_n_layers=1, min_mask_region_area=100, box_nms_thresh=1.0, crop_nms_thresh=1.0
    ),
}


class _Patch:
    """``monkeypatch``'s ``setitem`` / ``delitem`` for a script (nothing to undo)."""

    def setitem(self, mapping, key, value):
        mapping[key] = value

    def delitem(self, mapping, key):
        mapping.pop(key, None)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tiny_models(official):
    shared = Path(os.environ.get("PERSAM_SHARED", ROOT.parent / "shared")) / "fixtures" / "sam"
    cfg = json.loads((shared / "tiny_config.json").read_text())
    state = torch.load(shared / "tiny_state_dict.pt", weights_only=True)
    ours = sam_from_config(cfg)
    ours.load_state_dict(state)
    if official is None:
        return ours.eval(), None, None
    m = official.modeling
    ref = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=4,
            embed_dim=64,
            img_size=1024,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=4,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1, 3],
            window_size=14,
            out_chans=64,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=64, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=64, mlp_dim=128, num_heads=4),
            transformer_dim=64,
            iou_head_depth=3,
            iou_head_hidden_dim=64,
        ),
        **PIXEL,
    )
    ref.load_state_dict(state)
    mixed = m.Sam(ours.image_encoder, ours.prompt_encoder, ours.mask_decoder, **PIXEL)
    return ours.eval(), ref.eval(), mixed.eval()


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def compare_sources(backbone, image: np.ndarray, repeats: int, points_per_side: int = 16) -> None:
    """Grid against boxes, images/s, median of ``repeats`` (each run encodes the image again)."""
    # Every surviving mask kept (no NMS): the random model's masks overlap, and NMS would leave one.
    options = dict(BASE, points_per_side=points_per_side, box_nms_thresh=1.0)
    records = generate_masks(backbone, image, **options)
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r.bbox for r in records)], np.float64)
    scores = np.array([r.predicted_iou for r in records])
    boxes_gen = BoxMaskGenerator(backbone, lambda im: (boxes, scores))

    def grid():
        backbone.reset_image()
        return generate_masks(backbone, image, **options)

    def from_boxes():
        backbone.reset_image()
        return boxes_gen.generate(image)

    t_grid, a = median_time(grid, repeats)
    t_box, b = median_time(from_boxes, repeats)
    print(f"\nmask sources, {len(boxes)} objects, median of {repeats} (encoder pass included)")
    print(f"{'source':36} {'s/image':>8} {'images/s':>9} {'masks':>6}")
    grid_label = f"grid {points_per_side}x{points_per_side}, keep all ({points_per_side**2} points)"
    print(f"{grid_label:36} {t_grid:8.2f} {1 / t_grid:9.2f} {len(a):6d}")
    print(f"{'boxes (one prompt per box)':36} {t_box:8.2f} {1 / t_box:9.2f} {len(b):6d}")
    print(f"{'boxes / grid':36} {t_grid / t_box:7.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sources-only", action="store_true", help="only grid against boxes")
    ap.add_argument("--points-per-side", type=int, default=16, help="grid of the sources comparison")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sources_only:
        ours = tiny_models(None)[0]
        print(f"CPU: {cpu_name()}, {torch.get_num_threads()} thread(s); torch {torch.__version__}")
        with torch.inference_mode():
            backbone = SamBackbone(ours, name="tiny", checkpoint_id="fixture")
            compare_sources(backbone, data.coffee(), args.repeats, args.points_per_side)
        return 0
    install_torchvision_stand_in(_Patch())
    official = importlib.import_module("segment_anything")
    ours, ref, mixed = tiny_models(official)
    image = np.ascontiguousarray(data.coffee())  # 400 x 600
    backbone = SamBackbone(ours, name="tiny", checkpoint_id="fixture")
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} thread(s); torch {torch.__version__}")
    print(f"tiny random SAM (fixtures), image {image.shape[0]}x{image.shape[1]}, median of {args.repeats}")
    print(
        f"{'setting':36} {'official s':>10} {'official+our modules s':>22} {'ours s':>7} {'speed-up':>8} same"
    )
    with torch.inference_mode():
        for label, setting in SETTINGS.items():
            options = dict(BASE, **setting, output_mode="coco_rle")
            t_ref, _ = median_time(
                lambda o=options: official.SamAutomaticMaskGenerator(ref, **o).generate(image), args.repeats
            )
            t_mix, theirs = median_time(
                lambda o=options: official.SamAutomaticMaskGenerator(mixed, **o).generate(image), args.repeats
            )
            t_ours, mine = median_time(
                lambda o=options: [r.as_dict() for r in generate_masks(backbone, image, **o)], args.repeats
            )
            same = mine == theirs
            print(
                f"{label:36} {t_ref:10.2f} {t_mix:22.2f} {t_ours:7.2f} {t_mix / t_ours:7.1f}x  "
                f"{'yes' if same else 'NO'} ({len(mine)} masks)"
            )
        compare_sources(backbone, image, args.repeats, args.points_per_side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
