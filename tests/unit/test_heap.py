"""glibc heap settings for training loops: freed activations stay mapped between steps."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlharness.runs import heap

pytestmark = pytest.mark.unit

LOOP = """
import ctypes, ctypes.util, resource, sys
from mlharness.runs.heap import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 40 << 20  # above the largest mmap threshold glibc picks for itself (32 MB)
def step():  # what a training step does with an activation: allocate, write, free
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
before = faults()
for _ in range(10):
    step()
print(took, (faults() - before) // 10)
"""


@pytest.mark.skipif(heap._libc() is None, reason="glibc's mallopt is not available here")
def test_keep_freed_memory_spares_the_page_faults_of_each_step() -> None:
    def run(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True
        )
        took, faults = out.stdout.split()
        return took, int(faults)

    took, kept = run("keep")
    _, default = run("default")
    assert took == "True"
    assert default >= 5_000  # 10,240 pages of 4 KiB, faulted in afresh each time
    assert kept < 100


def test_release_free_memory_is_safe_to_call() -> None:
    heap.release_free_memory()
