"""Our SAM image encoder against the reference implementation, same weights, same machine.

    pip download --no-deps segment-anything==1.0 -d /tmp/ref && unzip -q /tmp/ref/*.whl -d /tmp/ref
    python eval/bench_vs_reference.py --reference /tmp/ref --model sam_vit_b --repeats 2

``--reference`` is a folder holding an unpacked ``segment_anything`` package (it is not a
dependency of persam and is never imported from the environment). Only its ``modeling`` sub-package
is loaded, straight from the files, so torchvision is not needed. Both encoders get the same random
weights; the script checks that their embeddings agree, then times float32 and bfloat16 autocast
(``--dtypes``) in interleaved rounds, printing each round as it ends, and the medians with the
speed-ups over the reference in the first precision.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from persam.registry import build_module


def load_reference_modeling(root: Path):
    """``segment_anything.modeling`` of the tree under ``root``, imported without its parent package."""
    modeling = root / "segment_anything" / "modeling"
    if not (modeling / "image_encoder.py").is_file():
        raise SystemExit(f"{root}: no segment_anything/modeling/image_encoder.py below this folder")
    spec = importlib.util.spec_from_file_location(
        "_reference_modeling", modeling / "__init__.py", submodule_search_locations=[str(modeling)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def reference_encoder(modeling, ours: torch.nn.Module) -> torch.nn.Module:
    """The reference ImageEncoderViT with the hyper-parameters and weights of ``ours``."""
    blocks = ours.blocks
    attn = blocks[0].attn
    global_idx = [i for i, b in enumerate(blocks) if b.window_size == 0]
    ref = modeling.ImageEncoderViT(
        depth=len(blocks),
        embed_dim=ours.patch_embed.proj.out_channels,
        img_size=ours.img_size,
        mlp_ratio=blocks[0].mlp.lin1.out_features / blocks[0].mlp.lin1.in_features,
        norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
        num_heads=attn.num_heads,
        patch_size=ours.patch_embed.proj.kernel_size[0],
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_idx,
        window_size=max(b.window_size for b in blocks),
        out_chans=ours.neck[0].out_channels,
    )
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref.eval()


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="folder with an unpacked segment_anything")
    ap.add_argument("--model", default="sam_vit_b", choices=["sam_vit_b", "sam_vit_l", "sam_vit_h"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16"],
        help="precisions to time (bfloat16 is slow on a CPU that emulates it; default both)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours = build_module(args.model).image_encoder.eval()
    with torch.no_grad():  # random rel-pos tables and pos_embed, so that every term is exercised
        for name, p in ours.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                p.normal_(0, 0.2)
    ref = reference_encoder(load_reference_modeling(args.reference), ours)
    x = torch.randn(1, 3, ours.img_size, ours.img_size)
    dtypes = [getattr(torch, d) for d in args.dtypes]
    configs = [
        (label, enc, dtype) for dtype in dtypes for label, enc in (("reference", ref), ("persam", ours))
    ]

    def runner(enc, dtype):
        def run():
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                enc(x)

        return run

    threads = torch.get_num_threads()
    times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    with torch.inference_mode():
        diff = (ours(x) - ref(x)).abs().max().item()
        print(
            f"{args.model} image encoder, CPU, {threads} thread(s); max |ours - reference| {diff:.2e}",
            flush=True,
        )
        # Interleaved rounds, each printed as it ends: a change of load slows every configuration alike,
        # and a long run shows where it is.
        for r in range(args.warmup + args.repeats):
            line = []
            for i, (label, enc, dtype) in enumerate(configs):
                t = _seconds(runner(enc, dtype))
                if r >= args.warmup:
                    times[i].append(t)
                line.append(f"{label} {str(dtype).removeprefix('torch.')} {t:.2f} s")
            kind = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}/{args.repeats}"
            print(f"{kind}: " + ", ".join(line), flush=True)

    medians = [statistics.median(times[i]) for i in range(len(configs))]
    base = medians[0]
    print(f"{'implementation':15} {'dtype':9} {'median s':>9} {'vs reference ' + args.dtypes[0]:>18}")
    for (label, _, dtype), t in zip(configs, medians, strict=True):
        print(f"{label:15} {str(dtype).removeprefix('torch.'):9} {t:9.2f} {base / t:17.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
