"""``dtype="int8"``: the image encoder's linear layers dynamically quantized on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import persam
from persam.errors import InputError
from persam.models.quantization import Int8Linear, is_int8_quantized, quantize_linear_int8

pytestmark = pytest.mark.skipif(
    "none" in torch.backends.quantized.supported_engines
    and len(torch.backends.quantized.supported_engines) == 1,
    reason="this torch build has no quantized CPU engine",
)

IMAGE = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("name", "min_cosine"),
    [
        ("tiny_random_sam", 0.999),
        ("tiny_random_mobile_sam", 0.995),
        ("tiny_random_efficient_sam", 0.999),
        ("tiny_random_sam2", 0.999),
    ],
)
def test_int8_model_builds_runs_and_stays_close_to_float32(name: str, min_cosine: float) -> None:
    ref = persam.build_model(name, checkpoint=None, dtype="float32")
    q = persam.build_model(name, checkpoint=None, dtype="int8")
    assert q.dtype is torch.int8 and ref.dtype is torch.float32
    assert is_int8_quantized(q.model.image_encoder) and not is_int8_quantized(ref.model.image_encoder)
    # Only the encoder is quantized: the decoder's layers stay float32.
    assert not is_int8_quantized(q.model.mask_decoder)
    ref.set_image(IMAGE)
    q.set_image(IMAGE)
    assert q.features.dtype == torch.float32 and q.features.shape == ref.features.shape
    a, b = ref.features.flatten().double(), q.features.flatten().double()
    assert not torch.equal(a, b)  # it really computes in int8
    assert torch.nn.functional.cosine_similarity(a, b, dim=0).item() >= min_cosine
    masks, scores = q.predict(np.array([[64.0, 48.0]]), np.array([1]))[:2]
    assert masks.shape == (3, 96, 128) and np.isfinite(scores).all()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(50, 24), (2, 7, 24), (1, 5, 6, 24)])
def test_int8_linear_stays_close_to_the_float_layer(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(24, 40, bias=bias)
    q = Int8Linear.from_linear(linear)
    assert (q.bias is None) is not bias and q.in_features == 24 and q.out_features == 40
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = linear(x), q(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert ((got - expected).norm() / expected.norm()).item() < 0.02


def test_int8_linear_quantizes_each_token_on_its_own_range() -> None:
    """A token 1000x larger leaves the other tokens' outputs unchanged (one scale per tensor
    would spend the levels on it) and its own output scales with it."""
    torch.manual_seed(0)
    linear = nn.Linear(32, 16, bias=False)
    q = Int8Linear.from_linear(linear)
    x = torch.randn(64, 32)
    loud = x.clone()
    loud[0] *= 1000
    with torch.no_grad():
        base, with_loud = q(x), q(loud)
    torch.testing.assert_close(with_loud[1:], base[1:], rtol=0, atol=0)
    torch.testing.assert_close(with_loud[0], 1000 * base[0], rtol=1e-5, atol=0)
    # The per-tensor scheme of torch.ao's dynamic quantization loses the quiet tokens.
    per_tensor = torch.ao.nn.quantized.dynamic.Linear.from_float(_with_qconfig(linear))
    with torch.no_grad():
        rel = (per_tensor(loud)[1:] - linear(x)[1:]).norm() / linear(x)[1:].norm()
        ours = (with_loud[1:] - linear(x)[1:]).norm() / linear(x)[1:].norm()
    assert rel > 0.1 > 0.02 > ours


def _with_qconfig(linear: nn.Linear) -> nn.Linear:
    from torch.ao.quantization import per_channel_dynamic_qconfig

    linear.qconfig = per_channel_dynamic_qconfig
    return linear


def test_int8_linear_maps_a_token_of_zeros_to_the_bias() -> None:
    """Window padding is zeros; the SAM 2 trunk writes the qkv bias there instead of projecting it."""
    linear = nn.Linear(8, 6)
    q = Int8Linear.from_linear(linear)
    x = torch.randn(3, 8)
    x[1] = 0
    with torch.no_grad():
        out = q(x)
    torch.testing.assert_close(out[1], linear.bias.detach(), rtol=0, atol=0)
    assert torch.isfinite(out).all()


def test_int8_sam2_block_with_padded_windows() -> None:
    """The Hiera block reads ``qkv.bias`` to fill padded windows: the int8 layer keeps it a tensor."""
    from persam.models.sam2.hiera import MultiScaleBlock

    torch.manual_seed(0)
    block = MultiScaleBlock(dim=16, dim_out=16, num_heads=2, window_size=4).eval()
    q = quantize_linear_int8(block)
    assert isinstance(q.attn.qkv, Int8Linear) and isinstance(q.attn.qkv.bias, torch.Tensor)
    x = torch.randn(1, 10, 9, 16)  # 10 x 9 pads to 12 x 12 windows
    with torch.no_grad():
        expected, got = block(x), q(x)
    assert ((got - expected).norm() / expected.norm()).item() < 0.02


def test_int8_quantizes_linear_layers_only() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.Flatten(1), nn.Linear(8 * 4 * 4, 16), nn.GELU(), nn.Linear(16, 4)
    )
    q = quantize_linear_int8(module)
    assert isinstance(q[0], nn.Conv2d) and is_int8_quantized(q) and not is_int8_quantized(module)
    assert isinstance(q[2], Int8Linear) and isinstance(q[4], Int8Linear) and type(module[2]) is nn.Linear
    x = torch.randn(5, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(q(x), module(x), atol=0.05, rtol=0.05)


def test_int8_refuses_a_module_off_the_cpu() -> None:
    with torch.device("meta"):
        module = nn.Linear(4, 4)
    with pytest.raises(
        ValueError, match=r"int8 quantization runs on the CPU only, the module is on \['meta'\]"
    ):
        quantize_linear_int8(module)


def test_dtype_errors_are_one_line() -> None:
    with pytest.raises(
        InputError, match=r"^unknown dtype 'int4' \(expected auto, float32, bfloat16, float16 or int8\)$"
    ):
        persam.build_model("tiny_random_sam", checkpoint=None, dtype="int4")
    with pytest.raises(InputError, match=r"^dtype torch.float64: unsupported dtype"):
        persam.build_model("tiny_random_sam", checkpoint=None, dtype=torch.float64)


def test_cli_int8(tmp_path, capsys) -> None:
    from PIL import Image

    from persam.cli import main

    Image.fromarray(IMAGE).save(tmp_path / "ref.png")
    mask = np.zeros(IMAGE.shape[:2], np.uint8)
    mask[20:60, 30:90] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    args = ["segment", "--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "mask.png")]
    args += [str(tmp_path / "ref.png"), "-o", str(tmp_path / "out"), "--model", "tiny_random_sam"]
    assert main([*args, "--checkpoint", "none", "--device", "cpu", "--dtype", "int8"]) == 0
    assert (tmp_path / "out" / "masks" / "ref.png").is_file()


def test_precision_accuracy_report_has_the_noise_floor(tmp_path, capsys) -> None:
    """``eval/precision_accuracy.py`` on one image: an int8 row and the float32 +-1 grey floor."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    script = Path(__file__).resolve().parents[2] / "eval" / "precision_accuracy.py"
    spec = importlib.util.spec_from_file_location("precision_accuracy", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Image.fromarray(IMAGE).save(tmp_path / "a.png")
    args = ["--models", "tiny_random_efficient_sam", "--dtypes", "int8", "--repeats", "1"]
    assert module.main([*args, "--images", str(tmp_path / "a.png")]) == 0
    summary = capsys.readouterr().out.split("speed vs f32")[1].strip().splitlines()
    assert [line.split()[1] for line in summary] == ["int8", "f32"]
    floor = summary[1].split()
    assert floor[2] == "+-1" and floor[-1] == "-" and 0.5 < float(floor[4]) <= 1.0
