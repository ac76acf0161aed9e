"""The code reward: run the completion's Python against the prompt's test cases.

The code is model-written and untrusted, so it only ever runs in
:mod:`mlharness.rl.sandbox`, never in the training process.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Sequence
from typing import Any, ClassVar

from mlharness.rl.rewards.base import BaseReward, RewardContext, RewardRegistry
from mlharness.rl.rewards.text import split_regions
from mlharness.rl.sandbox import SandboxLimits, SandboxResult, run_many

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


_HARNESS = """\
def _mlx_harness():
    # Captured before the solution runs, so redefining exec, compile or print cannot fake
    # a pass; a pass is a line with the marker, which the solution does not know.
    import sys, traceback
    _exec, _compile, _print, _type = exec, compile, print, type
    out, err = sys.stdout, sys.stderr

    def run(code, tests, marker, namespace):
        try:
            _exec(_compile(code, "<solution>", "exec"), namespace)
        except BaseException:  # SystemExit too: exiting early must not look like passing
            traceback.print_exc()
            return
        _print(marker, "ran", file=out, flush=True)
        for i, test in enumerate(tests):
            try:
                _exec(_compile(test, "<test %d>" % i, "exec"), namespace)
            except BaseException as exc:
                _print(marker, i, "failed", _type(exc).__name__, exc, file=err, flush=True)
            else:
                _print(marker, i, "passed", file=out, flush=True)

    return run


_mlx_harness()({code!r}, {tests!r}, {marker!r}, globals())
"""


def build_program(code: str, tests: Sequence[str], marker: str) -> str:
    """A program that runs ``code``, then each test, printing ``marker i passed`` per pass."""
    return _HARNESS.format(code=code, tests=list(tests), marker=marker)


@RewardRegistry.register("code_execution")
class CodeExecution(BaseReward):
    """The share of the prompt's test cases that the completion's code passes.

    The code is taken from the answer region (see :func:`extract_code`; an unclosed think
    block has no answer and scores 0). It runs in a sandboxed process (see
    :mod:`mlharness.rl.sandbox`), then each test case (``assert f(2) == 4``, or
    HumanEval's ``def check(candidate) ... check(f)``) runs after it in the same
    namespace. A test passes when it raises nothing, and the reward is the fraction passed:
    partial credit gives GRPO a gradient between "nothing works" and "all works". With
    ``partial_credit: false`` it is 1.0 only when all pass.

    A pass is counted only from a line carrying a random marker that the harness prints
    after each test, never from the exit status: a solution that calls ``sys.exit(0)`` or
    ``os._exit(0)`` before the tests, or that redefines ``exec`` or ``print``, passes none.
    (Code that returns objects equal to everything still fools ``==`` tests; no harness
    can rule that out.) A syntax error is caught before any process starts.

    Without test cases the code is only run: ``untested_reward`` (0.5) if it finishes
    cleanly, 0 otherwise. No code, empty text, a timeout, a crash: 0.

    Options: ``timeout`` (5.0 s, wall clock), ``cpu_s`` (default: the timeout rounded up),
    ``memory_mb`` (512), ``max_file_mb`` (8), ``max_processes`` (32), ``workers``
    (parallel programs, 0 = CPU count), ``partial_credit`` (true), ``untested_reward``
    (0.5).

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
        "workers": 0,
        "partial_credit": True,
        "untested_reward": 0.5,
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
        )
        self.workers = self.integer("workers", minimum=0) or None
        self.partial_credit = self.flag("partial_credit")
        self.untested_reward = self.number("untested_reward", minimum=0, maximum=1)

    def compute(self, context: RewardContext) -> dict[str, Any]:
        return self.compute_batch([context])[0]

    def compute_batch(self, contexts: Sequence[RewardContext]) -> list[dict[str, Any]]:
        """All programs of the batch run in parallel: the batch costs about one program."""
        results: list[dict[str, Any] | None] = []
        jobs: list[tuple[int, list[str], str]] = []  # (index, tests, marker)
        programs: list[str] = []
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
            marker = f"mlx-test-{secrets.token_hex(12)}"
            results.append(None)
            jobs.append((i, tests, marker))
            programs.append(build_program(code, tests, marker))
        for (i, tests, marker), run in zip(
            jobs, run_many(programs, self.limits, workers=self.workers), strict=True
        ):
            results[i] = self._score(run, tests, marker)
        return [r for r in results if r is not None]

    def _score(self, run: SandboxResult, tests: list[str], marker: str) -> dict[str, Any]:
        lines = set(run.stdout.splitlines())
        ran = f"{marker} ran" in lines
        if not tests:
            reward = self.untested_reward if ran and run.passed else 0.0
            return {"reward": reward, "status": run.status, "passed": 0, "tests": 0}
        passed = sum(1 for i in range(len(tests)) if f"{marker} {i} passed" in lines)
        if self.partial_credit:
            reward = passed / len(tests)
        else:
            reward = float(passed == len(tests))
        return {"reward": reward, "status": run.status, "passed": passed, "tests": len(tests)}
