"""The model registry: every registered name builds, points at a real checkpoint entry, and config
files name (or imply) their family; a new family slots in with a backbone class and register calls."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import persam
from persam import registry
from persam import weights as w
from persam.backbones.base import Backbone
from persam.backbones.efficient_sam import EfficientSamBackbone
from persam.backbones.sam import SamBackbone
from persam.cli import main
from persam.errors import InputError
from persam.models.efficient_sam import EfficientSam
from persam.models.sam import Sam
from persam.models.sam2 import Sam2
from persam.registry import specs

ALL_MODELS = registry.list_models(include_test_only=True)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by the test are forgotten afterwards."""
    monkeypatch.setattr(specs, "_MODELS", dict(specs._MODELS))
    monkeypatch.setattr(specs, "_FAMILIES", dict(specs._FAMILIES))


def test_listed_models_are_those_with_official_weights() -> None:
    listed = registry.list_models()
    assert listed == sorted(listed)
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam_vit_t", "efficient_sam_vit_t"} <= set(listed)
    for name in listed:
        assert not registry.get_spec(name).test_only and registry.get_spec(name).checkpoint is not None
    test_only = set(ALL_MODELS) - set(listed)
    assert test_only == set(registry.random_model_names())
    assert persam.list_models is registry.list_models and persam.build_model is registry.build_model


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_registered_model_builds(name: str) -> None:
    spec = registry.get_spec(name)
    assert spec.name == name and spec.family in registry.list_families()
    backbone_cls = spec.backbone_class()
    assert issubclass(backbone_cls, Backbone)
    assert backbone_cls is registry.get_family(spec.family).backbone_class()
    if spec.test_only:
        # Small enough to build for real, with random weights and no official checkpoint.
        assert spec.checkpoint is None
        bb = registry.build_model(name, checkpoint="none")
        assert type(bb) is backbone_cls and bb.name == name
        assert not any(t.is_meta for t in bb.model.state_dict().values())
    else:
        assert spec.checkpoint in w.CHECKPOINTS
        with torch.device("meta"):
            module = spec.build_module()
        assert isinstance(module, nn.Module) and all(p.is_meta for p in module.parameters())
        assert hasattr(module, "image_encoder") and hasattr(module, "mask_decoder")


def test_sizes_match_their_families() -> None:
    expected = {"sam": Sam, "efficient_sam": EfficientSam, "sam2": Sam2}
    for name in ALL_MODELS:
        spec = registry.get_spec(name)
        with torch.device("meta"):
            module = spec.build_module()
        assert isinstance(module, expected[spec.family]), name


def test_every_catalogue_entry_belongs_to_a_model() -> None:
    used = {registry.get_spec(n).checkpoint for n in registry.list_models()}
    assert used == set(w.CHECKPOINTS)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown model 'sam_vit_q' \(known: efficient_sam_vit_s, "):
        registry.get_spec("sam_vit_q")
    with pytest.raises(InputError, match="unknown model family 'sam3'.*efficient_sam, sam"):
        registry.get_family("sam3")


def test_registration_rejects_duplicates_and_unknown_families(scratch_registry: None) -> None:
    sam_backbone = "persam.backbones.sam:SamBackbone"
    with pytest.raises(ValueError, match="'sam_vit_b' is already registered"):
        registry.register(
            registry.ModelSpec(name="sam_vit_b", family="sam", backbone=sam_backbone, builder="m:f")
        )
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        registry.register(registry.ModelSpec(name="x", family="nope", backbone=sam_backbone, builder="m:f"))
    with pytest.raises(ValueError, match="exactly one of builder and config"):
        registry.ModelSpec(name="x", family="sam", backbone=sam_backbone)
    with pytest.raises(ValueError, match="'sam' is already registered"):
        registry.register_family(registry.get_family("sam"))


def test_a_new_family_slots_in(scratch_registry: None, tmp_path: Path) -> None:
    """A family is its backbone class plus register calls; names and config files then work
    everywhere a model is accepted."""
    registry.register_family(
        registry.ModelFamily(
            name="sam_like",
            backbone="persam.backbones.sam:SamBackbone",
            from_config="persam.models.sam:sam_from_config",
        )
    )
    registry.register(
        registry.ModelSpec(
            name="sam_like_tiny",
            family="sam_like",
            backbone="persam.backbones.sam:SamBackbone",
            config="persam.registry.configs:tiny_sam_config",
            test_only=True,
        )
    )
    assert "sam_like" in registry.list_families() and "sam_like_tiny" in registry.random_model_names()
    bb = registry.build_model("sam_like_tiny", checkpoint="none")
    assert type(bb) is SamBackbone and bb.name == "sam_like_tiny"
    assert bb.checkpoint_id == "random:sam_like_tiny:0"
    # A config file naming the new family is built by it.
    cfg = {**registry.tiny_sam_config(), "family": "sam_like", "name": "from_file"}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert registry.resolve_model(path).family.name == "sam_like"
    assert registry.build_model(path).name == "from_file"
    # Without a way to recognise its configs, a family is only reached by name.
    assert registry.recognise_family(registry.tiny_sam_config() | {"family": "sam_like"}).name == "sam_like"
    del cfg["family"]
    assert registry.recognise_family(cfg).name == "sam"


# ------------------------------------------------------------------------------ config families
def _write(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def test_config_files_name_their_family(tmp_path: Path) -> None:
    for name in registry.random_model_names():
        cfg = registry.random_model_config(name)
        assert cfg["family"] == registry.get_spec(name).family
    sam = _write(tmp_path / "sam.json", registry.tiny_sam_config())
    assert isinstance(registry.build_module(sam), Sam)
    # The family decides, not the keys: flat EfficientSAM settings are only recognisable by it.
    flat = dict(registry.tiny_efficient_sam_config()["config"])
    flat_path = _write(tmp_path / "flat.json", {**flat, "family": "efficient_sam"})
    choice = registry.resolve_model(flat_path)
    assert choice.family.name == "efficient_sam" and choice.name == "flat"
    assert isinstance(choice.build(), EfficientSam)
    with pytest.raises(InputError, match="flat.json: unrecognised model config"):
        registry.resolve_model(_write(tmp_path / "flat.json", flat))
    # An explicit family is used even when the keys suggest another.
    with pytest.raises(ValueError, match="SAM config is missing the section"):
        registry.build_module({**registry.tiny_efficient_sam_config(), "family": "sam"})


def test_config_files_without_a_family_are_recognised_as_before(tmp_path: Path) -> None:
    sam = {k: v for k, v in registry.tiny_sam_config().items() if k != "family"}
    efficient = {k: v for k, v in registry.tiny_efficient_sam_config().items() if k != "family"}
    mobile = {k: v for k, v in registry.tiny_mobile_sam_config().items() if k != "family"}
    assert registry.resolve_model(_write(tmp_path / "a.json", sam)).family.name == "sam"
    assert registry.resolve_model(_write(tmp_path / "b.json", mobile)).family.name == "sam"
    assert registry.resolve_model(_write(tmp_path / "c.json", efficient)).family.name == "efficient_sam"
    # The reference recordings' EfficientSAM configs also carry "constructor_kwargs".
    assert registry.recognise_family({"constructor_kwargs": {}}).name == "efficient_sam"
    bb = registry.build_model(tmp_path / "c.json")
    assert type(bb) is EfficientSamBackbone and bb.name == "tiny_random_efficient_sam"


def test_unknown_family_in_a_config_file_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "odd.json", {**registry.tiny_sam_config(), "family": "sam9"})
    with pytest.raises(InputError, match=r"odd.json: unknown model family 'sam9' \(expected one of"):
        registry.build_model(path)


def test_config_dicts_are_not_modified() -> None:
    cfg = registry.tiny_efficient_sam_config()
    before = copy.deepcopy(cfg)
    registry.build_module(cfg)
    assert cfg == before


# ------------------------------------------------------------------------------ backbone interface
@pytest.mark.parametrize("family", registry.list_families())
def test_backbone_options_are_keyword_only(family: str) -> None:
    cls = registry.get_family(family).backbone_class()
    decode = inspect.signature(cls.decode).parameters
    assert [p for p, v in decode.items() if v.kind is not inspect.Parameter.KEYWORD_ONLY] == [
        "self",
        "point_coords",
        "point_labels",
    ]
    assert {"boxes", "mask_input", "multimask_output", "attn_sim", "target_embedding"} <= set(decode)
    init = inspect.signature(cls.__init__).parameters
    assert [p for p, v in init.items() if v.kind is not inspect.Parameter.KEYWORD_ONLY] == ["self", "module"]


def test_positional_decoder_options_are_refused() -> None:
    bb = registry.build_model("tiny_random_sam")
    bb.set_image(torch.zeros(64, 48, 3, dtype=torch.uint8).numpy())
    pts, labels, box = (
        torch.tensor([[[10.0, 20.0]]]),
        torch.tensor([[1]]),
        torch.tensor([[5.0, 5.0, 30.0, 40.0]]),
    )
    with pytest.raises(TypeError):
        bb.decode(pts, labels, box)
    assert bb.decode(pts, labels, boxes=box).low_res_logits.shape == (1, 3, 256, 256)
    with pytest.raises(TypeError):
        SamBackbone(bb.model, "tiny", "random")


# ------------------------------------------------------------------------------ the CLI uses it
def test_weights_cli_takes_model_names(scratch_registry: None, persam_home: Path, capsys) -> None:
    registry.register(
        registry.ModelSpec(
            name="my_sam",
            family="sam",
            backbone="persam.backbones.sam:SamBackbone",
            builder="persam.models.sam:sam_vit_b",
            checkpoint="sam_vit_b",
        )
    )
    cached = w.cache_location("sam_vit_b")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert main(["weights", "path", "my_sam"]) == 0
    assert capsys.readouterr().out.strip() == str(cached)
    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["my_sam"].endswith(str(cached)) and "SAM ViT-B" in rows["my_sam"]
    assert main(["info"]) == 0
    assert "my_sam" in next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("models")
    )


def test_cli_lists_only_shipped_commands() -> None:
    from persam.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == [
        "segment",
        "everything",
        "learn",
        "track",
        "eval",
        "export-onnx",
        "weights",
        "info",
    ]
