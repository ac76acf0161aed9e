"""What each kind's metrics mean (runs/describe.py), and the tables of metrics.md, ``mlx history``
and ``mlx compare`` built from them (runs/tables.py, runs/metrics.py, runs/compare.py)."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest

from mlharness.errors import RunDirectoryError
from mlharness.lm.config import LM_METRICS
from mlharness.rl.config import RL_METRICS
from mlharness.runs import describe, tables
from mlharness.runs.compare import config_diff, flatten, group_by_kind
from mlharness.runs.describe import Headline, RunMetrics, best_and_final, last_step, series
from mlharness.runs.metrics import MAX_ROWS, MetricsWriter, record_shapes
from mlharness.runs.plots import wants_log_scale
from mlharness.runs.rundata import RunData
from mlharness.tabular.config import TABULAR_METRICS


def test_doctests() -> None:
    for module in (describe, tables):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_each_kind_declares_its_step_and_headline_metrics() -> None:
    assert (TABULAR_METRICS.kind, TABULAR_METRICS.step_key) == ("tabular", "epoch")
    assert (LM_METRICS.kind, LM_METRICS.step_key) == ("lm", "iter")
    assert (RL_METRICS.kind, RL_METRICS.step_key) == ("rl", "step")
    assert TABULAR_METRICS.primary == Headline("val_loss", "min")
    assert LM_METRICS.primary == Headline("val_loss", "min")
    assert RL_METRICS.primary == Headline("val_reward", "max")


# ----------------------------------------------------------------------------- describe


def test_series_skips_missing_null_and_boolean_values() -> None:
    history: list[dict[str, Any]] = [
        {"iter": 5, "loss": 2.0},
        {"iter": 5, "val_loss": 3.0},
        {"iter": 10, "loss": None},
        {"iter": 15, "loss": True},
        {"loss": 1.0},  # no step: its position
    ]
    assert series(history, "loss", "iter") == [(5, 2.0), (5, 1.0)]
    assert series(history, "val_loss", "iter") == [(5, 3.0)]


@pytest.mark.parametrize(
    ("goal", "best"), [("min", (20, 1.0)), ("max", (10, 3.0))], ids=["min", "max"]
)
def test_best_and_final_follow_the_direction(goal: Any, best: tuple[int, float]) -> None:
    history = [{"i": 10, "m": 3.0}, {"i": 20, "m": 1.0}, {"i": 30, "m": 3.0}, {"i": 40, "m": 2.0}]
    assert best_and_final(history, Headline("m", goal), "i") == (best, (40, 2.0))


def test_best_and_final_ties_keep_the_first_and_nothing_is_none() -> None:
    history = [{"s": 1, "r": 0.5}, {"s": 2, "r": 0.5}]
    assert best_and_final(history, Headline("r", "max"), "s") == ((1, 0.5), (2, 0.5))
    assert best_and_final(history, Headline("x", "max"), "s") == (None, None)
    assert last_step(history, "s") == 2
    assert last_step([], "s") is None


# ----------------------------------------------------------------------------- tables


def test_column_groups_repeat_the_step_and_stay_within_the_width() -> None:
    keys = ["step", *(f"m{i}" for i in range(19))]
    groups = tables.column_groups(keys, "step")
    assert all(len(g) <= tables.MAX_COLUMNS and g[0] == "step" for g in groups)
    assert [k for g in groups for k in g[1:]] == keys[1:]
    assert tables.column_groups(["a", "b"], "step") == [["a", "b"]]  # no step column
    assert tables.column_groups(["step"], "step") == [["step"]]


def test_table_cells_escape_pipes_and_newlines() -> None:
    assert tables.table(["k"], [["a|b\nc"]])[-1] == "| a\\|b c |"


# ----------------------------------------------------------------------------- metrics.md


def _lm_like_history(n_iters: int, log_every: int, eval_every: int) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    for it in range(log_every, n_iters + 1, log_every):
        history.append({"iter": it, "loss": 4.0 / it, "lr": 1e-3, "elapsed_s": it / 100})
        if it % eval_every == 0:
            history.append({"iter": it, "val_loss": 5.0 / it, "eval/train_loss": 4.5 / it})
    return history


def _section_rows(md: str, title: str) -> list[list[str]]:
    body = md.split(f"## {title} (", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    rows = [r for r in rows if not set(r) <= {"|", "-"}]  # separators
    cells = [[c.strip() for c in r.strip("|").split(" | ")] for r in rows]
    return [r for r in cells if r[0] not in ("iter", "step", "epoch")]  # headers


def test_markdown_shows_every_evaluation_of_a_long_lm_history(tmp_path: Path) -> None:
    # 2,000 iterations logged every 10, evaluated every 250: the case where 3 of 8 val_loss
    # values used to survive the thinning, without a word about it.
    writer = MetricsWriter(tmp_path, "lm", step_key="iter", plot=False)
    writer.history = _lm_like_history(2000, 10, 250)
    md = writer.markdown(writer.final_metrics())
    assert md.index("## Evaluations (8 records)") < md.index("## Training log (200 records)")
    evals = _section_rows(md, "Evaluations")
    assert [int(r[0]) for r in evals] == list(range(250, 2001, 250))
    assert all(r[1] for r in evals)  # every val_loss is there
    assert "| iter | val_loss | eval/train_loss |" in md
    log = _section_rows(md, "Training log")
    assert len(log) <= MAX_ROWS + 1 and int(log[-1][0]) == 2000
    assert (
        f"{len(log)} of 200 records shown: one in every 2, and the last. "
        "The full history is in metrics.json and metrics.ndjson beside this file."
    ) in md
    writer.close()


def test_markdown_thins_a_huge_evaluation_table_and_says_so(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "lm", step_key="iter", plot=False)
    writer.history = _lm_like_history(3000, 1, 1)
    md = writer.markdown({})
    assert "## Evaluations (3000 records)" in md
    assert "1001 of 3000 records shown: one in every 3, and the last." in md
    writer.close()


def test_markdown_splits_a_wide_grpo_table_into_groups_led_by_the_step(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(19)]
    writer = MetricsWriter(tmp_path, "grpo", step_key="step", plot=False)
    for step in range(3):
        if step:
            writer.log({"step": step, **{k: float(step) for k in keys}})
        writer.log({"step": step, "val_reward": 0.5, "val_rewards/x": 0.25})
    md = writer.markdown({})
    training = md.split("## Training log (2 records)", 1)[1]
    headers = [line for line in training.splitlines() if line.startswith("| step |")]
    assert len(headers) == 3
    columns = [[c.strip() for c in h.strip("|").split("|")] for h in headers]
    assert all(len(c) <= tables.MAX_COLUMNS and c[0] == "step" for c in columns)
    assert [k for c in columns for k in c[1:]] == keys
    assert "## Evaluations (3 records)" in md and "| 0 | 0.5 | 0.25 |" in md
    writer.close()


def test_record_shapes_keep_a_growing_epoch_record_in_one_table() -> None:
    history = [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5, "val_loss": 0.7}]
    assert record_shapes(history, "epoch") == [(["epoch", "loss", "val_loss"], history)]


# ----------------------------------------------------------------------------- plots


@pytest.mark.parametrize(
    ("key", "values", "log"),
    [
        ("loss", [10.0, 0.05], True),
        ("val_loss", [10.0, 0.1], False),  # exactly 100: not more than two decades
        ("mse", [5.0, 0.001], True),
        ("eval/train_loss", [3.0, 0.01], True),
        ("loss", [1.0, 0.0], False),  # zero cannot be drawn on a log axis
        ("policy_loss", [-1.0, 1000.0], False),
        ("accuracy", [0.001, 0.9], False),
        ("loss", [], False),
    ],
)
def test_wants_log_scale(key: str, values: list[float], log: bool) -> None:
    assert wants_log_scale(key, values) is log


# ----------------------------------------------------------------------------- compare


def _run(label: str, kind: str, config: dict[str, Any]) -> RunData:
    return RunData(Path(label), label, kind, "completed", config, [], {})


def test_flatten_and_config_diff_show_only_what_differs() -> None:
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, 2]}) == {"a.b": 1, "a.c": {}, "d": [1, 2]}
    a = _run("a", "lm", {"name": "x", "train": {"lr": 0.1, "iters": 5}, "tags": [1]})
    b = _run("b", "lm", {"name": "x", "train": {"lr": 0.2, "iters": 5}, "extra": None})
    assert config_diff([a, b]) == [
        ["train.lr", "0.1", "0.2"],
        ["tags", "[1]", "(unset)"],
        ["extra", "(unset)", "null"],
    ]
    assert config_diff([a, a]) == []
    long = _run("c", "lm", {"name": "y" * 100})
    assert config_diff([a, long])[0][2] == "y" * 59 + "…"


def test_group_by_kind_refuses_a_kind_mlx_does_not_know() -> None:
    described: dict[str, RunMetrics] = {"lm": LM_METRICS}
    groups = group_by_kind([_run("a", "lm", {}), _run("b", "lm", {})], described)
    assert list(groups) == ["lm"] and len(groups["lm"]) == 2
    with pytest.raises(RunDirectoryError, match="a run of kind 'foo', which mlx does not know"):
        group_by_kind([_run("a", "foo", {})], described)
