"""Two settings of glibc's allocator that a training loop on CPU feels.

PyTorch's CPU tensors come straight from ``malloc``. glibc serves blocks above its mmap
threshold with fresh ``mmap`` calls and trims the heap top as soon as it is free, so a
loop that allocates and frees the same activations every step takes a page fault for
each 4 KiB of them, every step: about 1,300 faults and 2 ms of a 40 ms nanoGPT-sized step.
:func:`keep_freed_memory` makes freed blocks stay in the heap for the next step (what
PyTorch's CPU tuning guide gets from jemalloc or tcmalloc); :func:`release_free_memory`
hands free pages back when a phase ends. Off glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
# Blocks at least this large are still mapped afresh, and their pages faulted in, each time.
HEAP_BLOCK_LIMIT = 64 << 20


def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory(
    mmap_threshold: int = HEAP_BLOCK_LIMIT, trim_threshold: int = 256 << 20
) -> bool:
    """Serve blocks below ``mmap_threshold`` from the heap and keep up to ``trim_threshold``
    of free heap mapped; True when glibc took the settings."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (``malloc_trim``), e.g. before a large import
    at the end of a run, so it does not add to the run's peak memory."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(OSError):
            libc.malloc_trim(0)
