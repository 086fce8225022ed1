"""build_model with a checkpoint: read first, build on the meta device, take the checkpoint's tensors,
recreate the constant buffers; results bit-identical to a normally built and loaded model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import fixture_dir, gradient_scene
from torch import nn

import persam
import persam.weights as w
from persam.backbones.efficient_sam import EfficientSamBackbone
from persam.backbones.sam import SamBackbone
from persam.registry import (
    build_model,
    build_module,
    list_models,
    materialize_constants,
    tiny_efficient_sam_config,
    tiny_mobile_sam_config,
    tiny_sam_config,
)

SAM_CONFIG = tiny_sam_config()
# Non-default pixel statistics: constant buffers must come from the config, not the class defaults.
EFFICIENT_SAM_CONFIG = tiny_efficient_sam_config()
EFFICIENT_SAM_CONFIG["config"].update(pixel_mean=[0.4, 0.5, 0.6], pixel_std=[0.2, 0.25, 0.3])
CONFIGS = {"sam": SAM_CONFIG, "mobile_sam": tiny_mobile_sam_config(), "efficient_sam": EFFICIENT_SAM_CONFIG}


@pytest.fixture(autouse=True)
def _setup(_deterministic_threads, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    # checkpoint_identity remembers digests in the cache folder: keep it out of the user's.
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "cache"))


def _trained_like(cfg: dict, seed: int = 0) -> nn.Module:
    """A seeded module with every parameter moved off its default value (zeros / ones included)."""
    torch.manual_seed(seed)
    module = build_module(copy.deepcopy(cfg))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


def _outputs(bb, seeds: tuple[int, ...] = (0, 1)) -> list[torch.Tensor]:
    """Features and decoder outputs for a point, a box, and both, on the images of ``seeds``."""
    out = []
    for seed in seeds:
        bb.set_image(gradient_scene(seed=seed))
        out.append(bb.features)
        pts = torch.tensor([[[90.0, 50.0], [20.0, 100.0]]])
        lab = torch.tensor([[1, 0]])
        box = torch.tensor([[60.0, 20.0, 130.0, 80.0]])
        for pc, pl, bx in ((pts, lab, None), (None, None, box), (pts, lab, box)):
            dec = bb.decode(pc, pl, boxes=bx, multimask_output=True)
            out += [dec.low_res_logits, dec.iou_predictions, bb.postprocess(dec.low_res_logits)]
    return out


def _assert_same_model(loaded: nn.Module, reference: nn.Module) -> None:
    buffers = dict(loaded.named_buffers())
    for key, t in reference.named_buffers():  # non-persistent ones included
        assert torch.equal(buffers[key], t) and buffers[key].dtype == t.dtype, key
    params = dict(loaded.named_parameters())
    for key, t in reference.named_parameters():
        assert torch.equal(params[key], t), key
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert not any(t.is_meta for t in tensors)
    assert all(t.device.type == "cpu" for t in tensors)


def _assert_bit_identical(a, b, seeds: tuple[int, ...] = (0, 1)) -> None:
    for x, y in zip(_outputs(a, seeds), _outputs(b, seeds), strict=True):
        assert x.shape == y.shape and torch.equal(x, y)


def test_tiny_sam_fixture_loads_bit_identically(monkeypatch):
    d = fixture_dir("sam")
    cfg = json.loads((d / "tiny_config.json").read_text())
    reference = build_module(copy.deepcopy(cfg)).eval()
    reference.load_state_dict(w.read_state_dict(d / "tiny_state_dict.pt"), strict=True)

    read = {}
    real_read = w.read_state_dict

    def remembering_read(path):
        read["state"] = real_read(path)
        return read["state"]

    monkeypatch.setattr(w, "read_state_dict", remembering_read)
    bb = build_model(copy.deepcopy(cfg), checkpoint=d / "tiny_state_dict.pt")
    _assert_same_model(bb.model, reference)
    # The module holds the checkpoint's own tensors: the weights exist once.
    key = "image_encoder.patch_embed.proj.weight"
    assert bb.model.get_parameter(key).data_ptr() == read["state"][key].data_ptr()
    _assert_bit_identical(bb, SamBackbone(reference, name="tiny", checkpoint_id="reference"), seeds=(0,))


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_checkpoint_build_is_bit_identical_to_a_loaded_module(family, tmp_path):
    cfg = CONFIGS[family]
    source = _trained_like(cfg, seed=3)
    path = tmp_path / f"{family}.pth"
    torch.save(source.state_dict(), path)

    bb = build_model(copy.deepcopy(cfg), checkpoint=path)
    backbone_cls = EfficientSamBackbone if family == "efficient_sam" else SamBackbone
    assert type(bb) is backbone_cls and bb.name == cfg["name"]
    assert bb.checkpoint_id == w.file_sha256(path)
    assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training

    # The usual way: a (differently seeded) module built normally, then copied into.
    torch.manual_seed(99)
    reference = build_module(copy.deepcopy(cfg)).eval()
    reference.load_state_dict(torch.load(path, weights_only=True), strict=True)
    _assert_same_model(bb.model, reference)
    _assert_bit_identical(bb, backbone_cls(reference, name="reference", checkpoint_id="reference"))


def test_half_precision_checkpoint_gives_float32_weights(tmp_path):
    source = _trained_like(SAM_CONFIG)
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}, path)
    bb = build_model(copy.deepcopy(SAM_CONFIG), checkpoint=path)
    for key, t in source.state_dict().items():
        got = bb.model.state_dict()[key]
        assert got.dtype == t.dtype and torch.equal(got, t.half().to(t.dtype) if t.is_floating_point() else t)


def test_missing_or_bad_checkpoint_fails_before_building(tmp_path, monkeypatch):
    import persam.models.sam as sam_models

    built = []
    real = sam_models.sam_from_config
    monkeypatch.setattr(sam_models, "sam_from_config", lambda cfg: built.append(1) or real(cfg))
    with pytest.raises(w.WeightsError, match="not found"):
        build_model(copy.deepcopy(SAM_CONFIG), checkpoint=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(w.WeightsError, match="bad.pth"):
        build_model(copy.deepcopy(SAM_CONFIG), checkpoint=bad)
    with pytest.raises(w.WeightsError, match="needs a model name"):
        build_model(copy.deepcopy(SAM_CONFIG), checkpoint="auto")
    assert built == []


def test_model_argument_is_checked_before_any_download(monkeypatch):
    monkeypatch.setattr(w, "download", lambda *a, **k: pytest.fail("download attempted"))
    with pytest.raises(ValueError, match="unknown model 'sam_vit_q'"):
        build_model("sam_vit_q", checkpoint="auto")


def test_checkpoint_for_another_model_is_refused(tmp_path):
    path = tmp_path / "mobile.pth"
    torch.save(_trained_like(CONFIGS["mobile_sam"]).state_dict(), path)
    with pytest.raises(w.WeightsError, match="mobile.pth is not a tiny_random_sam checkpoint"):
        build_model(copy.deepcopy(SAM_CONFIG), checkpoint=path)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_random_weights_are_the_seeded_default_initialisation(family):
    cfg = CONFIGS[family]
    state = torch.random.get_rng_state()
    bb = build_model(copy.deepcopy(cfg), checkpoint="none", seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    assert bb.checkpoint_id == f"random:{cfg['name']}:5"
    torch.manual_seed(5)
    _assert_same_model(bb.model, build_module(copy.deepcopy(cfg)))


def test_materialize_constants_names_a_buffer_nothing_provides():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(2))
            self.register_buffer("table", torch.arange(3), persistent=False)

    with torch.device("meta"):
        module = Odd()
    module.load_state_dict({"weight": torch.ones(2)}, assign=True)
    with pytest.raises(RuntimeError, match="buffer table"):
        materialize_constants(module)


def test_every_registered_model_has_an_official_checkpoint():
    assert list_models() == sorted(w.checkpoint_names())
    assert persam.list_models is list_models


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_checkpoint_build_on_cuda_has_every_tensor_there(family, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare float32 with float32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cfg = CONFIGS[family]
    path = tmp_path / f"{family}.pth"
    torch.save(_trained_like(cfg).state_dict(), path)
    on_gpu = build_model(copy.deepcopy(cfg), checkpoint=path, device="cuda")
    assert all(t.is_cuda for t in [*on_gpu.model.parameters(), *on_gpu.model.buffers()])
    on_cpu = build_model(copy.deepcopy(cfg), checkpoint=path)
    for x, y in zip(_outputs(on_gpu, (0,)), _outputs(on_cpu, (0,)), strict=True):
        torch.testing.assert_close(x.cpu(), y, atol=1e-3, rtol=1e-3)


def test_random_test_models_are_buildable_by_name_but_not_listed():
    from persam.registry import random_model_config, random_model_names

    assert random_model_names() == [
        "tiny_random_efficient_sam",
        "tiny_random_mobile_sam",
        "tiny_random_sam",
        "tiny_random_sam2",
    ]
    assert not set(random_model_names()) & set(list_models())
    for name in random_model_names():
        bb = build_model(name, checkpoint="none")
        assert bb.name == name and bb.checkpoint_id == f"random:{name}:0"
    # Each call returns a fresh copy: editing one does not change the next.
    cfg = random_model_config("tiny_random_sam")
    cfg["image_encoder"]["depth"] = 99
    assert random_model_config("tiny_random_sam")["image_encoder"]["depth"] == 2
    with pytest.raises(ValueError, match="unknown random test model"):
        random_model_config("nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_device_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        build_model("tiny_random_sam", device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        build_model("tiny_random_sam", device="gpu0")
