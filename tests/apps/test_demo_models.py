"""The web demo's model settings through a launched server: missing checkpoints, model config
JSON files with random weights, bfloat16, and bad model values — each a readable message."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import gradio_client
import pytest
import torch
from PIL import Image
from test_demo import Data, H, Server, W, assert_error, assert_mask_zip, demo, make_data, segment, start


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return make_data(tmp_path_factory.mktemp("demo-data"))


def test_missing_checkpoint_is_a_message_not_a_stack_trace(
    tmp_path: Path, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "empty-cache"))
    app, srv = start(tmp_path / "work", random_model=False)
    try:
        f = gradio_client.handle_file
        for checkpoint, words in (
            ("", ("no checkpoint for sam_vit_h in the cache", "persam weights download sam_vit_h")),
            (str(tmp_path / "nope.pth"), ("checkpoint file not found", "nope.pth")),
        ):
            *_, status = srv.client.predict(
                f(str(data.ref)),
                f(str(data.ref_mask)),
                "",
                "PerSAM",
                [f(str(data.targets[0]))],
                "sam_vit_h",
                checkpoint,
                "cpu",
                api_name="/segment_images",
            )
            assert_error(status, *words)
        _, _, status = srv.client.predict(
            f(str(data.video)), f(str(data.first_mask)), "", "PerSAM", "efficient_sam_vit_t", "", "auto",
            api_name="/track_video",
        )  # fmt: skip
        assert_error(status, "persam weights download efficient_sam_vit_t")
    finally:
        app.close()


@pytest.fixture(scope="module")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SAM config (windowed attention only, so one encoder pass takes milliseconds)."""
    path = tmp_path_factory.mktemp("configs") / "tiny_sam.json"
    path.write_text(json.dumps({**demo.RANDOM_MODEL_CONFIG, "name": "tiny_json_sam"}))
    return path


@pytest.fixture(scope="module")
def config_server(tmp_path_factory: pytest.TempPathFactory, model_config: Path):
    """The app as ``python -m apps.demo --model CONFIG.json --checkpoint none --device cpu`` starts it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    argv = ["--model", str(model_config), "--checkpoint", "none", "--device", "cpu"]
    app, srv = start(tmp_path_factory.mktemp("demo-config-work"), random_model=False, argv=argv)
    try:
        yield srv
    finally:
        app.close()
        torch.set_num_threads(threads)


def test_model_config_json_with_random_weights_serves_the_images_flow(
    config_server: Server, data: Data, model_config: Path
) -> None:
    info = config_server.client.view_api(print_info=False, return_format="dict")
    params = {p["label"]: p for p in info["named_endpoints"]["/segment_images"]["parameters"]}
    assert params["Model"]["parameter_default"] == str(model_config)
    assert params["Precision"]["parameter_default"] == demo.DEFAULT_DTYPE
    with urllib.request.urlopen(config_server.url.rstrip("/") + "/config", timeout=10) as r:
        config = json.loads(r.read().decode("utf-8"))
    dropdown = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "model")
    assert str(model_config) in [value for _, value in dropdown["props"]["choices"]]

    gallery, zip_path, coco_path, _, _, status = segment(
        config_server, data.ref, data.ref_mask, targets=data.targets, settings=()
    )
    assert status.startswith("Segmented 3 image(s) with PerSAM.")
    assert "masks are meaningless" in status  # random weights: said with every result
    assert len(gallery) == 3
    assert_mask_zip(zip_path, data.target_sizes)
    model = config_server.engine.cache.get(demo.ModelSettings(str(model_config), "none", "cpu"))
    assert model.name == "tiny_json_sam" and model.checkpoint_id.startswith("random:")

    view, mask_path, status = config_server.client.predict(
        gradio_client.handle_file(str(data.ref)), "[[60, 45, 1]]", api_name="/reference_mask"
    )
    assert status.startswith("Reference mask:") and "masks are meaningless" in status
    with Image.open(mask_path) as im:
        assert im.size == (W, H)


def test_bfloat16_precision_is_used_and_cached_separately(
    config_server: Server, data: Data, model_config: Path
) -> None:
    cache = config_server.engine.cache
    settings = (str(model_config), "none", "cpu")
    *_, status = segment(config_server, data.ref, data.ref_mask, targets=data.targets[:1], settings=settings)
    assert status.startswith("Segmented 1 image(s)")
    fp32 = cache.get(demo.ModelSettings(*settings, "float32"))
    gallery, zip_path, coco_path, _, _, status = segment(
        config_server, data.ref, data.ref_mask, targets=data.targets[:2], settings=(*settings, "bfloat16")
    )
    assert status.startswith("Segmented 2 image(s)") and "⚠️ Unexpected" not in status
    assert len(gallery) == 2
    assert_mask_zip(zip_path, {t.name: data.target_sizes[t.name] for t in data.targets[:2]})
    bf16 = cache.get(demo.ModelSettings(*settings, "bfloat16"))
    assert bf16 is not fp32 and bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32


def test_bad_model_values_give_messages_and_the_app_keeps_serving(
    tmp_path: Path, data: Data, model_config: Path
) -> None:
    torch.set_num_threads(1)
    app, srv = start(tmp_path / "work", random_model=False, argv=["--model", "sam_vit_q", "--device", "cpu"])
    try:
        *_, status = segment(srv, data.ref, data.ref_mask, targets=data.targets[:1], settings=())
        assert_error(status, "unknown model 'sam_vit_q'", "sam_vit_b", "tiny_random_sam", "json")

        not_json = tmp_path / "broken.json"
        not_json.write_text('{"image_encoder": ')
        not_sam = tmp_path / "other.json"
        not_sam.write_text('{"layers": 3}')
        for model, checkpoint, words in (
            (str(tmp_path / "missing.json"), "none", ("model config file not found", "missing.json")),
            (str(not_json), "none", ("broken.json", "not valid json")),
            (str(not_sam), "none", ("other.json", "unrecognised model config")),
            (str(model_config), "", ("no official checkpoint", "none")),  # a config has no cached file
            ("tiny_random_sam", "auto", ("tiny_random_sam has no official checkpoint",)),
        ):
            *_, status = segment(
                srv, data.ref, data.ref_mask, targets=data.targets[:1], settings=(model, checkpoint, "cpu")
            )
            assert_error(status, *words)

        gallery, *_, status = segment(
            srv,
            data.ref,
            data.ref_mask,
            targets=data.targets[:1],
            settings=("tiny_random_sam", "none", "cpu"),
        )
        assert status.startswith("Segmented 1 image(s)") and "masks are meaningless" in status
        assert len(gallery) == 1
    finally:
        app.close()
