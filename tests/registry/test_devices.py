"""persam.devices: one resolver of ``--device`` / ``--dtype`` for the API, the CLI and the demo."""

from __future__ import annotations

import argparse

import pytest
import torch

from persam.cli.options import CommandError, positive_int
from persam.cli.options import resolve_device as cli_resolve_device
from persam.devices import resolve_device, resolve_dtype
from persam.errors import InputError


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_picks_the_best_available_device(no_accelerator: None, monkeypatch) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(" AUTO ") == torch.device("cuda")


def test_named_devices(one_gpu: None) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_unavailable_devices_are_one_line_errors(no_accelerator: None) -> None:
    cases = {
        "cuda": "device cuda: CUDA is not available here (use cpu or auto)",
        "cuda:1": "device cuda:1: CUDA is not available here",
        "mps": "device mps: Apple MPS is not available here (use cpu or auto)",
    }
    for device, message in cases.items():
        with pytest.raises(InputError) as info:
            resolve_device(device)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_missing_gpu_index_says_how_many_there_are(one_gpu: None) -> None:
    with pytest.raises(InputError, match=r"^--device cuda:3: only 1 CUDA device\(s\) here$"):
        resolve_device("cuda:3", option="--device")


def test_unknown_devices(no_accelerator: None) -> None:
    for device in ("gpu0", "cuda0", ""):
        with pytest.raises(
            InputError, match=r"unknown device .*expected auto, cpu, cuda, cuda:N or mps"
        ) as info:
            resolve_device(device)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="unsupported device type"):
        resolve_device("xpu")


def test_the_cli_names_its_option(no_accelerator: None) -> None:
    assert cli_resolve_device("auto") == "cpu"
    with pytest.raises(CommandError, match=r"^--device cuda: CUDA is not available here"):
        cli_resolve_device("cuda")


def test_dtypes() -> None:
    for text, dtype in (
        ("float32", torch.float32),
        ("FP32", torch.float32),
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        (" float16", torch.float16),
        ("fp16", torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ):
        assert resolve_dtype(text) is dtype
    assert resolve_dtype("int8") is torch.int8 and resolve_dtype("auto") is torch.float32
    with pytest.raises(
        InputError, match=r"unknown dtype 'int4' \(expected auto, float32, bfloat16, float16 or int8\)"
    ):
        resolve_dtype("int4")
    with pytest.raises(InputError, match="dtype torch.float64: unsupported dtype"):
        resolve_dtype(torch.float64)
    with pytest.raises(InputError, match="unknown --dtype 'half'"):
        resolve_dtype("half", option="--dtype")


def test_positive_int() -> None:
    assert positive_int("3") == 3 and positive_int("1") == 1
    for text in ("0", "-2", "x", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer"):
            positive_int(text)
