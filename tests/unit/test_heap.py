"""glibc heap settings for training loops: freed activations stay mapped between steps."""

from __future__ import annotations

import os
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


THP_LOOP = """
import os, resource, threading
import torch
torch.set_num_threads(1)
def step():  # a large activation made and freed in a worker thread, as ThreadShards does
    torch.empty(80 << 18).fill_(1.0)  # 80 MB: above any mmap threshold, beyond an arena
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def run():
    step()
    before = faults()
    for _ in range(5):
        step()
    print(os.environ["THP_MEM_ALLOC_ENABLE"], (faults() - before) // 5)
worker = threading.Thread(target=run)
worker.start()
worker.join()
"""


def _thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _thp_available(), reason="no transparent huge pages on this kernel")
def test_huge_pages_spare_the_faults_of_tensors_beyond_the_heap() -> None:
    """What ``lm.runner.huge_pages_pay`` relies on: with torch's THP_MEM_ALLOC_ENABLE, a
    tensor too large for the heap (a GPT-2 vocabulary's logits) costs a fraction of the
    ~20,000 page faults it takes each step without."""

    def faults(setting: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", THP_LOOP],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "THP_MEM_ALLOC_ENABLE": setting},
        )
        seen, count = out.stdout.split()
        assert seen == setting
        return int(count)

    small, huge = faults("0"), faults("1")
    assert small >= 15_000  # 20,480 pages of 4 KiB
    assert huge < small / 4
