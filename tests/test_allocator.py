"""``persam.allocator``: large freed blocks kept for reuse in persam's own processes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from persam import allocator

GLIBC_LINUX = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Allocates, fills and frees a 64 MiB block three times; prints the page faults of the last two.
_CYCLE = textwrap.dedent(
    """
    import ctypes, resource, sys
    from persam.allocator import tune_cpu_allocator
    print(tune_cpu_allocator())
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    n = 64 * 2**20
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        libc.free(p)
    print(sum(faults[1:]))
    """
)


def _faults_after_first(env_value: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV_VAR}
    if env_value is not None:
        env[allocator.ENV_VAR] = env_value
    out = subprocess.run(
        [sys.executable, "-c", _CYCLE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc on Linux only")
def test_a_freed_large_block_is_reused_without_page_faults() -> None:
    tuned, faults = _faults_after_first(None)
    assert tuned and faults < 100
    # glibc's default: every 64 MiB block is a fresh mmap, faulted in page by page (16,384 pages).
    untouched, default_faults = _faults_after_first("system")
    assert not untouched and default_faults > 2 * 10_000


def test_opt_out_and_other_platforms_leave_the_allocator_alone(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", False)
    monkeypatch.setenv(allocator.ENV_VAR, "System")
    assert allocator.tune_cpu_allocator() is False
    monkeypatch.delenv(allocator.ENV_VAR)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune_cpu_allocator() is False


def test_the_command_line_tunes_its_process(monkeypatch, capsys) -> None:
    import persam.cli as cli

    calls = []
    monkeypatch.setattr(cli, "tune_cpu_allocator", lambda: calls.append(1) or True)
    assert cli.main(["weights", "list"]) == 0
    assert calls == [1]
    capsys.readouterr()
    assert cli.main([]) == 2 and calls == [1]  # no command: nothing run, nothing tuned
