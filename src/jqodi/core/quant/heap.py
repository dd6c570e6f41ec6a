"""Keep freed tensor memory in the process heap while training (glibc ``mallopt``).

A CPU training step allocates and frees many tensors of 0.1–2 MB: activations, the conv outputs,
and in QAT every quantizer's output, STE mask and step-gradient factor. With glibc's defaults a
freed chunk above the mmap threshold goes back to the kernel (``munmap``), and so does a free top
of the heap larger than the trim threshold (twice the dynamic mmap threshold), so the next step
gets fresh pages: every 4 KiB page is a page fault, zeroed by the kernel. Measured on this
project's 2-core VM (torch 2.13, one thread, batch 64 of 3×32×32, ``benchmarks/qat_overhead.py``):
ResNet20 0.25 at 4 bits took **7,088 page faults and 15.9 ms of system time per QAT step**
(plain training: 1,290 and 3.7 ms); with the thresholds below, under 100 and ≈ 0.5 ms.

:func:`keep_freed_memory` raises both thresholds once per process: chunks up to 32 MiB come from
the heap, and the heap is not trimmed below 1 GiB of free space, so a training process keeps its
peak working set instead of returning and re-faulting it every step. It changes no value, only
where memory comes from; it is a no-op off glibc, and it leaves alone a process whose environment
sets ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_`` (the user's choice wins: that is the
opt-out, e.g. ``MALLOC_TRIM_THRESHOLD_=131072``, glibc's default).

It changes the whole process, so the library never calls it (``prepare_qat`` does not): the entry
points that own a training process do, once — the role processes (``jqodi cloud|edge|end|fleet-node``,
``cli/_roles.py``), the learning verbs (``jqodi pretrain|finetune|estimate``,
``cli/_learning_common.py``), ``jqodi run``, ``jqodi calibrate``, ``jqodi demo`` and the training
benchmarks. A program that uses jqodi as a library calls it itself if it wants it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES"]

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: chunks up to this size come from the heap (glibc's largest allowed value on 64-bit: 32 MiB)
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: the heap is trimmed only when more than this is free at its top
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

_applied: bool | None = None


def keep_freed_memory(*, force: bool = False) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True if they are set.

    ``force`` re-applies them (after :func:`_set_thresholds` changed them, e.g. in a benchmark)."""
    global _applied
    if _applied is not None and not force:
        return _applied
    env = os.environ
    if "MALLOC_TRIM_THRESHOLD_" in env or "MALLOC_MMAP_THRESHOLD_" in env:
        _applied = False
        return _applied
    _applied = _set_thresholds(MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)
    return _applied


def _set_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """``mallopt`` both thresholds; False where there is no glibc (or it refuses)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - musl or no libc found
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_bytes))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_bytes)))
