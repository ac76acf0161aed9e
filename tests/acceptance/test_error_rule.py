"""The error-message rule, across every command and kind: a user's mistake ends the command
with exit status 1 and one ``Error:`` line on stderr that says what was wrong and what to do;
no traceback, nothing half-written.

Seed 000 dictates a few messages word for word (a missing config file, a missing run
directory, the list of validation failures); they keep the seed's shape, checked as such.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))

from e2e_helpers import REGRESSION, make_workspace, run_mlx, write_config

# Seed 000's own wording: the first line, then the lines the seed puts under it.
SEED_WORDED = (
    "Error: Configuration validation failed:",
    "Error: Configuration file not found:",
    "Error: Run directory not found:",
)
LM = {"kind": "lm", "name": "tiny", "prepare": {"preparer": "text", "input": "missing.txt"}}
RL = {
    "name": "grpo",
    "model": {"model_path": "nowhere"},
    "data": {"train_path": "train.jsonl"},
    "rewards": [{"name": "exact_match"}],
}

CASES = {
    "missing config": ["run-experiment", "--config", "missing.json"],
    "unknown tabular model": ["run-experiment", "--config", "bad_model.json"],
    "broken JSON": ["run-experiment", "--config", "broken.json"],
    "bad override": ["run-experiment", "--config", "good.json", "--set", "x"],
    "override of an unknown key": ["train", "--config", "lm.json", "--set", "train.nope=1"],
    "override out of range": [
        "run-experiment",
        "--config",
        "good.json",
        "--set",
        "training.epochs=-1",
    ],
    "unknown preparer": ["prepare", "nope"],
    "lm input file missing": ["prepare", "tiny", "--config", "lm.json"],
    "sample without a run": ["sample", "tiny", "--config", "lm.json"],
    "rl model missing": ["train", "--config", "rl.json"],
    "rl unknown reward": ["train", "--config", "rl_reward.json"],
    "eval of no run": ["eval", "--run-dir", "nowhere"],
    "compare of no runs": ["compare", "a", "b"],
    "history without an index": ["history", "--output-dir", "nowhere"],
    "export of no run": ["export", "nowhere", "--format", "hf"],
    "config outside the workspace": ["run-experiment", "--config", "outside.json"],
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = make_workspace(tmp_path_factory.mktemp("errors") / "ws")
    write_config(ws / "good.json", REGRESSION)
    write_config(ws / "bad_model.json", {**REGRESSION, "model": {"name": "forest"}})
    (ws / "broken.json").write_text('{"name": "x",\n', encoding="utf-8")
    write_config(ws / "lm.json", LM)
    write_config(ws / "rl.json", RL)
    (ws / "train.jsonl").write_text(json.dumps({"prompt": "1+1=", "completion": "2"}) + "\n")
    write_config(ws / "rl_reward.json", {**RL, "rewards": [{"name": "no_such_reward"}]})
    write_config(ws / "outside.json", {**REGRESSION, "output": {"directory": "../../elsewhere"}})
    return ws


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_error_line_and_exit_1(ws: Path, case: str) -> None:
    result = run_mlx(CASES[case], workspace=ws, check=1)  # run_mlx also refuses tracebacks
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, f"{case}: not one Error: line\n{result.stderr}"
    message = errors[0].removeprefix("Error: ")
    assert message[:1].isupper(), f"{case}: {message!r} does not start a sentence"
    if errors[0].startswith(SEED_WORDED):
        return
    usage = [line for line in lines if line.startswith(("Usage:", "Try ", "Run 'mlx"))]
    assert len(lines) == 1 + len(usage), f"{case}: more than the error line\n{result.stderr}"
    assert message.endswith((".", ".)")), f"{case}: {message!r} does not end as a sentence"
    assert len(message) > 30, f"{case}: {message!r} cannot say what was wrong and what to do"
