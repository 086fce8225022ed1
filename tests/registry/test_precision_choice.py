"""``dtype="auto"``: bfloat16 only where the hardware computes in it; warnings for emulated 16-bit
precisions on the CPU; int8 only on the CPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from persam import devices
from persam.cli import main
from persam.cli.options import CommandError
from persam.cli.options import resolve_dtype as cli_resolve_dtype
from persam.devices import EmulatedPrecisionWarning, auto_dtype, proc_cpuinfo_flags, resolve_dtype
from persam.errors import InputError


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_features", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))


@pytest.fixture
def avx2_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_features", lambda: frozenset({"avx", "avx2", "fma3", "f16c"}))


def test_auto_on_a_cpu_with_native_bf16(bf16_cpu: None) -> None:
    assert auto_dtype("cpu") is torch.bfloat16
    assert resolve_dtype("auto", "cpu") is torch.bfloat16
    assert resolve_dtype(None, torch.device("cpu")) is torch.bfloat16


def test_auto_on_a_cpu_that_emulates_bf16(avx2_cpu: None) -> None:
    assert auto_dtype("cpu") is torch.float32
    assert resolve_dtype(" AUTO ", "cpu") is torch.float32


def test_auto_without_a_device_is_float32(bf16_cpu: None) -> None:
    assert resolve_dtype("auto") is torch.float32


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_on_cuda_follows_the_gpus_bf16_support(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert auto_dtype("cuda") is (torch.bfloat16 if bf16 else torch.float32)
    assert auto_dtype("cuda:0") is (torch.bfloat16 if bf16 else torch.float32)


def test_auto_on_mps_is_float32(bf16_cpu: None) -> None:
    assert auto_dtype("mps") is torch.float32


def test_forced_bf16_on_an_emulating_cpu_warns_once_in_one_line(avx2_cpu: None) -> None:
    with pytest.warns(EmulatedPrecisionWarning) as record:
        assert resolve_dtype("bf16", "cpu", option="--dtype") is torch.bfloat16
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and message.startswith("--dtype bfloat16: this CPU has no native bfloat16")
    with pytest.warns(EmulatedPrecisionWarning, match="float16"):
        resolve_dtype("float16", "cpu")


def test_native_or_float32_choices_do_not_warn(bf16_cpu: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
        assert resolve_dtype("float32", "cpu") is torch.float32
        assert resolve_dtype("int8", "cpu") is torch.int8
        assert resolve_dtype("bfloat16") is torch.bfloat16  # no device: nothing to judge


def test_int8_is_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=r"^--dtype int8: int8 runs on the CPU only \(on cuda use auto"):
        resolve_dtype("int8", "cuda", option="--dtype")
    with pytest.raises(InputError, match="int8 runs on the CPU only"):
        resolve_dtype(torch.int8, "mps")


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 AVX512_BF16 amx_tile\n\nflags : other\n"
    )
    assert proc_cpuinfo_flags(str(path)) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    arm = tmp_path / "arm"
    arm.write_text("Features\t: fp asimd bf16 i8mm\n")
    assert "bf16" in proc_cpuinfo_flags(str(arm))
    assert proc_cpuinfo_flags(str(tmp_path / "missing")) == frozenset()


def test_cpu_features_fall_back_to_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(devices, "proc_cpuinfo_flags", lambda: frozenset({"avx512_bf16"}))
    assert devices.cpu_features() == {"avx512_bf16"}
    assert devices.cpu_native_bf16() and not devices.cpu_native_fp16()


def test_cli_reports_the_emulation_warning_as_one_line(avx2_cpu: None, capsys) -> None:
    assert cli_resolve_dtype("bfloat16", "cpu", "persam segment") is torch.bfloat16
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "persam segment: warning: --dtype bfloat16: this CPU has no native bfloat16 arithmetic, it is "
        "emulated (results differ more from float32; --dtype auto picks float32 here)"
    ]
    assert cli_resolve_dtype("auto", "cpu") is torch.float32
    assert capsys.readouterr().err == ""
    with pytest.raises(CommandError, match="^--dtype int8: int8 runs on the CPU only"):
        cli_resolve_dtype("int8", "cuda")


@pytest.mark.parametrize(("flags", "picked"), [({"avx512_bf16"}, "bfloat16"), ({"avx2"}, "float32")])
def test_info_shows_detection_and_the_auto_choice(monkeypatch, capsys, tmp_path, flags, picked) -> None:
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(devices, "cpu_features", lambda: frozenset(flags))
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cpu = next(line for line in lines if line.strip().startswith("cpu "))
    assert f"bf16 {'native' if picked == 'bfloat16' else 'emulated'}" in cpu
    assert any(line.startswith(f"dtype    auto -> {picked} on cpu ") for line in lines)
