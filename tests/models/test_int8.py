"""``dtype="int8"``: the image encoder's linear layers dynamically quantized on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import persam
from persam.errors import InputError
from persam.models.quantization import is_int8_quantized, quantize_linear_int8

pytestmark = pytest.mark.skipif(
    "none" in torch.backends.quantized.supported_engines
    and len(torch.backends.quantized.supported_engines) == 1,
    reason="this torch build has no quantized CPU engine",
)

IMAGE = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("name", "min_cosine"),
    [("tiny_random_sam", 0.999), ("tiny_random_mobile_sam", 0.97), ("tiny_random_efficient_sam", 0.999)],
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
    masks, scores, _, _ = q.predict(np.array([[64.0, 48.0]]), np.array([1]))
    assert masks.shape == (3, 96, 128) and np.isfinite(scores).all()


def test_int8_quantizes_linear_layers_only() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.Flatten(1), nn.Linear(8 * 4 * 4, 16), nn.GELU(), nn.Linear(16, 4)
    )
    q = quantize_linear_int8(module)
    assert isinstance(q[0], nn.Conv2d) and is_int8_quantized(q) and not is_int8_quantized(module)
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
