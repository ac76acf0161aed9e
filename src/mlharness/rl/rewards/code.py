"""The code reward: run the completion's Python against the prompt's test cases.

The code is model-written and untrusted, so it only ever runs in
:mod:`mlharness.rl.sandbox`, never in the training process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from mlharness.rl.rewards.base import BaseReward, RewardContext, RewardRegistry
from mlharness.rl.rewards.text import split_regions
from mlharness.rl.sandbox import (
    BACKENDS,
    CodeWithTests,
    JudgedResult,
    SandboxLimits,
    SandboxResult,
    resolve_backend,
    run_many,
    run_tested_many,
)

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The Python in a completion: its ```python blocks, else its bare ``` blocks, joined;
    else the whole text if it compiles; else "". An unclosed fence runs to the end.

    >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1'
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    chosen = [b for lang, b in blocks if lang in ("python", "py", "python3")]
    chosen = chosen or [b for lang, b in blocks if not lang]
    if chosen:
        return "\n\n".join(b.strip("\n") for b in chosen).strip("\n")
    if blocks:  # only other languages
        return ""
    return text.strip("\n") if compiles(text) else ""


def compiles(code: str) -> bool:
    """Whether ``code`` is valid Python; compiling runs nothing, so it is safe here."""
    try:
        compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


@RewardRegistry.register("code_execution")
class CodeExecution(BaseReward):
    """The share of the prompt's test cases that the completion's code passes.

    The code is taken from the answer region (see :func:`extract_code`; an unclosed think
    block has no answer and scores 0). It runs in a sandbox (see
    :mod:`mlharness.rl.sandbox`), and the test cases (``assert f(2) == 4``, or HumanEval's
    ``def check(candidate) ... check(f)``) run in a second sandbox that calls the
    solution's top-level functions through proxies: plain data goes in and out, nothing
    else. A test passes when it raises nothing, and the reward is the fraction passed:
    partial credit gives GRPO a gradient between "nothing works" and "all works". With
    ``partial_credit: false`` it is 1.0 only when all pass.

    The verdicts are written by the test process, which the solution cannot reach: a
    solution that exits early, prints pass lines, walks frames or the garbage collector,
    or returns an object equal to everything passes nothing. Tests may call the solution's
    functions with data (numbers, strings, lists, tuples, dicts, sets, bytes) and read its
    data constants; classes, generators and mutated arguments do not cross (see
    docs/rl-rewards.md). A syntax error is caught before any process starts.

    Without test cases the code is only run: ``untested_reward`` (0.5) if it finishes
    cleanly, 0 otherwise. No code, empty text, a timeout, a crash: 0.

    Options: ``timeout`` (5.0 s, wall clock), ``cpu_s`` (default: the timeout rounded up),
    ``memory_mb`` (512 per process), ``total_memory_mb`` (1024 for the whole sandbox),
    ``max_file_mb`` (8), ``max_processes`` (32), ``workers`` (parallel programs, 0 = CPU
    count), ``partial_credit`` (true), ``untested_reward`` (0.5), ``backend`` (``auto``:
    bubblewrap, or an error where it cannot run; ``process`` opts in to the weaker sandbox).

    >>> r = CodeExecution({"timeout": 5})
    >>> text = "<think>easy</think>```python\\ndef double(x):\\n    return 2 * x\\n```"
    >>> r.compute(RewardContext(text, test_cases=["assert double(2) == 4",
    ...                                           "assert double(3) == 5"]))["reward"]
    0.5
    """

    defaults: ClassVar[dict[str, Any]] = {
        "timeout": 5.0,
        "cpu_s": None,
        "memory_mb": 512,
        "max_file_mb": 8,
        "max_processes": 32,
        "total_memory_mb": 1024,
        "workers": 0,
        "partial_credit": True,
        "untested_reward": 0.5,
        "backend": "auto",
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        timeout = self.number("timeout", minimum=0.1)
        cpu = self.config.get("cpu_s")
        cpu_s = math.ceil(timeout) if cpu is None else self.integer("cpu_s", minimum=1)
        self.limits = SandboxLimits(
            timeout_s=timeout,
            cpu_s=cpu_s,
            memory_mb=self.integer("memory_mb", minimum=64),
            max_file_mb=self.integer("max_file_mb", minimum=1),
            max_processes=self.integer("max_processes", minimum=1),
            total_memory_mb=self.integer("total_memory_mb", minimum=64),
        )
        self.backend = resolve_backend(
            self.choice("backend", BACKENDS)
        )  # fails here, not hours into training
        self.workers = self.integer("workers", minimum=0) or None
        self.partial_credit = self.flag("partial_credit")
        self.untested_reward = self.number("untested_reward", minimum=0, maximum=1)

    def compute(self, context: RewardContext) -> dict[str, Any]:
        return self.compute_batch([context])[0]

    def compute_batch(self, contexts: Sequence[RewardContext]) -> list[dict[str, Any]]:
        """All programs of the batch run in parallel: the batch costs about one program."""
        results: list[dict[str, Any] | None] = []
        tested: list[tuple[int, CodeWithTests]] = []
        untested: list[tuple[int, str]] = []
        for i, context in enumerate(contexts):
            self.validate_inputs(context)
            regions = split_regions(
                context.generated_text, context.think_start_tag, context.think_end_tag
            )
            code = extract_code(regions.answer)
            if not code.strip() or not compiles(code):
                results.append({"reward": 0.0, "status": "no code" if not code else "syntax"})
                continue
            tests = context.test_cases or []
            tests = [tests] if isinstance(tests, str) else [str(t) for t in tests]
            results.append(None)
            if tests:
                tested.append((i, CodeWithTests(code, tests)))
            else:
                untested.append((i, code))
        runs = run_tested_many([job for _, job in tested], self.limits, self.workers, self.backend)
        for (i, _), run in zip(tested, runs, strict=True):
            results[i] = self._score(run)
        programs = run_many([code for _, code in untested], self.limits, self.workers, self.backend)
        for (i, _), program in zip(untested, programs, strict=True):
            results[i] = self._score_untested(program)
        return [r for r in results if r is not None]

    def _score(self, run: JudgedResult) -> dict[str, Any]:
        total = len(run.verdicts)
        passed = run.num_passed
        reward = passed / total if self.partial_credit else float(passed == total)
        return {"reward": reward, "status": run.status, "passed": passed, "tests": total}

    def _score_untested(self, run: SandboxResult) -> dict[str, Any]:
        reward = self.untested_reward if run.passed else 0.0
        return {"reward": reward, "status": run.status, "passed": 0, "tests": 0}
