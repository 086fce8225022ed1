"""The C allocator of a persam process: large freed blocks kept for reuse (glibc on Linux).

glibc's ``malloc`` serves every block above 32 MiB with a fresh ``mmap`` and gives it back to the
kernel on ``free``. A batched mask decoder makes and drops dozens of such tensors per batch
(64 prompts x 4096 image tokens x 256 channels is 268 MB), and each one is new memory: page faults
and zero-filling on first touch, in the kernel, on every batch. Serving large blocks from the heap
and keeping what is freed there for the next batch removes that work; the numbers are unchanged.

Measured with ``eval/bench_allocator.py`` (fresh processes taking turns, medians of 3, 2-core AVX2
EPYC): ``persam everything`` with MobileSAM's decoder 1.55x faster (kernel time 21.3 s -> 1.8 s),
``persam segment`` 1.03x. The cost is a higher resident peak (2.1 GiB instead of 1.6 GiB, and +9%)
where blocks of many sizes come and go: the heap keeps what was freed, and 64-byte aligned blocks
(torch's) do not always fit back into the holes they left.

:func:`tune_cpu_allocator` is called by the command line, the web demo and the Ray workers, each a
process of persam's own. A program that imports persam keeps its allocator unless it calls the
function itself. ``PERSAM_MALLOC=system`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: ``mallopt`` parameters, from glibc's ``<malloc.h>``.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Free memory at the top of the heap that is kept rather than returned (the largest value
#: ``mallopt``'s ``int`` takes: 2 GiB - 1).
_KEEP_BYTES = 2**31 - 1
#: Environment variable that, set to ``system``, leaves the allocator as it is.
ENV_VAR = "PERSAM_MALLOC"

_tuned = False


def tune_cpu_allocator() -> bool:
    """Makes glibc's ``malloc`` serve large blocks from the heap (no ``mmap``) and keep up to
    2 GiB of freed memory for reuse. Idempotent.

    Returns:
        Whether the allocator is tuned: False off Linux, with another C library, or when
        ``PERSAM_MALLOC=system``.
    """
    global _tuned
    if _tuned:
        return True
    if os.environ.get(ENV_VAR, "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only (musl has mallopt too)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The trim threshold first: with no mmap, every large free would otherwise shrink the heap.
    _tuned = mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
    return _tuned
