"""How a torchrun worker ends: its exit handlers run, Python's finalisation does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

WORKER = """
import atexit, sys
from mlharness.runs import device

class Finalised:
    def __del__(self):
        print("finalised", flush=True)

keep = Finalised()  # collected only during finalisation
atexit.register(lambda: print("exit handler ran", flush=True))
if sys.argv[1] == "joined":
    device._joined.append(True)  # as init_distributed does under torchrun
print("work done", flush=True)
device.leave_job(3)
print("still here", flush=True)
sys.exit(0)
"""


def run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKER), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_that_joined_a_job_leaves_after_its_exit_handlers_without_finalising() -> None:
    result = run("joined")
    assert result.returncode == 3, result.stderr
    assert result.stdout.split("\n")[:2] == ["work done", "exit handler ran"]
    assert "finalised" not in result.stdout  # gloo's leaked threads are never torn down
    assert "still here" not in result.stdout


def test_a_process_outside_torchrun_ends_as_usual() -> None:
    result = run("alone")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "work",
        "done",
        "still",
        "here",
        "exit",
        "handler",
        "ran",
        "finalised",
    ]
