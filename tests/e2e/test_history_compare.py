"""``mlx history`` (the run index as a table) and ``mlx compare`` (runs side by side)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    TIMEOUT,
    Mlx,
    Trained,
    error_lines,
    make_workspace,
    read_json,
    regression,
    run_dirs,
    run_mlx,
    single_run_dir,
    snapshot,
    write_config,
)

sys.path.insert(0, str(Path(__file__).parents[1]))

from lm_support import TINY_LM, corpus_text
from mlharness.config import deep_merge
from mlharness.runs.index import format_value
from mlharness.runs.tables import MAX_COLUMNS

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- history


def test_history_lists_every_run(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", check=0)
    out = result.stdout
    assert out.startswith("# Run history")
    assert "2 run(s)." in out
    assert "## tabular (2 run(s), step: epoch)" in out
    # A classifier and a regressor: each headline metric's column, the empty ones dropped.
    assert (
        "| Experiment | Status | epoch | val_loss | best val_loss | loss | val_accuracy | val_r2 "
        "| Run directory |"
    ) in out
    rows = [line for line in out.splitlines() if line.startswith("| e2e-")]
    assert [row.split(" | ")[0] for row in rows] == ["| e2e-regression", "| e2e-classification"]
    assert all(" | completed | " in row for row in rows)
    assert f"`{trained.rel(trained.regression_run).removeprefix('runs/')}`" in out


def test_history_experiment_filter(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "--experiment", "e2e-classification", check=0)
    assert "1 run(s)." in result.stdout
    assert "e2e-classification" in result.stdout
    assert "e2e-regression" not in result.stdout


def test_history_markdown_file(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "--output-dir", "runs", "--markdown", "reports/HISTORY.md", check=0)
    written = trained.workspace / "reports" / "HISTORY.md"
    assert "Written: reports/HISTORY.md" in result.stdout
    text = written.read_text()
    assert text.startswith("# Run history")
    assert "e2e-regression" in text and "e2e-classification" in text


def test_history_unknown_experiment(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "-e", "nope", check=1)
    [message] = error_lines(result.stderr)
    assert message.startswith("Error: No runs of experiment 'nope' in ")
    assert message.endswith("Experiments there: e2e-classification, e2e-regression.")


def test_history_without_index(mlx: Mlx, ws: Path) -> None:
    result = mlx("history", check=1)
    assert error_lines(result.stderr) == [
        f"Error: No run index found in {ws / 'runs'} or {ws / 'outputs'}. Pass --output-dir "
        "with the output.directory of your experiments."
    ]
    other = mlx("history", "--output-dir", "elsewhere", check=1)
    assert "Error: No run index at elsewhere/index.json." in other.stderr


def test_history_markdown_into_a_directory(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "--markdown", "runs", check=1)
    assert "Error: --markdown runs is a directory" in result.stderr


# ----------------------------------------------------------------------------- compare


def test_compare_two_runs(mlx: Mlx, trained: Trained) -> None:
    a, b = trained.rel(trained.regression_run), trained.rel(trained.classification_run)
    result = mlx("compare", a, b, "--output", "cmp/curves.png", "--markdown", "cmp.md", check=0)
    label_a = "/".join(a.split("/")[-2:])
    label_b = "/".join(b.split("/")[-2:])
    lines = result.stdout.splitlines()
    assert lines[0] == "# Run comparison"
    assert "## tabular (2 run(s), step: epoch)" in lines
    assert f"| Metric | {label_a} | {label_b} |" in lines
    assert "| status | completed | completed |" in lines
    assert "| epoch | 4 | 4 |" in lines
    assert any(line.startswith("| loss best (min) | ") for line in lines)
    assert any(line.startswith("| loss final | ") for line in lines)
    assert any(line.startswith("| val_accuracy best (max) |  | ") for line in lines)
    assert f"| Key | {label_a} | {label_b} |" in lines
    assert "| model.name | linear_regression | mlp |" in lines
    assert not any(line.startswith("| output.directory |") for line in lines)  # the same
    assert "Curves: cmp/curves.png" in result.stdout
    assert (trained.workspace / "cmp" / "curves.png").read_bytes()[:8] == PNG
    written = (trained.workspace / "cmp.md").read_text()
    assert written == result.stdout.split("Written: cmp.md")[0].rstrip("\n") + "\n"


def test_compare_a_directory_that_is_not_a_run(mlx: Mlx, trained: Trained) -> None:
    (trained.workspace / "plain").mkdir()
    before = snapshot(trained.workspace)
    result = mlx("compare", trained.rel(trained.regression_run), "plain", check=1)
    assert error_lines(result.stderr) == [
        "Error: plain has no metrics/metrics.json: is it a run directory of a finished or "
        "interrupted run?"
    ]
    assert snapshot(trained.workspace) == before


def test_compare_missing_run_dir(mlx: Mlx, trained: Trained) -> None:
    result = mlx("compare", trained.rel(trained.regression_run), "runs/x/y", check=1)
    assert error_lines(result.stderr) == ["Error: Run directory not found: runs/x/y"]


def test_compare_output_is_a_directory(mlx: Mlx, trained: Trained) -> None:
    result = mlx("compare", trained.rel(trained.regression_run), "-o", "runs", check=1)
    assert "Error: --output runs is a directory" in result.stderr


def test_compare_a_run_without_its_config(mlx: Mlx, trained: Trained) -> None:
    (trained.regression_run / "config.json").unlink()
    result = mlx("compare", trained.rel(trained.regression_run), check=1)
    assert error_lines(result.stderr) == [
        f"Error: {trained.rel(trained.regression_run)} has no readable config.json saying which "
        "kind of run it is; compare needs it to know the run's step and metrics."
    ]


def test_compare_a_run_of_a_kind_mlx_does_not_know(mlx: Mlx, trained: Trained) -> None:
    config = trained.regression_run / "config.json"
    data = read_json(config)
    data["_run"]["kind"] = "quantum"
    config.write_text(json.dumps(data), encoding="utf-8")
    rel = trained.rel(trained.regression_run)
    result = mlx("compare", rel, trained.rel(trained.classification_run), check=1)
    assert error_lines(result.stderr) == [
        f"Error: {rel} is a run of kind 'quantum', which mlx does not know "
        "(known: tabular, lm, rl)."
    ]
    assert not (trained.workspace / "comparison.png").exists()


# ----------------------------------------------------------------------------- every kind


@dataclass
class Mixed:
    """A workspace with runs of every kind, made by the real engines through ``mlx``."""

    workspace: Path
    regression: Path
    classification: Path
    lm_short: Path  # 40 iterations, logged every 5, evaluated every 10
    lm_long: Path  # 160 iterations, logged every one, evaluated every 20: 168 records
    rl: Path  # 3 GRPO steps, evaluated at 0 and after every step


def _lm_runs(ws: Path) -> None:
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    config = deep_merge(
        TINY_LM,
        {
            "kind": "lm",
            "prepare": {"preparer": "text", "input": "corpus.txt"},
            "train": {"max_iters": 40, "checkpointing": {"interval": 40}},
        },
    )
    write_config(ws / "tiny.json", config)
    run_mlx(["prepare", "tiny", "--config", "tiny.json"], workspace=ws, check=0)
    run_mlx(["train", "tiny", "--config", "tiny.json"], workspace=ws, check=0)
    longer = ["train.max_iters=160", "train.eval_interval=20", "train.log_interval=1"]
    sets = [arg for item in longer for arg in ("--set", item)]
    run_mlx(["train", "tiny", "--config", "tiny.json", "--fresh", *sets], workspace=ws, check=0)


def _rl_run(ws: Path) -> None:
    model = ws.parent / "tiny_gpt2"
    build = "import sys, pathlib; from mlharness.rl.tiny_models import build_tiny_model as b; "
    build += "b(pathlib.Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", build, str(model)], check=True, timeout=TIMEOUT)
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(3)]
    (ws / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ws / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    config = {
        "kind": "rl",
        "name": "tiny_grpo",
        "trainer": {
            "num_training_steps": 3,
            "eval_every": 1,
            "eval_num_prompts": 4,
            "learning_rate": 1e-3,
            "ppo_batch_size": 2,
            "num_rollout_samples": 2,
            "seed": 7,
            "device": "cpu",
            "num_threads": 1,
        },
        "model": {"model_path": str(model)},
        "data": {
            "train_path": "prompts.jsonl",
            "val_path": "val.jsonl",
            "max_prompt_len": 8,
            "max_gen_len": 4,
        },
        "rewards": [
            {"name": "exact_match", "weight": 1.0},
            {"name": "response_length_penalty", "weight": 0.1, "config": {"max_words": 5}},
        ],
        "checkpointing": {"save_every": 3},
    }
    write_config(ws / "grpo.json", config)
    run_mlx(["train", "--config", "grpo.json"], workspace=ws, check=0)


@pytest.fixture(scope="module")
def mixed(trained_session: Trained, tmp_path_factory: pytest.TempPathFactory) -> Mixed:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    ws = make_workspace(tmp_path_factory.mktemp("mixed") / "ws")
    shutil.copytree(trained_session.workspace / "runs", ws / "runs")
    with ThreadPoolExecutor(max_workers=2) as pool:  # the lm and rl runs are independent
        for future in [pool.submit(_lm_runs, ws), pool.submit(_rl_run, ws)]:
            future.result()
    src = trained_session.workspace
    lm_short, lm_long = run_dirs(ws, "tiny")
    return Mixed(
        ws,
        ws / trained_session.regression_run.relative_to(src),
        ws / trained_session.classification_run.relative_to(src),
        lm_short,
        lm_long,
        single_run_dir(ws, "tiny_grpo"),
    )


def _rel(mixed: Mixed, run: Path) -> str:
    return run.relative_to(mixed.workspace).as_posix()


def _label(run: Path) -> str:
    return f"{run.parent.name}/{run.name}"


def _section(text: str, title: str) -> list[str]:
    """The lines of the ``## title`` section of a report."""
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0].splitlines()


def _headline(run: Path, key: str, goal: str, step_key: str) -> tuple[Any, Any]:
    """(best, final) of ``key`` computed here from the run's metrics.json, independently."""
    points = [
        (r[step_key], r[key])
        for r in read_json(run / "metrics" / "metrics.json")["metrics"]
        if isinstance(r.get(key), (int, float))
    ]
    pick = min if goal == "min" else max
    best_value = pick(v for _, v in points)
    best = next(p for p in points if p[1] == best_value)
    return best, points[-1]


def test_each_engine_logs_against_its_declared_step_key(mixed: Mixed) -> None:
    from mlharness.lm.config import LM_METRICS
    from mlharness.rl.config import RL_METRICS
    from mlharness.tabular.config import TABULAR_METRICS

    for runs, m in (
        ((mixed.regression, mixed.classification), TABULAR_METRICS),
        ((mixed.lm_short, mixed.lm_long), LM_METRICS),
        ((mixed.rl,), RL_METRICS),
    ):
        for run in runs:
            assert read_json(run / "config.json")["_run"]["kind"] == m.kind
            lines = (run / "metrics" / "metrics.ndjson").read_text().splitlines()
            assert lines and all(m.step_key in json.loads(line) for line in lines), run
            keys = {k for line in lines for k in json.loads(line)}
            assert m.primary.key in keys, run


def test_history_shows_each_kinds_metrics_in_its_own_table(mlx: Mlx, mixed: Mixed) -> None:
    result = run_mlx(["history", "--markdown", "h.md"], workspace=mixed.workspace, check=0)
    out = result.stdout
    assert "5 run(s)." in out
    assert (
        out.index("## tabular (2 run(s), step: epoch)")
        < out.index("## lm (2 run(s), step: iter)")
        < out.index("## rl (1 run(s), step: step)")
    )
    lm = _section(out, "lm (")
    assert lm[2] == (
        "| Experiment | Status | iter | val_loss | best val_loss | eval/train_loss "
        "| Run directory |"
    )
    rl = _section(out, "rl (")
    assert rl[2] == (
        "| Experiment | Status | step | val_reward | best val_reward | reward | Run directory |"
    )
    # Every GRPO cell is filled, with the values of the run's own history.
    [row] = [line for line in rl if line.startswith("| tiny_grpo |")]
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    best, final = _headline(mixed.rl, "val_reward", "max", "step")
    _, reward = _headline(mixed.rl, "reward", "max", "step")
    assert cells[:-1] == [
        "tiny_grpo",
        "completed",
        "3",
        format_value(final[1]),
        format_value(best[1]),
        format_value(reward[1]),
    ]
    assert cells[-1] == f"`{_rel(mixed, mixed.rl).removeprefix('runs/')}`"
    lm_rows = [line for line in lm if line.startswith("| tiny |")]
    assert [r.split(" | ")[2] for r in lm_rows] == ["40", "160"]
    assert all("|  |" not in r for r in lm_rows)
    written = (mixed.workspace / "h.md").read_text()
    assert written == out.split("Written: h.md")[0].rstrip("\n") + "\n"
    (mixed.workspace / "h.md").unlink()


def test_compare_mixed_kinds_keeps_each_kind_apart(mixed: Mixed) -> None:
    runs = [mixed.lm_short, mixed.lm_long, mixed.rl, mixed.regression]
    args = ["compare", *(_rel(mixed, r) for r in runs), "-o", "cmp.png", "--markdown", "cmp.md"]
    out = run_mlx(args, workspace=mixed.workspace, check=0).stdout
    assert (
        "Runs of 3 kinds: lm (2), rl (1), tabular (1). Each kind has its own table and row of "
        "panels: their steps and metrics differ, so they are not overlaid."
    ) in out
    lm = _section(out, "lm (2 run(s), step: iter)")
    a, b = _label(mixed.lm_short), _label(mixed.lm_long)
    assert f"| Metric | {a} | {b} |" in lm
    assert "| iter | 40 | 160 |" in lm
    for key in ("val_loss", "eval/train_loss"):
        (best_a, final_a), (best_b, final_b) = (
            _headline(run, key, "min", "iter") for run in (mixed.lm_short, mixed.lm_long)
        )
        assert f"| {key} final | {format_value(final_a[1])} | {format_value(final_b[1])} |" in lm
        best_row = next(line for line in lm if line.startswith(f"| {key} best (min) |"))
        assert best_row.count("**") == 2  # the better run is marked
        plain = best_row.replace("**", "")
        assert f"| {format_value(best_a[1])} (iter {best_a[0]}) |" in plain
        assert f"| {format_value(best_b[1])} (iter {best_b[0]}) |" in plain
    # Only the config values that differ: the three that were set, and nothing else.
    diff = lm[lm.index("### Config values that differ") :]
    keys = [line.split(" | ")[0].lstrip("| ") for line in diff if line.startswith("| train.")]
    assert keys == ["train.max_iters", "train.eval_interval", "train.log_interval"]
    assert "| train.eval_interval | 10 | 20 |" in diff
    assert not any(line.startswith("| model.") for line in diff)
    rl = _section(out, "rl (1 run(s), step: step)")
    assert any(line.startswith("| val_reward best (max) | ") for line in rl)
    assert "One run of this kind: there is nothing to compare its config with." in rl
    tab = _section(out, "tabular (1 run(s), step: epoch)")
    assert any(line.startswith("| val_r2 final | ") for line in tab)
    assert not any("val_accuracy" in line for line in tab)  # a regressor has none
    assert (mixed.workspace / "cmp.png").read_bytes()[:8] == PNG


def test_history_and_compare_of_lm_and_rl_runs_never_import_torch(mixed: Mixed) -> None:
    from test_cli_basics import import_check

    result, report = import_check(mixed.workspace, "history")
    assert result.returncode == 0, result.stderr
    assert report["attempted"] == [] and "matplotlib" not in report["loaded"]
    runs = [_rel(mixed, r) for r in (mixed.lm_short, mixed.rl, mixed.classification)]
    result, report = import_check(mixed.workspace, "compare", *runs, "-o", "no_torch.png")
    assert result.returncode == 0, result.stderr
    assert report["attempted"] == []
    (mixed.workspace / "no_torch.png").unlink()


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures saved from now on (each is also written as usual)."""
    from matplotlib.figure import Figure

    figures: list[Any] = []
    save = Figure.savefig

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figures


def _panels(figure: Any) -> dict[str, Any]:
    return {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}


def test_compare_draws_each_kind_against_its_step(
    mixed: Mixed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlharness.cli import main

    monkeypatch.chdir(mixed.workspace)
    monkeypatch.setenv("MLX_WORKSPACE", str(mixed.workspace))
    figures = _drawn(monkeypatch)
    runs = [mixed.lm_short, mixed.lm_long, mixed.rl, mixed.regression, mixed.classification]
    assert main(["compare", *(str(r) for r in runs), "-o", str(mixed.workspace / "c.png")]) == 0
    assert "Curves: " in capsys.readouterr().out
    [figure] = figures
    panels = _panels(figure)
    assert sorted(panels) == [
        "lm: eval/train_loss",
        "lm: val_loss",
        "rl: reward",
        "rl: val_reward",
        "tabular: loss",
        "tabular: val_accuracy",
        "tabular: val_loss",
        "tabular: val_r2",
    ]
    members = {
        "lm": {_label(mixed.lm_short), _label(mixed.lm_long)},
        "rl": {_label(mixed.rl)},
        "tabular": {_label(mixed.regression), _label(mixed.classification)},
    }
    steps = {"lm": "iter", "rl": "step", "tabular": "epoch"}
    for title, ax in panels.items():
        kind = title.split(":")[0]
        assert ax.get_xlabel() == steps[kind], title
        assert {line.get_label() for line in ax.get_lines()} <= members[kind], title
    # Runs evaluated every 10 and every 20 iterations line up on the iteration axis.
    lines = {line.get_label(): list(line.get_xdata()) for line in panels["lm: val_loss"].lines}
    assert lines[_label(mixed.lm_short)] == [10, 20, 30, 40]
    assert lines[_label(mixed.lm_long)] == list(range(20, 161, 20))
    rl_x = {line.get_label(): list(line.get_xdata()) for line in panels["rl: val_reward"].lines}
    assert rl_x == {_label(mixed.rl): [0, 1, 2, 3]}


def test_metrics_md_of_real_runs_shows_every_evaluation(mixed: Mixed) -> None:
    md = (mixed.lm_long / "metrics" / "metrics.md").read_text()
    evals = _section(md, "Evaluations (8 records)")
    rows = [line.strip("|").split(" | ") for line in evals if line.startswith("| ")]
    assert rows[0][:2] == [" iter", "val_loss"]
    assert [int(r[0]) for r in rows[1:]] == list(range(20, 161, 20))
    assert all(r[1].strip() for r in rows[1:])  # every val_loss
    log = _section(md, "Training log (160 records)")
    assert (
        "81 of 160 records shown: one in every 2, and the last. The full history is in "
        "metrics.json and metrics.ndjson beside this file."
    ) in log
    # The GRPO step records are 19 columns wide: split, each table led by the step.
    md = (mixed.rl / "metrics" / "metrics.md").read_text()
    assert "## Evaluations (4 records)" in md
    headers = [
        line for line in _section(md, "Training log (3 records)") if line.startswith("| step |")
    ]
    assert len(headers) >= 3
    assert all(line.count(" | ") + 1 <= MAX_COLUMNS for line in headers)


def test_tabular_loss_spanning_decades_is_drawn_on_a_log_axis(
    mlx: Mlx, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlharness.runs.compare import group_by_kind, panel_rows
    from mlharness.runs.plots import plot_comparison, plot_curves
    from mlharness.runs.rundata import load_run
    from mlharness.tabular.config import TABULAR_METRICS

    exact = regression(
        name="exact",
        dataset={"params": {"noise_std": 0.001}},
        training={"epochs": 10, "learning_rate": 0.1},
    )
    write_config(ws / "exact.json", exact)
    write_config(
        ws / "noisy.json", regression(name="noisy", dataset={"params": {"noise_std": 1.0}})
    )
    mlx("run-experiment", "--config", "exact.json", check=0)
    mlx("run-experiment", "--config", "noisy.json", check=0)
    decades, flat = single_run_dir(ws, "exact"), single_run_dir(ws, "noisy")
    losses = [r["loss"] for r in read_json(decades / "metrics" / "metrics.json")["metrics"]]
    assert max(losses) / min(losses) > 100
    assert (decades / "metrics" / "curves.png").read_bytes()[:8] == PNG

    figures = _drawn(monkeypatch)
    for run in (decades, flat):  # curves.png, drawn again from the run's own history
        plot_curves(read_json(run / "metrics" / "metrics.json")["metrics"], ws / "c.png")
    scales = [{t: ax.get_yscale() for t, ax in _panels(f).items()} for f in figures]
    assert scales[0]["loss"] == "log" and scales[0]["r2"] == "linear"
    assert scales[1]["loss"] == "linear"

    described = {"tabular": TABULAR_METRICS}
    both = group_by_kind([load_run(decades, "a/exact"), load_run(flat, "b/noisy")], described)
    plot_comparison(panel_rows(both, described), ws / "cmp.png")
    compare_scales = {t: ax.get_yscale() for t, ax in _panels(figures[-1]).items()}
    assert compare_scales["tabular: loss"] == "log"
    assert compare_scales["tabular: val_r2"] == "linear"
