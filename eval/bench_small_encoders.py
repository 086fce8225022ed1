"""MobileSAM (TinyViT) and EfficientSAM-Ti/S image encoders: ours against the official modules and
against an earlier persam revision, same random weights, same process, interleaved runs.

    mkdir -p /tmp/official && cd /tmp/official
    git -C MobileSAM archive HEAD mobile_sam/modeling/tiny_vit_sam.py | tar x
    git -C EfficientSAM archive HEAD efficient_sam/efficient_sam_encoder.py | tar x
    python eval/bench_small_encoders.py --official /tmp/official --baseline-ref main --repeats 3

``--official`` is a folder holding ``mobile_sam/modeling/tiny_vit_sam.py`` and/or
``efficient_sam/efficient_sam_encoder.py`` (neither is a dependency of persam; each file is loaded
on its own, TinyViT's ``timm`` helpers are replaced by small stand-ins). ``--baseline-ref`` names a
git revision of this repository whose ``persam`` package is unpacked into a temporary folder as
``persam_baseline``. Missing pieces are skipped. Each round runs every variant once (so a busy
machine slows them alike); the table gives medians over the rounds, the largest |difference| of
each output from the official one (or from ours without it) and the speed-up of ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from persam.models.quantization import quantize_linear_int8
from persam.registry import build_module

REPO = Path(__file__).resolve().parents[1]


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stub_timm() -> None:
    """The three ``timm`` helpers TinyViT imports, for a machine without timm (inference only)."""
    if importlib.util.find_spec("timm") is not None:
        return
    layers = types.ModuleType("timm.models.layers")

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float | None = None) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    layers.DropPath = DropPath
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    for name, mod in {
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": layers,
        "timm.models.registry": registry,
    }.items():
        sys.modules.setdefault(name, mod)


def official_encoder(model: str, root: Path | None) -> nn.Module | None:
    """The official image encoder of ``model`` from the files under ``root``, or None."""
    if root is None:
        return None
    if model == "mobile_sam_vit_t":
        path = root / "mobile_sam" / "modeling" / "tiny_vit_sam.py"
        if not path.is_file():
            return None
        _stub_timm()
        mod = _load_file("_official_tiny_vit", path)
        return mod.TinyViT(
            img_size=1024,
            in_chans=3,
            num_classes=1000,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
    path = root / "efficient_sam" / "efficient_sam_encoder.py"
    if not path.is_file():
        return None
    mod = _load_file("_official_efficient_sam_encoder", path)
    width, heads = {"efficient_sam_vit_t": (192, 3), "efficient_sam_vit_s": (384, 6)}[model]
    return mod.ImageEncoderViT(
        img_size=1024,
        patch_size=16,
        in_chans=3,
        patch_embed_dim=width,
        normalization_type="layer_norm",
        depth=12,
        num_heads=heads,
        mlp_ratio=4.0,
        neck_dims=[256, 256],
        act_layer=nn.GELU,
    )


def baseline_package(ref: str | None, tmp: Path) -> types.ModuleType | None:
    """``persam`` at git revision ``ref`` of this repository, importable as ``persam_baseline``."""
    if ref is None:
        return None
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "persam"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        print(f"baseline {ref}: not available ({archive.stderr.decode().strip()})")
        return None
    subprocess.run(["tar", "x", "-C", str(tmp)], input=archive.stdout, check=True)
    shutil.move(tmp / "persam", tmp / "persam_baseline")
    for f in (tmp / "persam_baseline").rglob("*.py"):
        text = f.read_text()
        f.write_text(
            text.replace("from persam.", "from persam_baseline.").replace(
                "import persam.", "import persam_baseline."
            )
        )
    sys.path.insert(0, str(tmp))
    import persam_baseline.registry

    return persam_baseline.registry


def _randomize(module: nn.Module, seed: int) -> None:
    """Non-trivial norms, biases and BatchNorm statistics (their defaults make folding exact)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("attention_biases"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def _time(fn: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call; CPU time is the steadier one on a shared machine."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def bench_model(model: str, args: argparse.Namespace, baseline: types.ModuleType | None) -> list[str]:
    torch.manual_seed(0)
    ours = build_module(model).image_encoder.eval()
    _randomize(ours, 1)
    state = ours.state_dict()
    variants: dict[str, tuple[nn.Module, torch.dtype]] = {"ours float32": (ours, torch.float32)}
    if args.bf16:
        variants["ours bfloat16"] = (ours, torch.bfloat16)
    variants["ours int8"] = (quantize_linear_int8(ours), torch.float32)
    official = official_encoder(model, args.official)
    if official is not None:
        # The official TinyViT keeps its bias index table in the state dict; ours rebuilds it.
        result = official.load_state_dict(state, strict=False)
        unexpected = [k for k in result.missing_keys + result.unexpected_keys if "bias_idxs" not in k]
        if unexpected:
            raise SystemExit(f"{model}: official module does not take our weights: {unexpected[:4]}")
        variants["official float32"] = (official.eval(), torch.float32)
    if baseline is not None:
        base = baseline.build_module(model).image_encoder.eval()
        base.load_state_dict(state)
        variants["baseline float32"] = (base, torch.float32)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))

    def run(name: str) -> torch.Tensor:
        module, dtype = variants[name]
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return module(x).float()

    outputs = {name: run(name) for name in variants}  # also the warm-up
    reference = outputs.get("official float32", outputs["ours float32"])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name in variants:
            times[name].append(_time(lambda name=name: run(name)))
    wall = {name: statistics.median(t[0] for t in ts) for name, ts in times.items()}
    cpu = {name: statistics.median(t[1] for t in ts) for name, ts in times.items()}
    ref_name = "official float32" if "official float32" in variants else "baseline float32"
    rows = []
    for name in variants:
        diff = (outputs[name] - reference).abs().max().item()
        speed = f"{cpu[ref_name] / cpu[name]:7.2f}x" if ref_name in cpu else "      -"
        rows.append(
            f"{model:<20} {name:<17} {1000 * wall[name]:9.0f} {1000 * cpu[name]:9.0f} {speed:>9} {diff:11.2e}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", nargs="+", default=["mobile_sam_vit_t", "efficient_sam_vit_t", "efficient_sam_vit_s"]
    )
    p.add_argument("--official", type=Path, default=None, help="folder with the official module files")
    p.add_argument("--baseline-ref", default=None, help="git revision of persam to compare with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bf16", action="store_true", help="also time ours under bfloat16 autocast")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import platform

    from persam.devices import cpu_native_bf16

    cpu = torch.cpu.get_capabilities().get("cpu_name") if hasattr(torch.cpu, "get_capabilities") else None
    print(
        f"cpu {cpu or platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16 {cpu_native_bf16()}; median of {args.repeats} rounds, 1024x1024"
    )
    head = f"{'model':<20} {'variant':<17} {'wall ms':>9} {'cpu ms':>9} {'vs ref':>9} {'max|d| ref':>11}"
    with tempfile.TemporaryDirectory() as tmp:
        baseline = baseline_package(args.baseline_ref, Path(tmp))
        print(head)
        print("-" * len(head))
        for model in args.models:
            for row in bench_model(model, args, baseline):
                print(row, flush=True)
    print("vs ref: CPU-time speed-up over the official float32 module (or the baseline without it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
