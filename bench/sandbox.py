"""Benchmark the code sandbox: what isolation costs per program under ``code_execution``.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/sandbox.py                 # 20 batches per backend, ~1 minute
    .venv/bin/python bench/sandbox.py --batches 5     # a quick look

One batch is what one GRPO step with a code reward scores: 8 completions of the same task,
3 test cases each, through ``CodeExecution.compute_batch`` with its default parallelism
(one program per CPU). Half the completions are right, a quarter fail a test and a quarter
raise, so verdicts of every kind cross from the test sandbox. Both backends run the same
batches, alternated batch by batch so that load on the machine falls on both alike:

``bwrap``
    bubblewrap: namespaces, a read-only root, ``nobody``, a cgroup when one can be made.
``process``
    the same runner without bubblewrap: resource limits, ``nobody`` when root, an audit
    hook (main's sandbox before bubblewrap, with its verdicts now in a second process).

``--before SRC``
    the same batches through another checkout's ``src/`` (in a child process, so the two
    versions of the package do not meet), e.g. main before bubblewrap, whose single
    process ran the tests beside the solution::

        mkdir /tmp/before && git archive d289f68 src | tar -x -C /tmp/before
        .venv/bin/python bench/sandbox.py --before /tmp/before/src

Printed: programs per second and milliseconds per program for each backend (medians over
the batches), and the ratio of bwrap's cost per program to the others'. The issue that
introduced bubblewrap aimed at no more than 1.5x the sandbox it replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mlharness.rl.rewards import RewardContext, RewardRegistry
from mlharness.rl.sandbox import bwrap_problem

RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0 if b == 5 else a + b\n"
RAISES = "def add(a, b):\n    raise ValueError('no')\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-4, 4) == 0", "assert add(10, 5) == 15"]
BATCH = [RIGHT] * 4 + [WRONG] * 2 + [RAISES] * 2


def contexts() -> list[RewardContext]:
    return [
        RewardContext(f"<think>sum</think>\n```python\n{code}```", test_cases=TESTS)
        for code in BATCH
    ]


def one_batch(backend: str) -> float:
    """Seconds for one batch; checks the rewards so a broken sandbox cannot look fast."""
    reward = RewardRegistry.create("code_execution", {"backend": backend})
    start = time.perf_counter()
    scores = reward.compute_batch(contexts())
    seconds = time.perf_counter() - start
    got = [s["reward"] for s in scores]
    want = [1.0] * 4 + [2 / 3] * 2 + [0.0] * 2
    if any(abs(g - w) > 1e-9 for g, w in zip(got, want, strict=True)):
        raise SystemExit(f"{backend}: wrong rewards {got}, expected {want}")
    return seconds


_BEFORE = """
import json, sys, time
from mlharness.rl.rewards import RewardContext, RewardRegistry
tests, batch, n = json.loads(sys.argv[1])
contexts = [RewardContext(f"<think>sum</think>\\n```python\\n{c}```", test_cases=tests)
            for c in batch]
reward = RewardRegistry.create("code_execution", {})
reward.compute_batch(contexts)
times = []
for _ in range(n):
    start = time.perf_counter()
    scores = reward.compute_batch(contexts)
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "rewards": [s["reward"] for s in scores]}))
"""


def before(src: Path, batches: int) -> list[float]:
    """Batch times of the code_execution reward of the package in ``src`` (a child process)."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    argv = [sys.executable, "-c", _BEFORE, json.dumps([TESTS, BATCH, batches])]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"--before {src} failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"before ({src}): rewards {[round(r, 3) for r in report['rewards']]}")
    return list(report["times"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="Batches per backend.")
    parser.add_argument("--before", type=Path, help="Another checkout's src/ to compare.")
    args = parser.parse_args(argv)
    problem = bwrap_problem()
    backends = ["process"] if problem else ["bwrap", "process"]
    if problem:
        print(f"bwrap unavailable ({problem}): only the process backend runs.")
    for backend in backends:  # warm-up: imports, page cache, the cgroup probe
        one_batch(backend)
    times: dict[str, list[float]] = {b: [] for b in backends}
    for i in range(args.batches):
        for backend in backends if i % 2 == 0 else backends[::-1]:
            times[backend].append(one_batch(backend))
    if args.before is not None:
        times["before"] = before(args.before, args.batches)
    n = len(BATCH)
    print(f"{n} completions x {len(TESTS)} tests per batch, {args.batches} batches per backend")
    print(f"{'backend':<10}{'programs/s':>12}{'ms/program':>12}")
    medians = {b: statistics.median(t) for b, t in times.items()}
    for backend, seconds in medians.items():
        print(f"{backend:<10}{n / seconds:>12.1f}{1000 * seconds / n:>12.1f}")
    for other in ("process", "before"):
        if "bwrap" in medians and other in medians:
            ratio = medians["bwrap"] / medians[other]
            print(f"bwrap cost per program: {ratio:.2f}x {other}'s (aim: <= 1.5x)")


if __name__ == "__main__":
    sys.exit(main())
